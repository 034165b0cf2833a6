"""What the RetinaNet-style heads share: prior-probability bias initialisation
and a positive count that is averaged across distributed ranks."""
import numbers
from typing import List, Union

import torch
from mmdet.utils import InstanceList, OptInstanceList, reduce_mean
from mmengine.model import bias_init_with_prob
from torch import Tensor


# The classification loss every RetinaNet-style head defaults to (Lin et al.'s
# gamma 2, alpha 0.25). The heads only read it: MODELS.build copies configs.
FOCAL_LOSS = dict(type='FusedFocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                  loss_weight=1.0)


def check_prior_prob(prior_prob: float) -> float:
    """Checks ``prior_prob`` (the foreground probability the classifier starts at).

    Args:
        prior_prob (float): A probability strictly between 0 and 1.

    Returns:
        float: ``prior_prob`` as a float.
    """
    if isinstance(prior_prob, bool) or not isinstance(prior_prob, numbers.Real):
        raise TypeError(f'prior_prob must be a float in (0, 1), got {prior_prob!r}')
    if not 0.0 < float(prior_prob) < 1.0:
        raise ValueError(f'prior_prob must be a float in (0, 1), got {prior_prob!r}')
    return float(prior_prob)


def init_prior_bias(bias: Tensor, prior_prob: float) -> None:
    """Fills ``bias`` with -log((1 - pi) / pi), so that every sigmoid output
    starts at probability ``prior_prob``.

    Without it the many easy negatives dominate the first iterations of a
    sigmoid/focal classifier and training can diverge (Lin et al., sec. 4.1).

    Args:
        bias (Tensor): The bias (or a view of the part of it) to fill.
        prior_prob (float): Foreground probability at initialisation.
    """
    with torch.no_grad():
        bias.fill_(bias_init_with_prob(prior_prob))


def all_reduced_avg_factor(avg_factor: Union[int, float, Tensor],
                           device: Union[str, torch.device]) -> Tensor:
    """The number of positives averaged over all ranks, at least 1.

    Each rank would otherwise divide its loss by its own positive count, which
    weights an image with few objects as much as a crowded one (mmdet's
    RetinaHead does this; ATSS and FCOS already reduce the count). The result
    stays a tensor: no host-device synchronisation.

    Args:
        avg_factor (int | float | Tensor): This rank's positive count.
        device (str | torch.device): Device of the losses.

    Returns:
        Tensor: 0-d float32 tensor, the mean over ranks, clamped to >= 1.
    """
    count = torch.as_tensor(avg_factor, dtype=torch.float32, device=device)
    return reduce_mean(count).clamp(min=1.0)


class AllReducedAvgFactorMixin:
    """For subclasses of mmdet's ``AnchorHead``: ``get_targets`` returns the
    positive count averaged over ranks as ``avg_factor``.

    ``AnchorHead.loss_by_feat`` passes that ``avg_factor`` to both the
    classification and the box loss, so overriding this one method is enough.
    """

    def get_targets(self,
                    anchor_list: List[List[Tensor]],
                    valid_flag_list: List[List[Tensor]],
                    batch_gt_instances: InstanceList,
                    batch_img_metas: List[dict],
                    batch_gt_instances_ignore: OptInstanceList = None,
                    unmap_outputs: bool = True,
                    return_sampling_results: bool = False) -> tuple:
        """``AnchorHead.get_targets``, with ``avg_factor`` (its fifth result)
        replaced by :func:`all_reduced_avg_factor` of it."""
        results = super().get_targets(  # type: ignore[misc]
            anchor_list,
            valid_flag_list,
            batch_gt_instances,
            batch_img_metas,
            batch_gt_instances_ignore=batch_gt_instances_ignore,
            unmap_outputs=unmap_outputs,
            return_sampling_results=return_sampling_results)
        avg_factor = all_reduced_avg_factor(results[4], anchor_list[0][0].device)
        return results[:4] + (avg_factor, ) + tuple(results[5:])


__all__ = [
    'check_prior_prob', 'init_prior_bias', 'all_reduced_avg_factor', 'AllReducedAvgFactorMixin'
]

"""``FocalYOLOV3Head``: YOLOv3's head trained RetinaNet-style (focal loss for
objectness and classes, losses normalised by the all-reduced positive count)."""
from typing import Optional, Sequence, Tuple

from mmdet.models.dense_heads import YOLOV3Head
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, InstanceList
from torch import Tensor

from .utils import FOCAL_LOSS, all_reduced_avg_factor, check_prior_prob, init_prior_bias


@MODELS.register_module()
class FocalYOLOV3Head(YOLOV3Head):
    """YOLOv3's head (Redmon and Farhadi) with RetinaNet's training recipe.

    YOLOv3 trains objectness and classes with binary cross-entropy and, in
    mmdet's configs, sums every loss over the batch. This head keeps YOLOv3's
    layers, grid assigner and box coder, and instead:

    - computes objectness with ``loss_conf`` (the focal loss by default) over
      every anchor YOLOv3 trains it on (positives and negatives; anchors the
      assigner ignores keep weight 0), and classes with ``loss_cls`` (focal by
      default) on the positive anchors, as YOLOv3 does;
    - divides all four losses by the number of positive anchors averaged over
      distributed ranks, so each of them must use ``reduction='mean'``;
    - starts the objectness and class biases at -log((1 - pi) / pi) for
      ``prior_prob`` pi (YOLOv3 uses a per-level objectness prior).

    Args:
        num_classes (int): Number of object classes.
        in_channels (Sequence[int]): Number of input channels per scale.
        prior_prob (float): Probability the objectness and class outputs start
            at, in (0, 1). Defaults to 0.01.
        loss_cls (:obj:`ConfigDict` or dict): Config of the classification
            loss. Defaults to ``dict(type='FusedFocalLoss', use_sigmoid=True,
            gamma=2.0, alpha=0.25, loss_weight=1.0)``.
        loss_conf (:obj:`ConfigDict` or dict): Config of the objectness loss.
            Defaults to the same focal loss as ``loss_cls``.
        loss_xy (:obj:`ConfigDict` or dict): Config of the xy offset loss.
            Defaults to ``dict(type='CrossEntropyLoss', use_sigmoid=True,
            loss_weight=1.0)``.
        loss_wh (:obj:`ConfigDict` or dict): Config of the wh loss. Defaults
            to ``dict(type='MSELoss', loss_weight=1.0)``.
        **kwargs: The other arguments of ``YOLOV3Head``.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: Sequence[int],
                 prior_prob: float = 0.01,
                 loss_cls: ConfigType = FOCAL_LOSS,
                 loss_conf: ConfigType = FOCAL_LOSS,
                 loss_xy: ConfigType = dict(
                     type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                 loss_wh: ConfigType = dict(type='MSELoss', loss_weight=1.0),
                 **kwargs) -> None:
        self.prior_prob = check_prior_prob(prior_prob)
        losses = dict(loss_cls=loss_cls, loss_conf=loss_conf, loss_xy=loss_xy, loss_wh=loss_wh)
        for name, cfg in losses.items():
            # avg_factor is only allowed with 'mean' (mmdet raises for 'sum' at the
            # first iteration); mmdet's YOLOv3 configs use 'sum', so say it at build.
            if cfg.get('reduction', 'mean') != 'mean':
                raise ValueError(f'FocalYOLOV3Head divides every loss by the number of '
                                 f"positives: {name} must have reduction='mean', got "
                                 f'{cfg["reduction"]!r}')
        super().__init__(num_classes, in_channels, **losses, **kwargs)
        # Set by get_targets, read by loss_by_feat_single (see get_targets).
        self._avg_factor: Optional[Tensor] = None

    def init_weights(self) -> None:
        """YOLOv3's initialisation, then the objectness and class biases from
        ``prior_prob``."""
        super().init_weights()
        for conv_pred in self.convs_pred:
            bias = conv_pred.bias.view(self.num_base_priors, self.num_attrib)
            init_prior_bias(bias[:, 4:], self.prior_prob)  # objectness (4), classes (5:)

    def get_targets(self, anchor_list: Sequence[Sequence[Tensor]],
                    responsible_flag_list: Sequence[Sequence[Tensor]],
                    batch_gt_instances: InstanceList) -> Tuple[list, list]:
        """YOLOv3's target maps; also records the all-reduced positive count.

        ``YOLOV3Head.loss_by_feat`` unpacks exactly two results from here and
        calls ``loss_by_feat_single`` per level right after, so the count (a
        sum over all levels and images) is handed over on ``self``, as mmdet
        hands over ``_raw_positive_infos``.
        """
        target_maps_list, neg_maps_list = super().get_targets(anchor_list, responsible_flag_list,
                                                              batch_gt_instances)
        # Attribute 4 of a target map is the objectness target: 1 at positives.
        num_pos = sum(target_map[..., 4].sum() for target_map in target_maps_list)
        self._avg_factor = all_reduced_avg_factor(num_pos, target_maps_list[0].device)
        return target_maps_list, neg_maps_list

    def loss_by_feat_single(self, pred_map: Tensor, target_map: Tensor,
                            neg_map: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """YOLOv3's losses of one level, each divided by the positive count.

        Args:
            pred_map (Tensor): Raw predictions of one level, (N, A * (5 + C), H, W).
            target_map (Tensor): Targets of that level, (N, H * W * A, 5 + C).
            neg_map (Tensor): Negative flags of that level, (N, H * W * A).

        Returns:
            tuple[Tensor]: loss_cls, loss_conf, loss_xy and loss_wh.
        """
        if self._avg_factor is None:
            raise RuntimeError('FocalYOLOV3Head.loss_by_feat_single needs the positive count '
                               'that get_targets records; call loss_by_feat')
        avg_factor = self._avg_factor
        num_imgs = len(pred_map)
        pred_map = pred_map.permute(0, 2, 3, 1).reshape(num_imgs, -1, self.num_attrib)
        pos_mask = target_map[..., 4]
        # An anchor is trained on objectness if positive or negative, not if ignored.
        pos_and_neg_mask = (neg_map.float() + pos_mask).clamp(max=1.)
        pos_mask = pos_mask.unsqueeze(dim=-1)

        loss_cls = self.loss_cls(
            pred_map[..., 5:], target_map[..., 5:], weight=pos_mask, avg_factor=avg_factor)
        loss_conf = self.loss_conf(
            pred_map[..., 4], target_map[..., 4], weight=pos_and_neg_mask, avg_factor=avg_factor)
        loss_xy = self.loss_xy(
            pred_map[..., :2], target_map[..., :2], weight=pos_mask, avg_factor=avg_factor)
        loss_wh = self.loss_wh(
            pred_map[..., 2:4], target_map[..., 2:4], weight=pos_mask, avg_factor=avg_factor)
        return loss_cls, loss_conf, loss_xy, loss_wh

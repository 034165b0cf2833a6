"""``MiningSSDHead``: mmdet's ``SSDHead`` as it is (softmax cross-entropy with
hard-negative mining), made able to predict under mmdet 3.3."""
from mmdet.models.dense_heads import SSDHead
from mmdet.registry import MODELS


@MODELS.register_module()
class MiningSSDHead(SSDHead):
    """mmdet's ``SSDHead``, unchanged in training, that can also predict.

    ``SSDHead`` trains with softmax cross-entropy over ``num_classes + 1``
    channels and keeps ``train_cfg.neg_pos_ratio`` negatives per positive,
    the highest-loss ones (hard-negative mining). In mmdet 3.3.0 it cannot
    predict: ``BaseDenseHead._predict_by_feat_single`` reads
    ``self.loss_cls``, which ``SSDHead`` never sets (open-mmlab/mmdetection
    issues 11063, 11305 and 11780), so testing or validating a stock SSD
    config fails with ``AttributeError``. This head sets ``loss_cls`` to None,
    which sends prediction down SSDHead's own softmax path; everything else,
    the losses included, is ``SSDHead``'s.

    It is the hard-negative-mining baseline that ``FocalSSDHead`` (the focal
    loss over all anchors) is compared with; ``tools/focalize.py`` converts
    it like ``SSDHead``.

    Args:
        *args: The arguments of ``SSDHead``.
        **kwargs: The keyword arguments of ``SSDHead``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # SSDHead computes its softmax loss inline and has no loss module.
        self.loss_cls = None

"""``FocalSSDHead``: SSD's head trained RetinaNet-style (sigmoid focal loss over
all anchors instead of softmax cross-entropy with hard-negative mining)."""
import logging
from typing import Sequence

from mmdet.models.dense_heads import AnchorHead, SSDHead
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptConfigType
from mmengine.logging import print_log

from .utils import FOCAL_LOSS, AllReducedAvgFactorMixin, check_prior_prob, init_prior_bias


@MODELS.register_module()
class FocalSSDHead(AllReducedAvgFactorMixin, SSDHead):
    """SSD's head (Liu et al.) with RetinaNet's classification (Lin et al.).

    mmdet's ``SSDHead`` hard-codes softmax cross-entropy over ``num_classes +
    1`` channels and keeps ``neg_pos_ratio`` negatives per positive (hard-
    negative mining). This head keeps SSD's layers, anchors and box coder, and
    instead:

    - classifies with sigmoids, ``num_classes`` channels and no background
      channel (``use_sigmoid_cls`` is True, so prediction takes sigmoid scores);
    - applies ``loss_cls`` (the focal loss by default) to every anchor, which
      is what makes hard-negative mining unnecessary; ``neg_pos_ratio`` in
      ``train_cfg`` is ignored (with a warning, so SSD configs still build);
    - normalises both losses by the positive count averaged across ranks;
    - initialises the classification biases from ``prior_prob``.

    The losses are computed by ``AnchorHead``'s ``loss_by_feat`` (level by
    level, with ``self.loss_cls`` and ``self.loss_bbox``), not by SSDHead's.

    Args:
        num_classes (int): Number of categories excluding the background.
            Defaults to 80.
        in_channels (Sequence[int]): Number of channels of each input feature
            map. Defaults to (512, 1024, 512, 256, 256, 256).
        prior_prob (float): Foreground probability every classifier starts at,
            in (0, 1). Defaults to 0.01.
        loss_cls (:obj:`ConfigDict` or dict): Config of the classification
            loss; must be a sigmoid loss (``use_sigmoid`` True). Defaults to
            ``dict(type='FusedFocalLoss', use_sigmoid=True, gamma=2.0,
            alpha=0.25, loss_weight=1.0)``.
        loss_bbox (:obj:`ConfigDict` or dict, optional): Config of the box
            regression loss. Defaults to None: SSD's smooth L1 loss, with
            ``beta = train_cfg['smoothl1_beta']`` (1.0 if absent).
        train_cfg (:obj:`ConfigDict` or dict, optional): Training config, as
            for SSDHead (assigner, optional sampler, ``allowed_border``,
            ``pos_weight``). Defaults to None.
        **kwargs: The other arguments of ``SSDHead``.
    """

    def __init__(self,
                 num_classes: int = 80,
                 in_channels: Sequence[int] = (512, 1024, 512, 256, 256, 256),
                 prior_prob: float = 0.01,
                 loss_cls: ConfigType = FOCAL_LOSS,
                 loss_bbox: OptConfigType = None,
                 train_cfg: OptConfigType = None,
                 **kwargs) -> None:
        self.prior_prob = check_prior_prob(prior_prob)
        # FusedFocalLoss and FocalLoss default to sigmoid, so a missing key means True.
        if not loss_cls.get('use_sigmoid', True):
            raise ValueError('FocalSSDHead classifies with sigmoids (no background channel): '
                             'loss_cls must have use_sigmoid=True, got use_sigmoid='
                             f'{loss_cls["use_sigmoid"]!r}')
        if train_cfg is not None and 'neg_pos_ratio' in train_cfg:
            print_log(
                'FocalSSDHead ignores train_cfg.neg_pos_ratio: the focal loss covers all '
                'anchors, without hard-negative mining',
                logger='current',
                level=logging.WARNING)
        if loss_bbox is None:
            beta = train_cfg.get('smoothl1_beta', 1.0) if train_cfg else 1.0
            loss_bbox = dict(type='SmoothL1Loss', beta=beta, loss_weight=1.0)
        super().__init__(
            num_classes=num_classes, in_channels=in_channels, train_cfg=train_cfg, **kwargs)
        self.use_sigmoid_cls = True
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)

    def _init_layers(self) -> None:
        """Builds SSD's layers with ``num_classes`` classification channels per
        anchor: SSDHead.__init__ sets a background channel just before calling
        this, and a sigmoid classifier has none."""
        self.cls_out_channels = self.num_classes
        super()._init_layers()

    def init_weights(self) -> None:
        """Initialises the weights as ``init_cfg`` says, then the bias of each
        level's classification conv from ``prior_prob``."""
        super().init_weights()
        for cls_conv in self.cls_convs:
            init_prior_bias(cls_conv[-1].bias, self.prior_prob)

    # SSDHead's versions hard-code softmax cross-entropy and hard-negative mining;
    # AnchorHead's apply self.loss_cls / self.loss_bbox to all anchors, level by level.
    loss_by_feat = AnchorHead.loss_by_feat
    loss_by_feat_single = AnchorHead.loss_by_feat_single

"""``FocalRetinaHead``: mmdet's RetinaHead with the fused focal loss, a
configurable prior-probability bias and a positive count averaged over ranks."""
from mmdet.models.dense_heads import RetinaHead
from mmdet.registry import MODELS
from mmdet.utils import ConfigType

from .utils import FOCAL_LOSS, AllReducedAvgFactorMixin, check_prior_prob, init_prior_bias


@MODELS.register_module()
class FocalRetinaHead(AllReducedAvgFactorMixin, RetinaHead):
    """RetinaNet's head (Lin et al.) computing its classification loss with
    :class:`~focal_plugin.models.losses.FusedFocalLoss` by default.

    Differences from mmdet's ``RetinaHead``:

    - ``prior_prob`` sets the classification bias to -log((1 - pi) / pi) in
      :meth:`init_weights`, whatever ``init_cfg`` says about that layer;
    - the positive count used as ``avg_factor`` by the classification and the
      box loss is averaged across distributed ranks (RetinaHead normalises
      per GPU).

    Args:
        num_classes (int): Number of categories excluding the background.
        in_channels (int): Number of channels in the input feature map.
        prior_prob (float): Foreground probability every anchor's classifier
            starts at, in (0, 1); used with a sigmoid classifier. Defaults
            to 0.01.
        loss_cls (:obj:`ConfigDict` or dict): Config of the classification
            loss. Defaults to ``dict(type='FusedFocalLoss', use_sigmoid=True,
            gamma=2.0, alpha=0.25, loss_weight=1.0)``.
        **kwargs: The other arguments of ``RetinaHead`` and ``AnchorHead``.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 prior_prob: float = 0.01,
                 loss_cls: ConfigType = FOCAL_LOSS,
                 **kwargs) -> None:
        self.prior_prob = check_prior_prob(prior_prob)
        super().__init__(num_classes, in_channels, loss_cls=loss_cls, **kwargs)

    def init_weights(self) -> None:
        """Initialises the weights as ``init_cfg`` says, then the
        classification bias from ``prior_prob`` (sigmoid classifiers only: a
        softmax over equal biases starts uniform whatever their value)."""
        super().init_weights()
        if self.use_sigmoid_cls:
            init_prior_bias(self.retina_cls.bias, self.prior_prob)

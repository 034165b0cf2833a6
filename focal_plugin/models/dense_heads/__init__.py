"""RetinaNet-style dense heads, registered in mmdet's ``MODELS`` (needs mmdet)."""
from .focal_retina_head import FocalRetinaHead
from .focal_ssd_head import FocalSSDHead
from .focal_yolov3_head import FocalYOLOV3Head
from .mining_ssd_head import MiningSSDHead

__all__ = ['FocalRetinaHead', 'FocalSSDHead', 'FocalYOLOV3Head', 'MiningSSDHead']

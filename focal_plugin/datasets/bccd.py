"""BCCD: real blood-cell microscope images in Pascal VOC layout.

364 JPEG images (640 x 480) with boxes of three strongly imbalanced classes
(RBC 4155, WBC 372, Platelets 361). The project keeps a read-only copy in
``<repo>/../shared/datasets/bccd``; ``$FOCAL_PLUGIN_BCCD_ROOT`` points
elsewhere. Two of its annotations hold a box of zero width and height; they
are dropped here with a warning, never passed to a loss.
"""
import logging
import os
import os.path as osp
from typing import List, Optional, Union

from mmdet.datasets import XMLDataset
from mmdet.registry import DATASETS
from mmengine.logging import print_log

#: Environment variable naming the BCCD folder.
BCCD_ENV = 'FOCAL_PLUGIN_BCCD_ROOT'
BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')


def default_bccd_root() -> str:
    """The BCCD folder: ``$FOCAL_PLUGIN_BCCD_ROOT``, else ``<repo>/../shared/datasets/bccd``.

    The repository root is the folder holding the ``focal_plugin`` package
    (an editable install or a checkout), so the default follows the clone
    wherever it lives, as long as ``shared/`` sits beside it.

    Returns:
        str: Absolute path; it may not exist (the dataset reports that).
    """
    env = os.environ.get(BCCD_ENV)
    if env:
        return osp.abspath(osp.expanduser(env))
    repo_root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    return osp.normpath(osp.join(repo_root, '..', 'shared', 'datasets', 'bccd'))


@DATASETS.register_module()
class BCCDDataset(XMLDataset):
    """The BCCD blood-cell detection dataset.

    mmdet's :class:`~mmdet.datasets.XMLDataset` reads the VOC files (its
    coordinates are 1-based, and it subtracts 1 from each); this class drops
    every box whose width or height is not positive after that, logging a
    warning with the XML file and the box. Evaluate it with
    ``dict(type='VOCMetric', metric='mAP', eval_mode='area')``.

    Args:
        data_root (str, optional): BCCD folder; None means
            :func:`default_bccd_root`. Defaults to None.
        ann_file (str): Image list relative to ``data_root``.
            Defaults to 'ImageSets/Main/train.txt'.
        data_prefix (dict, optional): Defaults to ``dict(sub_data_root='')``:
            ``Annotations/`` and ``JPEGImages/`` lie in ``data_root`` itself.
        **kwargs: Passed to :class:`mmdet.datasets.XMLDataset`.

    Raises:
        FileNotFoundError: If ``data_root`` or ``ann_file`` does not exist.
    """

    METAINFO = {
        'classes': BCCD_CLASSES,
        'palette': [(220, 20, 60), (106, 0, 228), (0, 182, 199)],
    }

    def __init__(self,
                 data_root: Optional[str] = None,
                 ann_file: str = 'ImageSets/Main/train.txt',
                 data_prefix: Optional[dict] = None,
                 **kwargs) -> None:
        data_root = osp.abspath(osp.expanduser(data_root)) if data_root else default_bccd_root()
        if not osp.isdir(data_root):
            raise FileNotFoundError(
                f'data_root {data_root!r} of BCCDDataset does not exist; pass data_root or set '
                f'${BCCD_ENV} to the BCCD folder (holding Annotations/, JPEGImages/, '
                'ImageSets/Main/)')
        ann_path = ann_file if osp.isabs(ann_file) else osp.join(data_root, ann_file)
        if not osp.isfile(ann_path):
            raise FileNotFoundError(f'ann_file {ann_path!r} of BCCDDataset does not exist')
        self.num_dropped_boxes = 0
        super().__init__(
            data_root=data_root,
            ann_file=ann_file,
            data_prefix=data_prefix if data_prefix is not None else dict(sub_data_root=''),
            **kwargs)

    def parse_data_info(self, img_info: dict) -> Union[dict, List[dict]]:
        """Parses one image's XML file, without degenerate boxes.

        Args:
            img_info (dict): ``img_id``, ``file_name`` and ``xml_path``.

        Returns:
            dict: mmdet's data info; every box has positive width and height.
        """
        data_info = super().parse_data_info(img_info)
        kept = []
        for index, instance in enumerate(data_info['instances']):
            x1, y1, x2, y2 = instance['bbox']
            if x2 > x1 and y2 > y1:
                kept.append(instance)
                continue
            # Checked on the parsed box: VOC's "+1" width convention (used by
            # VOCMetric) would otherwise count a zero-size box as 1 pixel.
            self.num_dropped_boxes += 1
            name = self._metainfo['classes'][instance['bbox_label']]
            print_log(
                f'BCCDDataset: dropped {name} box #{index} of {data_info["xml_path"]} '
                f'(xmin={x1 + 1}, ymin={y1 + 1}, xmax={x2 + 1}, ymax={y2 + 1} in the file): '
                f'width {x2 - x1} and height {y2 - y1} must be positive',
                logger='current',
                level=logging.WARNING)
        data_info['instances'] = kept
        return data_info

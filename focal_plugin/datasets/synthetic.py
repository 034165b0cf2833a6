"""A class-imbalanced detection dataset of filled shapes, generated locally.

``prepare_synthetic_dataset`` draws circles, squares and triangles (8:2:1 by
default) of varied sizes and colours on textured backgrounds (gradients,
stripes, blotches, with pixel noise), several per image and none in some
images, and writes them as PNG files plus COCO-style annotation files::

    <data_root>/
        manifest.json                      parameters and version
        annotations/instances_train.json
        annotations/instances_val.json
        train/00000.png ...
        val/00000.png ...

Generation is deterministic (seeded numpy, integer arithmetic for every
random draw that reaches a pixel): the same parameters give the same bytes on
every run of a given installation. The folder is reused when its manifest
matches, and built in a temporary folder renamed into place when complete.
``SyntheticShapesDataset`` calls it on construction, so configs need no
separate preparation step.
"""
import json
import os
import os.path as osp
from hashlib import sha256
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from .cache import default_cache_dir, prepare_dataset, read_manifest

#: Dataset name, the first part of its default cache folder name.
SYNTHETIC_NAME = 'synthetic_shapes'
#: Version of the generator's output; bump it whenever the bytes change.
SYNTHETIC_VERSION = 1
#: Class names, most frequent first.
SYNTHETIC_CLASSES = ('circle', 'square', 'triangle')
#: Generation parameters of the default dataset.
DEFAULT_PARAMS: Dict[str, object] = dict(
    num_train=1000,
    num_val=200,
    img_size=(160, 160),
    class_ratio=(8, 2, 1),
    max_objects=6,
    empty_ratio=0.1,
    min_size=14,
    max_size=52,
    seed=0)
SPLITS = ('train', 'val')

# An object's colour differs from the mean background under it by at least
# this (Euclidean distance in RGB): the task is about shapes, not about
# finding objects that blend in.
_MIN_CONTRAST = 90.0
# Uniform pixel noise amplitude (integers, so identical on every platform).
_NOISE = 12
# Free pixels kept between objects, so that boxes do not overlap.
_MARGIN = 2


def check_params(num_train: int = DEFAULT_PARAMS['num_train'],
                 num_val: int = DEFAULT_PARAMS['num_val'],
                 img_size: Sequence[int] = DEFAULT_PARAMS['img_size'],
                 class_ratio: Sequence[float] = DEFAULT_PARAMS['class_ratio'],
                 max_objects: int = DEFAULT_PARAMS['max_objects'],
                 empty_ratio: float = DEFAULT_PARAMS['empty_ratio'],
                 min_size: int = DEFAULT_PARAMS['min_size'],
                 max_size: int = DEFAULT_PARAMS['max_size'],
                 seed: int = DEFAULT_PARAMS['seed']) -> dict:
    """Validates generation parameters and returns them in canonical form.

    Args:
        num_train (int): Images in the train split. Defaults to 1000.
        num_val (int): Images in the val split. Defaults to 200.
        img_size (Sequence[int]): Image (width, height), each >= 32.
            Defaults to (160, 160).
        class_ratio (Sequence[float]): Relative frequency of circle, square
            and triangle objects, each > 0. Defaults to (8, 2, 1).
        max_objects (int): Most objects in one image (an image that is not
            empty holds 1 to ``max_objects``). Defaults to 6.
        empty_ratio (float): Probability that an image holds no object, in
            [0, 1). Defaults to 0.1.
        min_size (int): Smallest object extent in pixels, >= 6.
            Defaults to 14.
        max_size (int): Largest object extent in pixels, at most half the
            shorter image side. Defaults to 52.
        seed (int): Seed of the generator, >= 0. Defaults to 0.

    Returns:
        dict: The parameters, with tuples as lists (as in the manifest).

    Raises:
        TypeError, ValueError: Naming the argument at fault.
    """

    def _int(name, value, low):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f'{name} must be an int, got {type(value).__name__}')
        if value < low:
            raise ValueError(f'{name} must be >= {low}, got {value}')
        return int(value)

    num_train = _int('num_train', num_train, 1)
    num_val = _int('num_val', num_val, 1)
    if not isinstance(img_size, Sequence) or len(img_size) != 2:
        raise ValueError(f'img_size must be a (width, height) pair, got {img_size!r}')
    img_size = [_int('img_size[0]', img_size[0], 32), _int('img_size[1]', img_size[1], 32)]
    if (not isinstance(class_ratio, Sequence) or len(class_ratio) != len(SYNTHETIC_CLASSES)
            or not all(isinstance(r, (int, float)) and r > 0 for r in class_ratio)):
        raise ValueError(f'class_ratio must hold {len(SYNTHETIC_CLASSES)} positive numbers '
                         f'(for {SYNTHETIC_CLASSES}), got {class_ratio!r}')
    class_ratio = [float(r) for r in class_ratio]
    max_objects = _int('max_objects', max_objects, 1)
    if not isinstance(empty_ratio, (int, float)) or not 0 <= empty_ratio < 1:
        raise ValueError(f'empty_ratio must be in [0, 1), got {empty_ratio!r}')
    min_size = _int('min_size', min_size, 6)
    max_size = _int('max_size', max_size, min_size)
    if max_size > min(img_size) // 2:
        raise ValueError(f'max_size must be at most half the shorter image side '
                         f'({min(img_size) // 2}), got {max_size}')
    seed = _int('seed', seed, 0)
    return dict(
        num_train=num_train,
        num_val=num_val,
        img_size=img_size,
        class_ratio=class_ratio,
        max_objects=max_objects,
        empty_ratio=float(empty_ratio),
        min_size=min_size,
        max_size=max_size,
        seed=seed)


def default_data_root(params: Optional[dict] = None) -> str:
    """The cache folder of the dataset generated with ``params``.

    Args:
        params (dict, optional): Canonical parameters (see
            :func:`check_params`); None means the defaults. Defaults to None.

    Returns:
        str: ``<cache>/synthetic_shapes_v<version>`` for the default
        parameters, with a short hash of the parameters appended otherwise,
        where ``<cache>`` is ``$FOCAL_PLUGIN_DATA_CACHE`` or
        ``~/.cache/focal_plugin/datasets``.
    """
    name = f'{SYNTHETIC_NAME}_v{SYNTHETIC_VERSION}'
    if params is not None and params != check_params():
        digest = sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
        name = f'{name}_{digest}'
    return osp.join(default_cache_dir(), name)


def _manifest(params: dict, stats: Optional[dict] = None) -> dict:
    manifest = dict(
        name=SYNTHETIC_NAME,
        version=SYNTHETIC_VERSION,
        params=params,
        classes=list(SYNTHETIC_CLASSES))
    if stats is not None:
        manifest['splits'] = stats
    return manifest


def is_ready(data_root: str, params: Optional[dict] = None) -> bool:
    """Whether ``data_root`` holds a finished synthetic dataset.

    Args:
        data_root (str): Dataset folder.
        params (dict, optional): If given, the dataset must also have been
            generated with these canonical parameters. Defaults to None.

    Returns:
        bool: True if its manifest names this dataset and generator version
        (and ``params``).
    """
    manifest = read_manifest(data_root)
    if manifest is None or manifest.get('name') != SYNTHETIC_NAME \
            or manifest.get('version') != SYNTHETIC_VERSION:
        return False
    return params is None or manifest.get('params') == params


def prepare_synthetic_dataset(data_root: Optional[str] = None, **params) -> str:
    """Generates the synthetic shapes dataset, or reuses it when present.

    Safe to call from several processes at once: one generates while the
    others wait on a lock beside the folder, then all return the same folder.

    Args:
        data_root (str, optional): Folder for the dataset; None means the
            cache folder of :func:`default_data_root`. Defaults to None.
        **params: Generation parameters, see :func:`check_params`.

    Returns:
        str: The absolute path of the finished dataset folder.

    Raises:
        FileExistsError: If ``data_root`` exists and holds anything other than
            this dataset generated with ``params`` (it is never overwritten).
    """
    params = check_params(**params)
    root = osp.abspath(osp.expanduser(data_root)) if data_root else default_data_root(params)
    return prepare_dataset(root, SYNTHETIC_NAME, SYNTHETIC_VERSION, params, is_ready,
                           lambda out_dir: _manifest(params, _generate(out_dir, params)))


def _generate(out_dir: str, params: dict) -> dict:
    """Writes both splits into ``out_dir``; returns per-split statistics."""
    os.makedirs(osp.join(out_dir, 'annotations'))
    stats = {}
    for split_id, split in enumerate(SPLITS):
        os.makedirs(osp.join(out_dir, split))
        # One stream per split: changing num_val leaves the train split as is.
        rng = np.random.default_rng([params['seed'], split_id])
        coco = _generate_split(rng, out_dir, split, params[f'num_{split}'], params)
        with open(
                osp.join(out_dir, 'annotations', f'instances_{split}.json'), 'w',
                encoding='utf-8') as f:
            json.dump(coco, f, sort_keys=True, separators=(',', ':'))
        per_class = {c: 0 for c in SYNTHETIC_CLASSES}
        for ann in coco['annotations']:
            per_class[SYNTHETIC_CLASSES[ann['category_id'] - 1]] += 1
        with_objects = {ann['image_id'] for ann in coco['annotations']}
        stats[split] = dict(
            images=len(coco['images']),
            objects=len(coco['annotations']),
            empty_images=len(coco['images']) - len(with_objects),
            per_class=per_class)
    return stats


def _class_quota(num_objects: int, ratio: Sequence[float]) -> List[int]:
    """Objects per class in proportion to ``ratio`` (largest remainders)."""
    exact = np.asarray(ratio, dtype=np.float64) * num_objects / sum(ratio)
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind='stable')
    counts[order[:num_objects - int(counts.sum())]] += 1
    return counts.tolist()


def _generate_split(rng: np.random.Generator, out_dir: str, split: str, num_images: int,
                    params: dict) -> dict:
    w, h = params['img_size']
    empty = rng.random(num_images) < params['empty_ratio']
    counts = np.where(empty, 0, rng.integers(1, params['max_objects'] + 1, num_images))
    # Exact class proportions over the split, in random order.
    quota = _class_quota(int(counts.sum()), params['class_ratio'])
    labels = rng.permutation(np.repeat(np.arange(len(SYNTHETIC_CLASSES)), quota))
    images, annotations = [], []
    next_label = 0
    for index in range(num_images):
        img = _background(rng, w, h)
        boxes = []
        for label in labels[next_label:next_label + counts[index]]:
            mask = _place_shape(rng, int(label), boxes, w, h, params)
            ys, xs = np.nonzero(mask)
            x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            boxes.append((x1, y1, x2, y2))
            img[mask] = _contrasting_colour(rng, img[y1:y2, x1:x2])
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=index + 1,
                    category_id=int(label) + 1,
                    bbox=[x1, y1, x2 - x1, y2 - y1],
                    area=int(mask.sum()),
                    iscrowd=0))
        next_label += counts[index]
        img += rng.integers(-_NOISE, _NOISE + 1, img.shape, dtype=np.int16)
        file_name = f'{index:05d}.png'
        path = osp.join(out_dir, split, file_name)
        # Channels are generated as RGB; cv2 writes BGR.
        bgr = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8)[..., ::-1])
        if not cv2.imwrite(path, bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
            raise OSError(f'could not write {path}')
        images.append(dict(id=index + 1, file_name=file_name, width=w, height=h))
    categories = [
        dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(SYNTHETIC_CLASSES)
    ]
    return dict(
        images=images,
        annotations=annotations,
        categories=categories,
        info=dict(description=f'{SYNTHETIC_NAME} {split}', version=SYNTHETIC_VERSION))


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """An int16 RGB texture: a gradient, stripes or smooth blotches.

    Only integer arithmetic touches the pixels, so the result is the same on
    every platform (no transcendental functions, no SIMD-dependent resizing).
    """
    kind = int(rng.integers(3))
    base = rng.integers(40, 216, 3)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.int64)
    if kind == 0:  # linear gradient between two colours, in a random direction
        other = rng.integers(40, 216, 3)
        dx, dy = (int(v) for v in rng.integers(-4, 5, 2))
        t = dx * xs + dy * ys
        t = t - t.min()
        span = max(int(t.max()), 1)
        img = base + (other - base) * t[..., None] // span
    elif kind == 1:  # low-contrast stripes (triangle wave) at one of 8 angles
        amp = rng.integers(-45, 46, 3)
        period = int(rng.integers(8, 25))
        dx, dy = [(1, 0), (0, 1), (1, 1), (1, -1), (2, 1), (1, 2), (2, -1),
                  (1, -2)][int(rng.integers(8))]
        phase = (dx * xs + dy * ys + int(rng.integers(period))) % period
        wave = np.abs(2 * phase - period)  # 0..period
        img = base + amp * wave[..., None] // period
    else:  # smooth blotches: a coarse random grid, bilinearly upsampled
        gx, gy = int(rng.integers(3, 6)), int(rng.integers(3, 6))
        grid = rng.integers(40, 216, (gy + 1, gx + 1, 3))
        # Grid cell index and the position inside it, in units of 1 / (w * h).
        fx, fy = xs * gx, ys * gy
        ix, iy = fx // w, fy // h
        rx, ry = (fx % w)[..., None], (fy % h)[..., None]
        top = grid[iy, ix] * (w - rx) + grid[iy, ix + 1] * rx
        bottom = grid[iy + 1, ix] * (w - rx) + grid[iy + 1, ix + 1] * rx
        img = (top * (h - ry) + bottom * ry) // (w * h)
    return img.astype(np.int16)


def _overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether boxes ``a`` and ``b`` (x1, y1, x2, y2) come closer than the margin."""
    return (a[0] < b[2] + _MARGIN and b[0] < a[2] + _MARGIN and a[1] < b[3] + _MARGIN
            and b[1] < a[3] + _MARGIN)


def _place_shape(rng: np.random.Generator, label: int, boxes: List[Tuple[int, int, int, int]],
                 w: int, h: int, params: dict) -> np.ndarray:
    """Draws one shape's mask at a place free of the other boxes."""
    lo, hi = params['min_size'], params['max_size']
    # Log-uniform sizes: small objects are as frequent as in real data.
    size = int(round(lo * (hi / lo)**rng.random()))
    for attempt in range(400):
        if attempt and attempt % 40 == 0:  # crowded image: try smaller
            size = max(lo, size * 4 // 5)
        half = size / 2
        cx = rng.uniform(half + 1, w - half - 1)
        cy = rng.uniform(half + 1, h - half - 1)
        x1, y1, x2, y2 = cx - half, cy - half, cx + half, cy + half
        # After 300 failed tries the image is full: accept an overlap.
        if attempt >= 300 or not any(_overlap((x1, y1, x2, y2), box) for box in boxes):
            break
    mask = np.zeros((h, w), np.uint8)
    # cv2 draws with integer coordinates in 1/16 pixel (shift=4).
    s = 16
    if SYNTHETIC_CLASSES[label] == 'circle':
        cv2.circle(mask, (int(cx * s), int(cy * s)), int(half * s), 1, -1, cv2.LINE_8, 4)
    elif SYNTHETIC_CLASSES[label] == 'square':
        pts = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]) * s
        cv2.fillPoly(mask, [pts.astype(np.int32)], 1, cv2.LINE_8, 4)
    else:  # triangle, equilateral, turned by one of 24 angles
        turn = int(rng.integers(24))
        pts = np.array(
            [[cx + half * _COS[(turn + 8 * k) % 24], cy + half * _SIN[(turn + 8 * k) % 24]]
             for k in range(3)]) * s
        cv2.fillPoly(mask, [pts.astype(np.int32)], 1, cv2.LINE_8, 4)
    return mask.astype(bool)


# Cosines and sines of multiples of 15 degrees, fixed to the digit so that
# triangle vertices do not depend on the platform's libm.
_COS = [
    1.0, 0.9659258263, 0.8660254038, 0.7071067812, 0.5, 0.2588190451, 0.0, -0.2588190451, -0.5,
    -0.7071067812, -0.8660254038, -0.9659258263, -1.0, -0.9659258263, -0.8660254038, -0.7071067812,
    -0.5, -0.2588190451, 0.0, 0.2588190451, 0.5, 0.7071067812, 0.8660254038, 0.9659258263
]
_SIN = _COS[18:] + _COS[:18]


def _contrasting_colour(rng: np.random.Generator, patch: np.ndarray) -> np.ndarray:
    """A random colour far enough from the mean of ``patch``."""
    mean = patch.reshape(-1, 3).mean(axis=0)
    best, best_dist = None, -1.0
    for _ in range(50):
        colour = rng.integers(0, 256, 3)
        dist = float(np.sqrt(((colour - mean)**2).sum()))
        if dist >= _MIN_CONTRAST:
            return colour.astype(np.int16)
        if dist > best_dist:
            best, best_dist = colour, dist
    return best.astype(np.int16)


@DATASETS.register_module()
class SyntheticShapesDataset(CocoDataset):
    """The generated shapes dataset (see :func:`prepare_synthetic_dataset`).

    The dataset is generated on construction unless ``data_root`` already
    holds it, so configs train with mmdet's own tools and no preparation step.
    Construction from several processes at once (distributed ranks) is safe.

    Args:
        split (str): 'train' or 'val'; picks ``ann_file`` and the image
            folder when those are not given. Defaults to 'train'.
        generator_cfg (dict, optional): Generation parameters (see
            :func:`check_params`); None means the defaults, or, when
            ``data_root`` already holds a synthetic dataset, whatever it was
            generated with. Defaults to None.
        data_root (str, optional): Dataset folder; None means the cache folder
            (``$FOCAL_PLUGIN_DATA_CACHE`` or ``~/.cache/focal_plugin/datasets``).
            Defaults to None.
        ann_file (str): Annotation file relative to ``data_root``; '' means
            ``annotations/instances_<split>.json``. Defaults to ''.
        data_prefix (dict, optional): ``dict(img=...)``; None means
            ``dict(img='<split>/')``. Defaults to None.
        **kwargs: Passed to :class:`mmdet.datasets.CocoDataset`.
    """

    METAINFO = {
        'classes': SYNTHETIC_CLASSES,
        'palette': [(220, 20, 60), (0, 82, 255), (0, 170, 60)],
    }

    def __init__(self,
                 split: str = 'train',
                 generator_cfg: Optional[dict] = None,
                 data_root: Optional[str] = None,
                 ann_file: str = '',
                 data_prefix: Optional[dict] = None,
                 **kwargs) -> None:
        if split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
        if generator_cfg is not None and not isinstance(generator_cfg, dict):
            raise TypeError(f'generator_cfg must be a dict or None, got '
                            f'{type(generator_cfg).__name__}')
        # A folder that already holds the dataset is used as it is unless
        # generator_cfg asks for specific parameters.
        if not (data_root and generator_cfg is None and is_ready(data_root)):
            data_root = prepare_synthetic_dataset(data_root, **(generator_cfg or {}))
        self.split = split
        super().__init__(
            data_root=data_root,
            ann_file=ann_file or f'annotations/instances_{split}.json',
            data_prefix=data_prefix if data_prefix is not None else dict(img=f'{split}/'),
            **kwargs)

"""Drawing and writing the synthetic shapes images (numpy and cv2 only).

Circles, squares and triangles (8:2:1 by default) of varied sizes and colours
are drawn on textured backgrounds (gradients, stripes, blotches, with pixel
noise), several per image and none in some images. :func:`generate_images`
yields a split's images with their shapes; :func:`write_dataset` writes both
splits as PNG files plus COCO-style annotation files::

    <out_dir>/
        annotations/instances_train.json
        annotations/instances_val.json
        train/00000.png ...
        val/00000.png ...

Generation is deterministic (seeded numpy, integer arithmetic for every
random draw that reaches a pixel): the same parameters give the same bytes on
every run of a given installation.

This module imports neither mmdet nor mmengine: the mmdet dataset of
:mod:`focal_plugin.datasets.synthetic` and the mmseg one of
:mod:`focal_plugin.datasets.synthetic_seg` share it, and add the cache folder
and the registry classes.
"""
import dataclasses
import json
import os
import os.path as osp
from typing import Dict, Iterator, List, NamedTuple, Sequence, Tuple

import cv2
import numpy as np

#: Dataset name, the first part of its default cache folder name.
SYNTHETIC_NAME = 'synthetic_shapes'
#: Version of the generator's output; bump it whenever the bytes change.
SYNTHETIC_VERSION = 1
#: Class names, most frequent first.
SYNTHETIC_CLASSES = ('circle', 'square', 'triangle')
#: Split names, in the order of their random streams.
SPLITS = ('train', 'val')

# An object's colour differs from the mean background under it by at least
# this (Euclidean distance in RGB): the task is about shapes, not about
# finding objects that blend in.
_MIN_CONTRAST = 90.0
# Uniform pixel noise amplitude (integers, so identical on every platform).
_NOISE = 12
# Free pixels kept between objects, so that boxes do not overlap.
_MARGIN = 2


def _check_int(name: str, value: object, low: int) -> int:
    """``value`` as an int, if it is one (not a bool) and at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f'{name} must be an int, got {type(value).__name__}')
    if value < low:
        raise ValueError(f'{name} must be >= {low}, got {value}')
    return int(value)


@dataclasses.dataclass(frozen=True)
class SyntheticShapesParams:
    """Generation parameters of the synthetic shapes, checked on construction.

    The defaults are those of the detection dataset. Values are stored in
    canonical form (plain ints and floats, tuples), so that equal parameters
    compare and hash equal whatever sequence or numpy types they came in.

    Args:
        num_train (int): Images in the train split, >= 1. Defaults to 1000.
        num_val (int): Images in the val split, >= 1. Defaults to 200.
        img_size (Sequence[int]): Image (width, height), each >= 32.
            Defaults to (160, 160).
        class_ratio (Sequence[float]): Relative frequency of circle, square
            and triangle objects, each > 0. Defaults to (8, 2, 1).
        max_objects (int): Most objects in one image (an image that is not
            empty holds 1 to ``max_objects``), >= 1. Defaults to 6.
        empty_ratio (float): Probability that an image holds no object, in
            [0, 1). Defaults to 0.1.
        min_size (int): Smallest object extent in pixels, >= 6.
            Defaults to 14.
        max_size (int): Largest object extent in pixels, at least
            ``min_size`` and at most half the shorter image side.
            Defaults to 52.
        seed (int): Seed of the generator, >= 0. Defaults to 0.

    Raises:
        TypeError, ValueError: Naming the argument at fault and what it
            must be.
    """

    num_train: int = 1000
    num_val: int = 200
    img_size: Tuple[int, int] = (160, 160)
    class_ratio: Tuple[float, float, float] = (8, 2, 1)
    max_objects: int = 6
    empty_ratio: float = 0.1
    min_size: int = 14
    max_size: int = 52
    seed: int = 0

    def __post_init__(self) -> None:
        # The checks run in field order, so the first bad argument is named.
        canonical = {}
        canonical['num_train'] = _check_int('num_train', self.num_train, 1)
        canonical['num_val'] = _check_int('num_val', self.num_val, 1)
        img_size = self.img_size
        if not isinstance(img_size, Sequence) or len(img_size) != 2:
            raise ValueError(f'img_size must be a (width, height) pair, got {img_size!r}')
        width = _check_int('img_size[0]', img_size[0], 32)
        height = _check_int('img_size[1]', img_size[1], 32)
        canonical['img_size'] = (width, height)
        class_ratio = self.class_ratio
        if (not isinstance(class_ratio, Sequence) or len(class_ratio) != len(SYNTHETIC_CLASSES)
                or not all(isinstance(r, (int, float)) and r > 0 for r in class_ratio)):
            raise ValueError(f'class_ratio must hold {len(SYNTHETIC_CLASSES)} positive numbers '
                             f'(for {SYNTHETIC_CLASSES}), got {class_ratio!r}')
        canonical['class_ratio'] = tuple(float(r) for r in class_ratio)
        canonical['max_objects'] = _check_int('max_objects', self.max_objects, 1)
        empty_ratio = self.empty_ratio
        if not isinstance(empty_ratio, (int, float)) or not 0 <= empty_ratio < 1:
            raise ValueError(f'empty_ratio must be in [0, 1), got {empty_ratio!r}')
        canonical['empty_ratio'] = float(empty_ratio)
        min_size = canonical['min_size'] = _check_int('min_size', self.min_size, 6)
        max_size = canonical['max_size'] = _check_int('max_size', self.max_size, min_size)
        if max_size > min(width, height) // 2:
            raise ValueError(f'max_size must be at most half the shorter image side '
                             f'({min(width, height) // 2}), got {max_size}')
        canonical['seed'] = _check_int('seed', self.seed, 0)
        for name, value in canonical.items():
            # A frozen dataclass sets its own fields through object.__setattr__.
            object.__setattr__(self, name, value)

    def replace(self, **changes) -> 'SyntheticShapesParams':
        """These parameters with some of them changed, checked again.

        Args:
            **changes: New values of any of the fields.

        Returns:
            SyntheticShapesParams: The changed copy.

        Raises:
            TypeError: Naming the unknown parameters and listing the accepted
                ones, or as on construction.
            ValueError: As on construction.
        """
        accepted = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(accepted))
        if unknown:
            raise TypeError(f'unknown generation parameter(s) {unknown}; accepted: '
                            f'{sorted(accepted)}')
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, object]:
        """The parameters in JSON form (tuples as lists), as in the manifest.

        Returns:
            dict: One entry per field.
        """
        params = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            params[field.name] = list(value) if isinstance(value, tuple) else value
        return params


class Shape(NamedTuple):
    """One object drawn into an image.

    Attributes:
        label (int): Index into :data:`SYNTHETIC_CLASSES`.
        box (Tuple[int, int, int, int]): Tight box (x1, y1, x2, y2) of the
            mask, x2 and y2 exclusive.
        mask (np.ndarray): (height, width) bool mask of its pixels.
    """
    label: int
    box: Tuple[int, int, int, int]
    mask: np.ndarray


def generate_images(params: SyntheticShapesParams,
                    split: str) -> Iterator[Tuple[np.ndarray, List[Shape]]]:
    """Draws the images of one split, in order.

    Each split has its own random stream, so changing ``num_val`` leaves the
    train split as it is.

    Args:
        params (SyntheticShapesParams): Generation parameters.
        split (str): One of :data:`SPLITS`.

    Yields:
        Tuple[np.ndarray, List[Shape]]: The (height, width, 3) uint8 RGB
        image and its shapes, in drawing order (a later shape covers an
        earlier one where they overlap).
    """
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    rng = np.random.default_rng([params.seed, SPLITS.index(split)])
    num_images = getattr(params, f'num_{split}')
    w, h = params.img_size
    empty = rng.random(num_images) < params.empty_ratio
    counts = np.where(empty, 0, rng.integers(1, params.max_objects + 1, num_images))
    # Exact class proportions over the split, in random order.
    quota = _class_quota(int(counts.sum()), params.class_ratio)
    labels = rng.permutation(np.repeat(np.arange(len(SYNTHETIC_CLASSES)), quota))
    next_label = 0
    for index in range(num_images):
        img = _background(rng, w, h)
        shapes = []
        for label in labels[next_label:next_label + counts[index]]:
            mask = _place_shape(rng, int(label), [s.box for s in shapes], w, h, params)
            ys, xs = np.nonzero(mask)
            x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            img[mask] = _contrasting_colour(rng, img[y1:y2, x1:x2])
            shapes.append(Shape(int(label), (x1, y1, x2, y2), mask))
        next_label += counts[index]
        img += rng.integers(-_NOISE, _NOISE + 1, img.shape, dtype=np.int16)
        yield np.clip(img, 0, 255).astype(np.uint8), shapes


def write_png(path: str, array: np.ndarray) -> None:
    """Writes an RGB image or a single-channel map as a PNG file.

    Args:
        path (str): Output file.
        array (np.ndarray): (height, width, 3) uint8 RGB image, or
            (height, width) uint8 map written as it is.

    Raises:
        OSError: If cv2 cannot write the file.
    """
    if array.ndim == 3:
        array = np.ascontiguousarray(array[..., ::-1])  # cv2 writes BGR
    if not cv2.imwrite(path, array, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f'could not write {path}')


def write_split(out_dir: str, split: str, params: SyntheticShapesParams) -> dict:
    """Writes one split's images and its COCO-style annotation file.

    Args:
        out_dir (str): Dataset folder, holding an ``annotations`` folder.
        split (str): One of :data:`SPLITS`; its images go to
            ``<out_dir>/<split>/``, which must not exist yet.
        params (SyntheticShapesParams): Generation parameters.

    Returns:
        dict: The COCO annotations written to
        ``annotations/instances_<split>.json``.
    """
    os.makedirs(osp.join(out_dir, split))
    w, h = params.img_size
    images, annotations = [], []
    for index, (img, shapes) in enumerate(generate_images(params, split)):
        for shape in shapes:
            x1, y1, x2, y2 = shape.box
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=index + 1,
                    category_id=shape.label + 1,
                    bbox=[x1, y1, x2 - x1, y2 - y1],
                    area=int(shape.mask.sum()),
                    iscrowd=0))
        file_name = f'{index:05d}.png'
        write_png(osp.join(out_dir, split, file_name), img)
        images.append(dict(id=index + 1, file_name=file_name, width=w, height=h))
    categories = [
        dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(SYNTHETIC_CLASSES)
    ]
    coco = dict(
        images=images,
        annotations=annotations,
        categories=categories,
        info=dict(description=f'{SYNTHETIC_NAME} {split}', version=SYNTHETIC_VERSION))
    with open(
            osp.join(out_dir, 'annotations', f'instances_{split}.json'), 'w',
            encoding='utf-8') as f:
        json.dump(coco, f, sort_keys=True, separators=(',', ':'))
    return coco


def write_dataset(out_dir: str, params: SyntheticShapesParams) -> dict:
    """Writes both splits of the detection dataset into ``out_dir``.

    Args:
        out_dir (str): An existing, empty folder.
        params (SyntheticShapesParams): Generation parameters.

    Returns:
        dict: Per split: its numbers of images, objects, empty images and
        objects per class.
    """
    os.makedirs(osp.join(out_dir, 'annotations'))
    stats = {}
    for split in SPLITS:
        coco = write_split(out_dir, split, params)
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
                 w: int, h: int, params: SyntheticShapesParams) -> np.ndarray:
    """Draws one shape's mask at a place free of the other boxes."""
    lo, hi = params.min_size, params.max_size
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

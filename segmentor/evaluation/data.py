"""Label maps and images as users have them on disk: PNG label maps, prediction/ground-truth folders paired
by stem, COCO-Stuff-27 and Cityscapes layouts with their label mappings, and the synthetic scenes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segmentor.evaluation.metrics import EvaluationError
from segmentor.images import to_rgb8

# COCO-Stuff-27: the curated 27 coarse classes of PiCIE / STEGO. Keys are the ids of COCO-Stuff's
# stuffthingmaps PNGs (category id - 1: things 0-90, stuff 91-181, 255 unlabeled); the 171 used ids all map.
COCOSTUFF27_CLASSES: tuple[str, ...] = (
    "electronic", "appliance", "food-things", "furniture-things", "indoor", "kitchen", "accessory", "animal",
    "outdoor", "person", "sports", "vehicle", "ceiling", "floor", "food-stuff", "furniture-stuff",
    "rawmaterial", "textile", "wall", "window", "building", "ground", "plant", "sky", "solid", "structural",
    "water",
)
_COCOSTUFF27_MEMBERS: dict[str, tuple[int, ...]] = {
    "electronic": tuple(range(71, 77)),
    "appliance": tuple(range(77, 83)),
    "food-things": tuple(range(51, 61)),
    "furniture-things": tuple(range(61, 71)),
    "indoor": tuple(range(83, 91)),
    "kitchen": tuple(range(43, 51)),
    "accessory": tuple(range(25, 33)),
    "animal": tuple(range(15, 25)),
    "outdoor": tuple(range(9, 15)),
    "person": (0,),
    "sports": tuple(range(33, 43)),
    "vehicle": tuple(range(1, 9)),
    "ceiling": (101, 102),
    "floor": (100, 113, 114, 115, 116, 117),
    "food-stuff": (120, 121, 152, 169),
    "furniture-stuff": (97, 106, 107, 109, 111, 122, 129, 132, 155, 160, 164),
    "rawmaterial": (99, 131, 138, 142),
    "textile": (91, 92, 103, 104, 108, 130, 136, 140, 151, 166, 167),
    "wall": tuple(range(170, 177)),
    "window": (179, 180),
    "building": (94, 95, 127, 150, 157, 165),
    "ground": (110, 124, 125, 135, 139, 143, 144, 146, 148, 153, 158),
    "plant": (93, 96, 118, 123, 128, 133, 141, 162, 168),
    "sky": (105, 156),
    "solid": (126, 134, 149, 159, 161, 181),
    "structural": (98, 112, 137, 145, 163),
    "water": (119, 147, 154, 177, 178),
}
COCOSTUFF27: dict[int, int] = {
    fine: COCOSTUFF27_CLASSES.index(coarse) for coarse, fines in _COCOSTUFF27_MEMBERS.items() for fine in fines
}

# Cityscapes gtFine labelIds -> the 19 evaluation trainIds (cityscapesScripts labels.py); the rest is ignored.
CITYSCAPES19_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES19: dict[int, int] = dict(zip((7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33),
                                        range(19), strict=True))
# STEGO's 27-class Cityscapes (labelIds 7..33, the non-void ones), which its unsupervised successors report.
CITYSCAPES27: dict[int, int] = {label_id: label_id - 7 for label_id in range(7, 34)}


@dataclass(frozen=True)
class DatasetLayout:
    """How a dataset names its files and what its label ids mean."""

    name: str
    image_suffixes: tuple[str, ...]  # an image's key is its file name without this suffix
    label_suffix: str
    mapping: dict[int, int] | None  # raw label id -> class id (others become ignore); None = ids as they are
    recursive: bool  # look in subfolders too (Cityscapes keeps one folder per city)

    def map_labels(self, raw: np.ndarray, ignore: int, where: str) -> np.ndarray:
        if self.mapping is None:
            return raw
        if raw.min() < 0 or raw.max() > 255:
            raise EvaluationError(f"{where}: label ids {raw.min()}..{raw.max()} are not {self.name} ids (0-255)")
        table = np.full(256, ignore, np.int64)
        for raw_id, class_id in self.mapping.items():
            table[raw_id] = class_id
        return table[raw]


LAYOUTS: dict[str, DatasetLayout] = {
    "folder": DatasetLayout("folder", (".png", ".jpg", ".jpeg"), ".png", None, False),
    "cocostuff27": DatasetLayout("cocostuff27", (".jpg", ".jpeg", ".png"), ".png", COCOSTUFF27, False),
    "cityscapes": DatasetLayout("cityscapes", ("_leftImg8bit.png",), "_gtFine_labelIds.png", CITYSCAPES19, True),
    "cityscapes27": DatasetLayout("cityscapes27", ("_leftImg8bit.png",), "_gtFine_labelIds.png", CITYSCAPES27, True),
}


@dataclass(frozen=True)
class Sample:
    """One image with its ground truth; ``instance_gt`` only where the source has instances (scenes)."""

    name: str
    image: np.ndarray  # uint8 (H, W, 3)
    gt: np.ndarray  # int (H, W) class ids
    instance_gt: np.ndarray | None = None


def read_label_map(path: Path) -> np.ndarray:
    """A single-channel PNG (8- or 16-bit grayscale, or palette indices) as int64 ids."""
    try:
        with Image.open(path) as opened:
            if opened.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
                raise EvaluationError(f"{path}: label maps must be single-channel (8/16-bit grayscale or palette), "
                                      f"got PIL mode {opened.mode}")
            return np.asarray(opened).astype(np.int64)
    except FileNotFoundError as error:
        raise EvaluationError(f"{path}: no such file") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if isinstance(error, EvaluationError):
            raise
        raise EvaluationError(f"{path}: not a readable PNG label map ({error})") from error


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 as stored: no EXIF rotation, because dataset labels are drawn on the stored pixel grid."""
    try:
        with Image.open(path) as opened:
            return to_rgb8(opened)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise EvaluationError(f"{path}: not a readable image ({error})") from error


def pair_by_stem(pred_dir: Path, gt_dir: Path) -> list[tuple[str, Path, Path]]:
    """``<stem>.png`` in both folders, matched by stem; any stem in only one folder is an error."""
    preds, gts = _pngs(pred_dir, "prediction"), _pngs(gt_dir, "ground-truth")
    _require_same_keys(preds, gts, f"predictions ({pred_dir})", f"ground truth ({gt_dir})")
    return [(stem, preds[stem], gts[stem]) for stem in sorted(gts)]


def folder_samples(images_dir: Path, gt_dir: Path, layout: DatasetLayout, ignore: int,
                   stems: Sequence[str] | None = None, limit: int | None = None) -> tuple[list[str], Iterator[Sample]]:
    """Keys of the images to evaluate (sorted, filtered by ``stems``, cut to ``limit``) and their samples.

    Every image needs a label; labels without an image are allowed (evaluating a subset of a split).
    """
    images = _files_by_key(images_dir, layout.image_suffixes, layout.recursive, "image")
    labels = _files_by_key(gt_dir, (layout.label_suffix,), layout.recursive, "label")
    keys = sorted(images)
    if stems is not None:
        unknown = sorted(set(stems) - set(images))
        if unknown:
            raise EvaluationError(f"{len(unknown)} listed stems have no image in {images_dir}: {_few(unknown)}")
        keys = sorted(set(stems))
    missing = [key for key in keys if key not in labels]
    if missing:
        raise EvaluationError(f"{len(missing)} images in {images_dir} have no {layout.label_suffix} label in "
                              f"{gt_dir}: {_few(missing)}")
    keys = keys[:limit] if limit is not None else keys

    def load() -> Iterator[Sample]:
        for key in keys:
            image = read_image(images[key])
            raw = read_label_map(labels[key])
            if raw.shape != image.shape[:2]:
                raise EvaluationError(f"{labels[key]}: label map is {raw.shape[1]}x{raw.shape[0]} but image "
                                      f"{images[key]} is {image.shape[1]}x{image.shape[0]}")
            yield Sample(key, image, layout.map_labels(raw, ignore, str(labels[key])))

    return keys, load()


def scene_samples(count: int, seed: int, size: int) -> Iterator[Sample]:
    """Synthetic scenes ``seed .. seed+count-1``: class maps as ground truth, instance maps beside them."""
    from segmentor.toy.scenes import generate_scene

    for scene_seed in range(seed, seed + count):
        scene = generate_scene(scene_seed, size)
        yield Sample(f"scene_{scene_seed:07d}", scene.image, scene.class_map.astype(np.int64),
                     scene.instance_map.astype(np.int64))


def read_stem_list(path: Path) -> list[str]:
    """One stem per line (blank lines and ``#`` comments skipped), e.g. STEGO's curated COCO-Stuff list."""
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise EvaluationError(f"{path}: cannot read the stem list ({error})") from error
    stems = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not stems:
        raise EvaluationError(f"{path}: the stem list is empty")
    return stems


def _pngs(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise EvaluationError(f"{what} folder {folder} does not exist or is not a folder")
    files = {path.stem: path for path in folder.glob("*.png")}
    if not files:
        raise EvaluationError(f"{what} folder {folder} holds no .png label maps")
    return files


def _files_by_key(folder: Path, suffixes: tuple[str, ...], recursive: bool, what: str) -> dict[str, Path]:
    """Files in ``folder`` (and its subfolders if ``recursive``) keyed by file name minus suffix."""
    if not folder.is_dir():
        raise EvaluationError(f"{what} folder {folder} does not exist or is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        suffix = next((s for s in suffixes if path.name.lower().endswith(s.lower())), None)
        if suffix is None or not path.is_file():
            continue
        key = path.name[: -len(suffix)]
        if key in found:
            raise EvaluationError(f"two {what} files share the key {key!r}: {found[key]} and {path}")
        found[key] = path
    if not found:
        raise EvaluationError(f"no {what} files ending in {' or '.join(suffixes)} under {folder}")
    return found


def _require_same_keys(first: dict[str, Path], second: dict[str, Path], first_name: str, second_name: str) -> None:
    only_first, only_second = sorted(set(first) - set(second)), sorted(set(second) - set(first))
    problems = []
    if only_first:
        problems.append(f"{len(only_first)} in {first_name} only: {_few(only_first)}")
    if only_second:
        problems.append(f"{len(only_second)} in {second_name} only: {_few(only_second)}")
    if problems:
        raise EvaluationError("stems do not match: " + "; ".join(problems))


def _few(names: Sequence[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more

"""Real benchmarks from local files: NYUv2 and Cityscapes in the MTAN preprocessing (Liu et al.).

Nothing is downloaded: point ``data_dir`` at the unpacked folder (see ``docs/real-data.md``).
Every file is one ``<index>.npy`` array, ``index`` = 0..N-1 per folder:

==========  ========================================  =============================================
dataset     file (per image)                          array
==========  ========================================  =============================================
nyuv2       ``{train,val}/image/<i>.npy``             (288, 384, 3) float, RGB in [0, 1]
            ``{train,val}/label/<i>.npy``             (288, 384) float, class 0..12, -1 = ignore
            ``{train,val}/depth/<i>.npy``             (288, 384, 1) float, metres, 0 = missing
            ``{train,val}/normal/<i>.npy``            (288, 384, 3) float in [-1, 1], all 0 = missing
cityscapes  ``{train,val}/image/<i>.npy``             (128, 256, 3) float, RGB in [0, 1]
            ``{train,val}/label_7/<i>.npy``           (128, 256) float, class 0..6, -1 = ignore
            ``{train,val}/label_19/<i>.npy``          (128, 256) float, class 0..18, -1 = ignore
            ``{train,val}/depth/<i>.npy``             (128, 256, 1) float, disparity, 0 = invalid
==========  ========================================  =============================================

:func:`load_real` returns a split as the same dict of tensors as :func:`simo_lite.scenes.load_split`:

=========  ===============  ======================================================================
key        shape / dtype    meaning
=========  ===============  ======================================================================
image      (N,3,H,W) f32    RGB in [0, 1]
seg        (N,H,W)   i64    class id 0..C-1, or -1 = ignore (unlabelled pixel)
depth      (N,1,H,W) f32    NYUv2: metres; Cityscapes: disparity (inverse depth, unitless);
                            0 = invalid (missing, non-finite or negative values in the file)
normals    (N,3,H,W) f32    NYUv2 only: unit surface normal, or (0, 0, 0) = invalid
=========  ===============  ======================================================================

Splits (the paper's): NYUv2 train = all of ``train/`` (795); the official 654 test images in
``val/`` are split 400 validation / 254 test. Cityscapes ``train/`` (2,975) is split 2,380 train /
595 validation; the official ``val/`` (500) is the test split. Both random splits use a permutation
of a FIXED seed (:data:`SPLIT_SEED`, independent of the course seed), and smaller folders (fixtures,
subsets) are split in the same proportions (:func:`split_sizes`).

Each dataset's layout (sub-folders, which folder is split, the held-out share, disparity) is a field
of its :class:`~simo_lite.data.DatasetSpec` in :data:`simo_lite.data.DATASETS`: a new dataset in this
layout is one ``register_dataset`` call there, and nothing here changes.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import progress as pg
from .data import DATASET_TASKS, DATASETS, NATIVE_HW, DatasetSpec
from .types import Split

__all__ = ["DATASET_TASKS", "NATIVE_HW", "SPLIT_SEED", "CITYSCAPES_CLASSES", "num_classes", "layout",
           "split_sizes", "split_indices", "load_real", "resize_batch", "augment", "augmenter"]

# DATASET_TASKS ({dataset: the tasks it labels}) and NATIVE_HW ({dataset: native (H, W)}) are views of
# the dataset registry (simo_lite.data.DATASETS), where each dataset's folder layout is described too.
CITYSCAPES_CLASSES = DATASETS["cityscapes"].seg_classes     # (7, 19)
SPLIT_SEED = 42  # the seed of the paper's code; any constant works, it must not follow the course seed


def _file_spec(dataset: str) -> DatasetSpec:
    """The spec of a dataset read from files; a clear error for an unknown or a rendered one."""
    spec = DATASETS[dataset]             # unknown: "unknown dataset 'x'; valid: scenes, nyuv2, cityscapes"
    if not spec.from_files:
        raise ValueError(f"dataset {dataset!r} is rendered, not read from files: use simo_lite.scenes.load_split "
                         f"(datasets read from files: {', '.join(n for n, s in DATASETS.items() if s.from_files)})")
    return spec


def num_classes(dataset: str, classes: int | None = None) -> int:
    """Segmentation classes: Scenes 6, NYUv2 13, Cityscapes ``classes`` (7 categories or 19 classes; default 7).

    ``classes`` None is the dataset's default; a count the dataset does not offer is an error."""
    return DATASETS[dataset].check_classes(classes)


def _folders(dataset: str, classes: int | None) -> dict[str, str]:
    """{tensor key: sub-folder} of one split folder."""
    spec = _file_spec(dataset)
    return {k: f.format(classes=num_classes(dataset, classes)) if "{" in f else f for k, f in spec.folders.items()}


def layout(dataset: str, classes: int | None = None) -> str:
    """The expected folder layout of ``dataset`` as a text tree (used in error messages)."""
    h, w = _file_spec(dataset).native_hw
    shapes = {"image": f"({h}, {w}, 3) float in [0, 1]",
              "seg": f"({h}, {w}) float class ids, -1 = ignore",
              "depth": f"({h}, {w}, 1) float, 0 = invalid",
              "normals": f"({h}, {w}, 3) float in [-1, 1]"}
    lines = [f"<data_dir>/            ({dataset}, MTAN preprocessing, see docs/real-data.md)"]
    for split in ("train", "val"):
        lines.append(f"  {split}/")
        for key, folder in _folders(dataset, classes).items():
            lines.append(f"    {folder + '/':<10} 0.npy, 1.npy, ...   each {shapes[key]}")
    return "\n".join(lines)


def _folder_size(root: Path, dataset: str, split_folder: str) -> int:
    """Number of images in ``root/split_folder`` (counted from ``image/<i>.npy``)."""
    d = root / split_folder / "image"
    if not d.is_dir():
        raise FileNotFoundError(f"{dataset}: folder {d} not found; expected layout:\n{layout(dataset)}")
    n = sum(1 for p in d.iterdir() if p.suffix == ".npy" and p.stem.isdigit())
    if n == 0:
        raise FileNotFoundError(f"{dataset}: no <index>.npy files in {d}; expected layout:\n{layout(dataset)}")
    return n


def _held_out(dataset: str, n: int) -> int:
    """Size of the held-out part when a folder of ``n`` images is split (400/654 or 595/2975 of it)."""
    k, total = _file_spec(dataset).held_out
    if n < 2:
        raise ValueError(f"{dataset}: a folder that is split in two needs at least 2 images, found {n}")
    return min(max(int(math.floor(n * k / total + 0.5)), 1), n - 1)


def _permutation(n: int) -> list[int]:
    """The fixed permutation of range(n); equals ``torch.utils.data.random_split`` with seed ``SPLIT_SEED``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()


def split_indices(dataset: str, data_dir: str | Path, split: str) -> tuple[str, list[int]]:
    """The files of ``split`` in {'train', 'val', 'test'}: (folder 'train' or 'val', sorted file indices).

    NYUv2: train = every file of ``train/``; val / test = the first ``round(n*400/654)`` / the rest of a
    fixed permutation of ``val/``. Cityscapes: val / train = the first ``round(n*595/2975)`` / the rest
    of a fixed permutation of ``train/``; test = every file of ``val/``. The permutation is
    ``torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))``, the one
    ``torch.utils.data.random_split(range(n), [k, n - k], generator=...)`` draws.
    """
    spec = _file_spec(dataset)
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; valid: train, val, test")
    root = Path(data_dir)
    if split in spec.whole:
        return spec.whole[split], list(range(_folder_size(root, dataset, spec.whole[split])))
    folder = spec.divided
    n = _folder_size(root, dataset, folder)
    k = _held_out(dataset, n)
    perm = _permutation(n)
    first = split == "val"            # the held-out part is the val split in both datasets
    return folder, sorted(perm[:k] if first else perm[k:])


def split_sizes(dataset: str, data_dir: str | Path) -> dict[str, int]:
    """{'train': n, 'val': n, 'test': n} of the files in ``data_dir`` (795/400/254, 2380/595/500 in full)."""
    return {s: len(split_indices(dataset, data_dir, s)[1]) for s in ("train", "val", "test")}


# ----------------------------------------------------------------------------------------------
# Reading and resizing
# ----------------------------------------------------------------------------------------------
def _read(path: Path, dataset: str, key: str, hw: tuple[int, int] | None, classes: int) -> np.ndarray:
    """One file as a checked float32 array: image (3,H,W), seg (H,W), depth (1,H,W), normals (3,H,W)."""
    if not path.is_file():
        raise FileNotFoundError(f"{dataset}: file {path} not found; expected layout:\n{layout(dataset, classes)}")
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{dataset}: cannot read {path} as a .npy array ({e})") from e
    if a.ndim not in (2, 3):
        raise ValueError(f"{dataset}: {path} has shape {a.shape}, expected a (H, W) or (H, W, C) array ({key}; "
                         f"native size {NATIVE_HW[dataset]}); see docs/real-data.md")
    h, w = hw if hw is not None else a.shape[:2]
    want = {"image": (h, w, 3), "seg": (h, w), "depth": (h, w, 1), "normals": (h, w, 3)}[key]
    if key == "depth" and a.shape == (h, w):
        a = a[..., None]
    if a.shape != want:
        raise ValueError(f"{dataset}: {path} has shape {a.shape}, expected {want} ({key}; "
                         f"native size {NATIVE_HW[dataset]}); see docs/real-data.md")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{dataset}: {path} has dtype {a.dtype}, expected a numeric array")
    if key == "image":
        if a.dtype == np.uint8:
            a = a.astype(np.float32) / 255.0
        a = a.astype(np.float32)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if not np.isfinite(a).all() or lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"{dataset}: {path} holds values in [{lo:g}, {hi:g}] (or non-finite); "
                             f"expected RGB floats in [0, 1]")
        return np.clip(a, 0.0, 1.0).transpose(2, 0, 1)
    if key == "seg":
        a = a.astype(np.float64)
        if not np.isfinite(a).all() or (np.round(a) != a).any():
            raise ValueError(f"{dataset}: {path} holds non-integer class ids; expected 0..{classes - 1} or -1")
        bad = (a < -1) | (a >= classes)
        if bad.any():
            raise ValueError(f"{dataset}: {path} holds class ids {sorted(np.unique(a[bad]).astype(int))[:5]} outside "
                             f"0..{classes - 1} (and -1 = ignore)")
        return a.astype(np.float32)
    a = a.astype(np.float32).transpose(2, 0, 1)
    a = np.where(np.isfinite(a), a, 0.0).astype(np.float32)
    if key == "depth":
        return np.maximum(a, 0.0)                 # negative (e.g. -1 "invalid") -> 0 = invalid
    n = np.sqrt((a ** 2).sum(0, keepdims=True))   # normals: unit length, zeros stay zeros (invalid)
    return np.where(n > 1e-6, a / np.maximum(n, 1e-6), 0.0).astype(np.float32)


def _renormalise(normals: torch.Tensor) -> torch.Tensor:
    """Unit vectors along dim 1; all-zero (invalid) vectors stay zero."""
    n = normals.norm(dim=1, keepdim=True)
    return torch.where(n > 1e-6, normals / n.clamp_min(1e-6), torch.zeros_like(normals))


# keys resized bilinearly (continuous images); every other key uses nearest so invalid/ignore
# values never blend with valid ones
_BILINEAR = ("image", "albedo")


def resize_batch(batch: Split, size: tuple[int, int]) -> Split:
    """A batch resized to ``size`` = (H, W): images bilinear (antialiased), every label nearest
    (``nearest-exact``: values always come from the original set, so -1 / 0 invalid pixels stay
    invalid), normals nearest then renormalised. Keys keep their shapes and dtypes otherwise."""
    size = (int(size[0]), int(size[1]))
    out = {}
    for k, v in batch.items():
        if tuple(v.shape[-2:]) == size:
            out[k] = v
            continue
        x = v[:, None] if v.dim() == 3 else v                       # seg (N,H,W) -> (N,1,H,W)
        if k in _BILINEAR:
            y = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
            y = y.clamp(0, 1)
        else:
            y = F.interpolate(x.float(), size=size, mode="nearest-exact")
            if k == "normals":
                y = _renormalise(y)
        y = y[:, 0] if v.dim() == 3 else y
        out[k] = y.round().to(v.dtype) if not v.is_floating_point() else y.to(v.dtype)
    return out


def load_real(dataset: str, data_dir: str | Path, split: str, size: tuple[int, int] | int | None = None,
              classes: int | None = None, n: int | None = None, progress: bool = False) -> Split:
    """Split ``split`` ('train', 'val' or 'test') of a real dataset as tensors (see module docstring).

    Args:
        dataset: 'nyuv2' or 'cityscapes'.
        data_dir: the folder holding ``train/`` and ``val/`` (layout: :func:`layout`).
        split: the paper's split, made by :func:`split_indices`.
        size: working (H, W) in pixels (an int means square); None keeps the native size (NYUv2
            288 x 384, Cityscapes 128 x 256). Images are resized bilinearly, labels by nearest
            neighbour (:func:`resize_batch`).
        classes: Cityscapes segmentation classes, 7 (default, ``label_7/``) or 19 (``label_19/``);
            NYUv2 always has 13.
        n: only the first ``n`` images of the split (all when None).
        progress: a tqdm bar over the images when there are more than 50.

    Returns:
        {'image', 'seg', 'depth'[, 'normals']}: float32 / int64 tensors with N images of size (H, W).
    """
    _file_spec(dataset)
    C = num_classes(dataset, classes)
    folder, idx = split_indices(dataset, data_dir, split)
    if n is not None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        idx = idx[:n]
    if isinstance(size, int):
        size = (size, size)
    root = Path(data_dir) / folder
    folders = _folders(dataset, classes)
    for key, sub in folders.items():
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"{dataset}: folder {root / sub} not found ({key}); expected layout:\n"
                                    f"{layout(dataset, classes)}")
    it = pg.progress(idx, f"loading {dataset} {split}", show=progress, min_total=51, unit="img")
    out: dict[str, torch.Tensor] = {}
    native = None
    for j, i in enumerate(it):
        arrays = {}
        for key, sub in folders.items():
            arrays[key] = _read(root / sub / f"{i}.npy", dataset, key, native, C)
            if native is None:
                native = tuple(arrays[key].shape[-2:])            # every file must match the first image
        one = {k: torch.from_numpy(a)[None] for k, a in arrays.items()}
        one["seg"] = one["seg"].long()
        if size is not None:
            one = resize_batch(one, size)
        if not out:
            out = {k: torch.empty((len(idx), *v.shape[1:]), dtype=v.dtype) for k, v in one.items()}
        for k, v in one.items():
            out[k][j] = v[0]
    return out


# ----------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------
def augment(batch: Split, generator: torch.Generator, scales: Sequence[float] = (1.0, 1.2, 1.5),
            flip: bool = True, disparity: bool = False) -> Split:
    """Random scale-crop and horizontal flip of every image of a batch (MTAN's RandomScaleCrop).

    Per image: a scale ``s`` from ``scales``; a window of (int(H/s), int(W/s)) pixels at a uniformly
    random position is cropped and resized back to (H, W) (images bilinear, labels nearest, normals
    nearest); ``depth`` is divided by ``s`` (zooming in brings the scene closer), or multiplied by
    ``s`` when ``disparity`` (Cityscapes stores inverse depth); 0 (invalid) stays 0. Then, with
    probability 1/2 when ``flip``, the image and labels are mirrored left-right and the x component of
    ``normals`` is negated. Other keys are cropped / flipped like labels (``albedo`` like images).

    A pure function of ``generator``'s state (all draws are made up front, on the generator's
    device), so the same generator state gives the same batch; the input is not modified. Tensors may
    live on any device. Shapes: image (B,3,H,W), seg (B,H,W), depth (B,1,H,W), normals (B,3,H,W).
    """
    if not scales or any(float(x) < 1 for x in scales):
        raise ValueError(f"augment: scales must be zoom factors >= 1 (1 = no crop), at least one, got {tuple(scales)}")
    keys = list(batch)
    if not keys:
        return {}
    B = len(batch[keys[0]])
    H, W = batch[keys[0]].shape[-2:]
    u = torch.rand(4, B, generator=generator, device=generator.device).tolist()
    out = {k: v.clone() for k, v in batch.items()}
    for b in range(B):
        s = float(scales[min(int(u[0][b] * len(scales)), len(scales) - 1)])
        h, w = max(int(H / s), 1), max(int(W / s), 1)
        top, left = int(u[1][b] * (H - h + 1)), int(u[2][b] * (W - w + 1))
        mirror = flip and u[3][b] < 0.5
        for k, v in batch.items():
            x = v[b:b + 1]
            x = x[:, None] if x.dim() == 3 else x                   # (1,C,H,W)
            if (h, w) != (H, W):
                x = x[..., top:top + h, left:left + w]
                mode = dict(mode="bilinear", align_corners=False) if k in _BILINEAR else dict(mode="nearest-exact")
                x = F.interpolate(x.float(), size=(H, W), **mode).to(v.dtype)
                if k == "depth":
                    x = x * s if disparity else x / s
            if mirror:
                x = x.flip(-1)
                if k == "normals":
                    x = torch.cat([-x[:, :1], x[:, 1:]], 1)
            out[k][b] = x[0, 0] if v.dim() == 3 else x[0]
    return out


def augmenter(dataset: str, scales: Sequence[float] = (1.0, 1.2, 1.5)) -> Callable[[Split, torch.Generator], Split]:
    """``augment`` set up for ``dataset``: Cityscapes' depth is disparity (multiplied by the scale)."""
    disparity = DATASETS[dataset].disparity

    def fn(batch: Split, generator: torch.Generator) -> Split:
        return augment(batch, generator, scales=scales, disparity=disparity)

    fn.__name__ = f"augment_{dataset}"
    return fn

"""The datasets: one :class:`DatasetSpec` per dataset in the registry :data:`DATASETS`, and :func:`load_data`.

Everything that differs between datasets is a field of its spec: its native size, segmentation
classes, the tasks it labels, how a split is loaded and how large the splits are, and (for the
datasets read from files) the folder layout. The rest of the package looks these up instead of
comparing names, so a new dataset is one :func:`register_dataset` call (plus a Profile field when
its class count is a choice, like ``cityscapes_classes``)::

    >>> from simo_lite.data import DATASETS
    >>> DATASETS["nyuv2"].tasks
    ('seg', 'depth', 'normals')
    >>> DATASETS["imagenet"]
    Traceback (most recent call last):
    UnknownNameError: unknown dataset 'imagenet'; valid: scenes, nyuv2, cityscapes

=============  ====================  ============  =======================  ====================
dataset        source                native (H,W)  seg classes              tasks
=============  ====================  ============  =======================  ====================
scenes         rendered offline      any (square)  6                        seg, depth, normals,
                                                                            edges, albedo
nyuv2          ``data_dir`` files    (288, 384)    13                       seg, depth, normals
cityscapes     ``data_dir`` files    (128, 256)    7 or 19                  seg, depth
                                                   (``cityscapes_classes``)
=============  ====================  ============  =======================  ====================

This module does not import torch (the course runner reads the registry without it): the loaders
import :mod:`simo_lite.scenes` / :mod:`simo_lite.datasets` when they run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping

from .registry import Registry
from .types import Split, Splits

if TYPE_CHECKING:
    from .profiles import Profile

__all__ = ["DatasetSpec", "DATASETS", "DEFAULT_DATASET", "SPLITS", "DATASET_TASKS", "NATIVE_HW",
           "register_dataset", "load_data"]

SPLITS = ("train", "val", "test")
DEFAULT_DATASET = "scenes"      # the offline course's dataset; the notebooks' defaults are written for it


def _load_rendered(profile: "Profile", split: str, seed: int, progress: bool) -> Split:
    """A Scenes split: rendered once at ``profile.image_size``, then read from the cache."""
    from .scenes import load_split
    return load_split(split, _profile_sizes(profile)[split], size=profile.image_size, seed=seed, progress=progress,
                      max_objects=profile.max_objects)


def _profile_sizes(profile: "Profile") -> dict[str, int]:
    """Split sizes of a rendered dataset: the profile's ``n_train`` / ``n_val`` / ``n_test``."""
    return {"train": profile.n_train, "val": profile.n_val, "test": profile.n_test}


def _load_files(profile: "Profile", split: str, seed: int, progress: bool) -> Split:
    """A split read from ``profile.data_dir`` (MTAN layout) at the working size ``profile.input_hw``.
    ``seed`` is unused: the paper's splits use a fixed seed of their own (``datasets.SPLIT_SEED``)."""
    from .datasets import load_real
    return load_real(profile.dataset, profile.data_dir, split, size=profile.input_hw, progress=progress,
                     classes=profile.seg_classes)


def _file_sizes(profile: "Profile") -> dict[str, int]:
    """Split sizes of a dataset read from files: counted in ``profile.data_dir``."""
    from .datasets import split_sizes
    return split_sizes(profile.dataset, profile.data_dir)


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """One dataset of the registry :data:`DATASETS`.

    Attributes:
        name: registry key (``Profile.dataset``, the ``dataset`` notebook parameter, ``--dataset``).
        title: how messages and tables name it ("NYUv2").
        tasks: the tasks it labels (keys of a split besides ``image``).
        seg_classes: the segmentation class counts it offers; the first is the default.
        classes_field: the :class:`~simo_lite.profiles.Profile` field that picks one of ``seg_classes``
            ("" when there is only one).
        native_hw: the stored (height, width) of its images; None for a rendered dataset (any size).
        from_files: read from ``data_dir`` (True) or rendered offline (False; the course's own
            foundation encoder is pretrained on it, so it needs no backbone).
        load: ``load(profile, split, seed, progress) -> Split`` for one split in :data:`SPLITS`.
        split_sizes: ``split_sizes(profile) -> {"train": n, "val": n, "test": n}``.
        folders: files only: ``{split key: sub-folder}`` of one folder (``{classes}`` is replaced by
            the class count).
        whole: files only: ``{split: folder}`` of the splits that are a whole folder.
        divided: files only: the folder split in two; its held-out part is the ``val`` split and the
            rest is the one split in neither ``whole`` nor ``val``.
        held_out: files only: the held-out share of ``divided`` as (k, total) of the paper's folder.
        disparity: files only: ``depth`` is inverse depth (augmentation multiplies it by the zoom).
    """
    name: str
    title: str
    tasks: tuple[str, ...]
    seg_classes: tuple[int, ...]
    classes_field: str = ""
    native_hw: tuple[int, int] | None = None
    from_files: bool = True
    load: Callable[["Profile", str, int, bool], Split] = _load_files
    split_sizes: Callable[["Profile"], dict[str, int]] = _file_sizes
    folders: Mapping[str, str] = field(default_factory=dict)
    whole: Mapping[str, str] = field(default_factory=dict)
    divided: str = ""
    held_out: tuple[int, int] = (0, 0)
    disparity: bool = False

    def __post_init__(self):
        if not self.seg_classes:
            raise ValueError(f"dataset {self.name!r}: seg_classes must name at least one class count")
        if len(self.seg_classes) > 1 and not self.classes_field:
            raise ValueError(f"dataset {self.name!r} offers {self.seg_classes} classes: name the Profile field "
                             f"that picks one (classes_field)")
        if self.from_files:
            if self.native_hw is None:
                raise ValueError(f"dataset {self.name!r} is read from files: give its native_hw (H, W)")
            keys = {"image", *self.tasks}
            if set(self.folders) != keys:
                raise ValueError(f"dataset {self.name!r}: folders must map exactly image and its tasks "
                                 f"({', '.join(sorted(keys))}), got {', '.join(sorted(self.folders)) or 'none'}")
            rest = [s for s in SPLITS if s not in self.whole and s != "val"]
            if "val" in self.whole or len(rest) != 1 or not self.divided or not 0 < self.held_out[0] < self.held_out[1]:
                raise ValueError(f"dataset {self.name!r}: val must be the held-out part (held_out = (k, total), "
                                 f"0 < k < total) of the divided folder, and exactly one other split must "
                                 f"come from it (whole: {dict(self.whole)}, divided: {self.divided!r})")
        object.__setattr__(self, "folders", MappingProxyType(dict(self.folders)))
        object.__setattr__(self, "whole", MappingProxyType(dict(self.whole)))

    def num_classes(self, profile: "Profile | None" = None) -> int:
        """Segmentation classes of this dataset under ``profile`` (its ``classes_field``), else the default."""
        if self.classes_field and profile is not None:
            return int(getattr(profile, self.classes_field))
        return self.seg_classes[0]

    def check_classes(self, classes: int | None) -> int:
        """``classes`` (None: the default) if this dataset offers that many, else a clear error."""
        if classes is None:
            return self.seg_classes[0]
        if int(classes) not in self.seg_classes:
            raise ValueError(f"{self.title} segmentation has {' or '.join(map(str, self.seg_classes))} classes, "
                             f"got classes={classes}")
        return int(classes)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS`; afterwards ``Profile(dataset=spec.name)``, the ``dataset``
    notebook parameter and ``--dataset`` accept it. A dataset in the MTAN file layout needs nothing
    else (see ``docs/real-data.md``)."""
    return DATASETS.register(spec.name, spec, replace=replace)


register_dataset(DatasetSpec(
    name="scenes", title="Scenes",
    tasks=("seg", "depth", "normals", "edges", "albedo", "shading", "texture_edges", "keypoints", "autoencoder"),
    seg_classes=(6,),           # len(simo_lite.scenes.CLASSES), checked by tests/test_datasets.py
    from_files=False, load=_load_rendered, split_sizes=_profile_sizes))
register_dataset(DatasetSpec(
    name="nyuv2", title="NYUv2", tasks=("seg", "depth", "normals"), seg_classes=(13,), native_hw=(288, 384),
    folders={"image": "image", "seg": "label", "depth": "depth", "normals": "normal"},
    # train = all of train/ (795); val/ (654, the official test images) -> 400 val + 254 test
    whole={"train": "train"}, divided="val", held_out=(400, 654)))
register_dataset(DatasetSpec(
    name="cityscapes", title="Cityscapes", tasks=("seg", "depth"), seg_classes=(7, 19),
    classes_field="cityscapes_classes", native_hw=(128, 256),
    folders={"image": "image", "seg": "label_{classes}", "depth": "depth"},
    # train/ (2975) -> 2380 train + 595 val; test = all of val/ (500, the official validation images)
    whole={"test": "val"}, divided="train", held_out=(595, 2975), disparity=True))


class _View(Mapping):
    """A read-only, always current ``{name: value}`` view of the registry (e.g. every dataset's tasks)."""

    def __init__(self, value: Callable[[DatasetSpec], object], keep: Callable[[DatasetSpec], bool] = lambda s: True):
        self._value, self._keep = value, keep

    def __getitem__(self, name: str):
        spec = DATASETS[name]                     # an unknown name: the registry's error, listing the valid ones
        if not self._keep(spec):
            raise KeyError(name)
        return self._value(spec)

    def __iter__(self) -> Iterator[str]:
        return (n for n, s in DATASETS.items() if self._keep(s))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return repr(dict(self))


# views of the registry under the names the package used before it (``datasets.DATASET_TASKS``,
# ``profiles.NATIVE_HW``): always current, read-only
DATASET_TASKS: Mapping[str, tuple[str, ...]] = _View(lambda s: s.tasks)                  # {dataset: its tasks}
NATIVE_HW: Mapping[str, tuple[int, int]] = _View(lambda s: s.native_hw,                  # {dataset: (H, W)}, files
                                                 keep=lambda s: s.native_hw is not None)


def load_data(profile: "Profile", seed: int = 0, splits: Iterable[str] | str = SPLITS,
              progress: bool = False) -> Splits:
    """The splits of a profile's dataset: ``{split: {key: tensor}}`` (``profile.dataset``'s loader).

    Scenes are rendered once, then cached; a dataset read from files comes from ``profile.data_dir``
    at the working size ``profile.input_hw`` (:mod:`simo_lite.datasets`). ``splits``: names in
    :data:`SPLITS` (a single name is one split)."""
    spec = DATASETS[profile.dataset]
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ValueError(f"unknown split {bad[0]!r}; valid: {', '.join(SPLITS)}" if bad else
                         f"no split to load; valid: {', '.join(SPLITS)}")
    return {s: spec.load(profile, s, seed, progress) for s in splits}

"""Profiles: every size, step count and batch size of the course in one place.

``smoke`` runs each stage in seconds (tests and CI), ``cpu`` is the classroom default (a ~1.6M
parameter encoder at 64 px, every stage in minutes on 2 cores), ``gpu`` is ViT-S sized (~21M
parameters) at 128 px with tens of thousands of scenes.

    >>> from simo_lite import profiles
    >>> p = profiles.get("smoke", batch_size=8)   # overrides are checked against the fields
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from .data import DATASETS, DEFAULT_DATASET, NATIVE_HW

if TYPE_CHECKING:
    import torch

__all__ = ["Profile", "PROFILES", "DATASETS", "NATIVE_HW", "get", "validate", "resolve_device", "evenly_spaced_taps"]

# DATASETS (the dataset registry, simo_lite.data: iterating gives the valid names) and NATIVE_HW
# ({dataset: native (H, W)} of the datasets read from files) are re-exported from simo_lite.data.


def evenly_spaced_taps(depth: int, n: int = 4) -> tuple[int, ...]:
    """Indices (0-based) of ``n`` evenly spaced blocks of a ``depth``-block encoder, the last included:
    12 blocks -> (2, 5, 8, 11) (the paper's blocks 3, 6, 9, 12). Fewer blocks than ``n``: every block."""
    if depth < 1:
        raise ValueError(f"an encoder needs at least 1 block, got depth={depth}")
    k = min(n, depth)
    return tuple(round((i + 1) * depth / k) - 1 for i in range(k))


@dataclass(frozen=True)
class Profile:
    name: str
    # data
    image_size: int            # pixels, square images
    n_train: int               # training scenes (experts, MTL, foundation)
    n_val: int                 # small multi-labelled validation split (alpha selection, realignment)
    n_test: int                # test scenes (every reported number)
    # encoder (timm VisionTransformer)
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    # training
    batch_size: int
    foundation_steps: int      # self-supervised pretraining steps
    probe_steps: int           # stage 1 of LP->FT: head only, encoder frozen
    finetune_steps: int        # stage 2 of LP->FT: encoder and head
    mtl_probe_steps: int
    mtl_finetune_steps: int
    realign_steps: int         # head / representation realignment steps on the val split
    lr_head: float = 3e-3          # heads of the linear probe (stage 1 of LP -> FT)
    lr_head_realign: float = 3e-3  # head realignment (the heads refitted on the merged encoder's features)
    lr_repr_realign: float = 1e-3  # representation realignment (adapters + heads)
    head_realign_steps: int = 0    # head realignment's steps per head (0: realign_steps)
    repr_realign_steps: int = 0    # representation realignment's steps (0: realign_steps)
    lr_finetune: float = 5e-4
    lr_foundation: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 25.0
    head: str = "linear"       # "linear" (paper's BN + 1x1 conv) or "conv" (small DPT-style)
    mask_ratio: float = 0.6    # foundation: fraction of patches masked
    invariance_steps: int = 0  # foundation stage 2: dense appearance invariance on Scenes views (0: none)
    foundation_seed: int | None = None  # the foundation of every run seed (None: each run seed pretrains its own)
    lr_invariance: float = 5e-4
    max_objects: int = 4
    # data and backbone: the offline Scenes course by default (see docs/real-data.md)
    dataset: str = DEFAULT_DATASET  # a name in simo_lite.data.DATASETS: "scenes", "nyuv2" or "cityscapes"
    data_dir: str = ""         # folder of a real dataset (ignored for scenes)
    backbone: str = ""         # a timm model name; empty: the course's own ViT (encoder fields above)
    weights: str = ""          # local weights file of ``backbone`` (safetensors or .pth); never downloaded
    cityscapes_classes: int = 7  # Cityscapes segmentation: the 7 categories or the 19 classes
    augment: bool = False      # random scale-crop and flip of training batches (real datasets)

    @property
    def head_steps(self) -> int:
        """Steps per head of head realignment: ``head_realign_steps``, or ``realign_steps`` when it is 0."""
        return self.head_realign_steps or self.realign_steps

    @property
    def repr_steps(self) -> int:
        """Steps of representation realignment: ``repr_realign_steps``, or ``realign_steps`` when it is 0."""
        return self.repr_realign_steps or self.realign_steps

    @property
    def taps(self) -> tuple[int, ...]:
        """Indices of the 4 evenly spaced blocks whose outputs feed the heads (0-based):
        :func:`evenly_spaced_taps` of ``depth``, as :func:`simo_lite.backbones.encoder_io` gives them
        for the encoder itself."""
        return evenly_spaced_taps(self.depth)

    @property
    def input_hw(self) -> tuple[int, int]:
        """Working (height, width) of images, labels and head outputs, in pixels.

        Scenes are square (``image_size``). A real dataset keeps its aspect ratio: ``image_size`` is
        the height (at most the stored height) before both sides are rounded down to multiples of
        the patch size (NYUv2 at 288 with patch 14 gives 280 x 378, the paper's crop)."""
        native = DATASETS[self.dataset].native_hw
        if native is None:                                     # rendered: any size
            return self.image_size, self.image_size
        h0, w0 = native
        scale = min(self.image_size, h0) / h0                 # never upsample beyond the stored size
        return (max(self.patch_size, int(h0 * scale) // self.patch_size * self.patch_size),
                max(self.patch_size, int(w0 * scale) // self.patch_size * self.patch_size))

    @property
    def seg_classes(self) -> int:
        """Segmentation classes of the dataset (Scenes 6, NYUv2 13, Cityscapes ``cityscapes_classes``: 7 or 19)."""
        return DATASETS[self.dataset].num_classes(self)

    def encoder_config(self) -> dict:
        """Arguments of ``models.make_encoder`` for the course's own ViT (``backbone`` empty)."""
        hw = self.input_hw
        return dict(img_size=hw[0] if hw[0] == hw[1] else hw, patch_size=self.patch_size,
                    embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads)

    def to_dict(self) -> dict:
        """Every field as ``{name: value}`` (``dataclasses.asdict``), e.g. for a store artifact's config."""
        return asdict(self)

    def training_dict(self) -> dict:
        """:meth:`to_dict` without the fields that only realignment reads (:data:`REALIGN_FIELDS`): the
        config of the experts and the MTL model, which a new realignment budget must not retrain."""
        return {k: v for k, v in asdict(self).items() if k not in REALIGN_FIELDS}


# the profile fields only realignment reads (not part of the experts' and the MTL model's keys)
REALIGN_FIELDS = ("realign_steps", "lr_head_realign", "lr_repr_realign", "head_realign_steps", "repr_realign_steps")


PROFILES: dict[str, Profile] = {
    "smoke": Profile(name="smoke", image_size=32, n_train=128, n_val=32, n_test=32,
                     patch_size=8, embed_dim=48, depth=4, num_heads=2, batch_size=16,
                     foundation_steps=10, probe_steps=6, finetune_steps=6,
                     mtl_probe_steps=6, mtl_finetune_steps=6, realign_steps=6),
    # cpu: experts and MTL fine-tune the same 800 steps (docs/preregistration.md, section 5: the larger
    # candidate budget, as 400 left validation loss falling); the foundation is SimMIM + 1,000 steps of
    # appearance invariance (data/foundation-cpu-invariant.safetensors); the experts and MTL models of
    # nyu3 and taskonomy5 at seed 0 are shipped in data/models-cpu/ (make experts). Both fixes use the learning
    # rate the same search chose (3e-3, benchmarks/realign_curves.py); the course realigns for 200 steps, less
    # than the benchmark's plateau budget (docs/results.md), so that the cpu course fits in its 15 minutes
    "cpu": Profile(name="cpu", image_size=64, n_train=3000, n_val=400, n_test=500,
                   patch_size=8, embed_dim=128, depth=8, num_heads=4, batch_size=32,
                   foundation_steps=800, probe_steps=150, finetune_steps=800,
                   mtl_probe_steps=150, mtl_finetune_steps=800, realign_steps=200, foundation_seed=0,
                   invariance_steps=1000, lr_repr_realign=3e-3),
    "gpu": Profile(name="gpu", image_size=128, n_train=30000, n_val=3000, n_test=2000,
                   patch_size=8, embed_dim=384, depth=12, num_heads=6, batch_size=64,
                   foundation_steps=6000, probe_steps=1000, finetune_steps=3000,
                   mtl_probe_steps=1000, mtl_finetune_steps=6000, realign_steps=2000, foundation_seed=0),
    # the paper's NYUv2 / Cityscapes set-up (docs/real-data.md): a DINOv2 backbone from a local file,
    # NYUv2 at 280 x 378 (image_size is the height before rounding to patch 14), batch 16 as in the
    # paper's Appendix C; split sizes and encoder fields are filled in from the data and the backbone.
    # Step counts follow the paper's epoch caps on 795 NYUv2 images (50 steps per epoch): experts
    # ~50 epochs, MTL and realignment more. Not run here (no GPU was available): see the docs.
    "paper": Profile(name="paper", image_size=288, n_train=795, n_val=400, n_test=254,
                     patch_size=14, embed_dim=768, depth=12, num_heads=12, batch_size=16,
                     foundation_steps=0, probe_steps=600, finetune_steps=1800,
                     mtl_probe_steps=600, mtl_finetune_steps=6000, realign_steps=2500,
                     lr_head=1e-3, lr_finetune=2e-5, lr_head_realign=1e-3, lr_repr_realign=4e-5, augment=True),
}


def get(profile: str | Profile = "cpu", **overrides: Any) -> Profile:
    """The named profile, with ``overrides`` of its fields applied (unknown fields raise)."""
    if isinstance(profile, Profile):
        base = profile
    elif profile in PROFILES:
        base = PROFILES[profile]
    else:
        raise ValueError(f"unknown profile {profile!r}; valid: {sorted(PROFILES)}")
    names = set(Profile.__dataclass_fields__)
    bad = set(overrides) - names
    if bad:
        raise ValueError(f"unknown profile field(s) {sorted(bad)}; valid: {sorted(names)}")
    return replace(base, **overrides)


def validate(profile: Profile) -> Profile:
    """Check the data and backbone fields; clear errors naming the valid values or the missing path."""
    from pathlib import Path
    spec = DATASETS[profile.dataset]     # an unknown name: "unknown dataset 'x'; valid: scenes, nyuv2, cityscapes"
    if spec.from_files:
        if not profile.data_dir:
            raise ValueError(f"dataset {profile.dataset!r} needs data_dir (the folder holding train/ and val/); "
                             f"see docs/real-data.md")
        if not Path(profile.data_dir).is_dir():
            raise FileNotFoundError(f"data_dir {profile.data_dir!r} is not a folder (dataset {profile.dataset!r}); "
                                    f"see docs/real-data.md for the expected layout")
    real = " or ".join(repr(n) for n, s in DATASETS.items() if s.from_files)
    if profile.name == "paper" and not spec.from_files:
        raise ValueError(f"the 'paper' profile is the paper's real-data set-up: give dataset={real} "
                         f"with data_dir, backbone and weights (docs/real-data.md)")
    if spec.from_files and not profile.backbone:
        raise ValueError(f"dataset {profile.dataset!r} needs a pretrained backbone (backbone=<timm name>, "
                         f"weights=<local file>): the shipped foundation encoder only knows "
                         f"{', '.join(s.title for s in DATASETS.values() if not s.from_files)}; "
                         f"see docs/real-data.md")
    if profile.weights and not profile.backbone:
        raise ValueError("weights given without backbone: name the timm model the file belongs to, "
                         "e.g. backbone='vit_small_patch14_dinov2.lvd142m'")
    if profile.backbone and not profile.weights:
        raise ValueError(f"backbone {profile.backbone!r} needs weights: a local file (nothing is downloaded); "
                         f"see docs/real-data.md")
    for s in DATASETS.values():          # every class-count field, as a profile may switch dataset later
        if s.classes_field and getattr(profile, s.classes_field) not in s.seg_classes:
            raise ValueError(f"{s.classes_field} must be {' or '.join(map(str, s.seg_classes))}, "
                             f"got {getattr(profile, s.classes_field)}")
    if profile.weights and not Path(profile.weights).is_file():
        raise FileNotFoundError(f"weights file {profile.weights!r} not found (backbone {profile.backbone!r})")
    return profile


def resolve_device(device: "str | torch.device" = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else is passed to torch.device."""
    import torch    # here, not at the top: the course runner reads profiles without importing torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"bad device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev

"""Encoder, heads and the shared-bottom SIMO model.

Shapes (B batch, C encoder width, L taps, h = w = image_size / patch_size, T tasks):

    images (B, 3, H, W) in [0, 1]
      -> encoder (timm VisionTransformer), input scaled to [-1, 1] as in the paper
      -> features (B, L, 2C, h, w): the outputs of L = 4 evenly spaced blocks, each patch token
         concatenated with that block's CLS token broadcast over the grid (paper: blocks 3, 6, 9, 12 + CLS)
      -> heads[task] (B, channels_task, H, W), raw outputs (logits, metres, ...)

Heads only ever see ``features``, so head realignment can cache them once per merged encoder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from .backbones import encoder_io
from .registry import Registry
from .tasks import get_task

__all__ = ["make_encoder", "encoder_features", "LinearHead", "ConvHead", "make_head", "SimoModel",
           "count_parameters", "HEADS", "HeadKind", "register_head"]


def make_encoder(img_size: int | tuple[int, int] = 64, patch_size: int = 8, embed_dim: int = 128, depth: int = 8,
                 num_heads: int = 4, seed: int | None = None) -> VisionTransformer:
    """A timm ``VisionTransformer`` with a CLS token and no classifier (``num_classes=0``).

    With ``seed`` the random initialisation is reproducible (the global RNG is restored after).
    """
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
    if any(s % patch_size for s in ((img_size,) if isinstance(img_size, int) else img_size)):
        raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        return VisionTransformer(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
                                 num_heads=num_heads, num_classes=0, class_token=True)


def encoder_features(encoder: VisionTransformer, images: torch.Tensor, taps: Sequence[int]) -> torch.Tensor:
    """Head-input features (B, L, 2C, h, w) of ``images`` (B, 3, H, W) in [0, 1] at blocks ``taps``."""
    x = encoder_io(encoder).transform(images)                             # paper: [-1, 1] input
    outs = encoder.forward_intermediates(x, indices=list(taps), return_prefix_tokens=True, norm=False,
                                         output_fmt="NCHW", intermediates_only=True, stop_early=True)
    feats = []
    for patch, prefix in outs:                                            # (B, C, h, w), (B, 1, C)
        cls = prefix[:, 0, :, None, None].expand(-1, -1, *patch.shape[-2:])  # (B, C, h, w)
        feats.append(torch.cat([patch, cls], 1))                          # (B, 2C, h, w)
    return torch.stack(feats, 1)                                          # (B, L, 2C, h, w)


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class LinearHead(nn.Module):
    """The paper's linear head (DINOv2 ``BNHead``): BN -> 1x1 conv -> bilinear upsample.

    (B, L, 2C, h, w) -> flatten taps (B, L*2C, h, w) -> BatchNorm -> 1x1 conv (B, out, h, w)
    -> bilinear (B, out, H, W).
    """

    def __init__(self, in_channels: int, num_taps: int, out_channels: int, out_size: int | tuple[int, int]):
        super().__init__()
        self.out_size = _hw(out_size)
        self.norm = nn.BatchNorm2d(in_channels * num_taps)
        self.proj = nn.Conv2d(in_channels * num_taps, out_channels, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Features (B, L, 2C, h, w) -> raw outputs (B, out, H, W)."""
        x = feats.flatten(1, 2)                                           # (B, L*2C, h, w)
        x = self.proj(self.norm(x))                                       # (B, out, h, w)
        return F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)


class ConvHead(nn.Module):
    """A small DPT-style convolutional head: project each tap, fuse, then upsample x2 with 3x3 convs.

    (B, L, 2C, h, w) -> per-tap 1x1 to ``width`` and sum (B, width, h, w) -> [conv3x3-BN-ReLU, x2 up]
    until the image size -> 1x1 conv (B, out, H, W).
    """

    def __init__(self, in_channels: int, num_taps: int, out_channels: int, out_size: int | tuple[int, int],
                 width: int = 64):
        super().__init__()
        self.out_size = _hw(out_size)
        self.project = nn.ModuleList(nn.Conv2d(in_channels, width, 1) for _ in range(num_taps))
        self.refine = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.up = nn.Sequential(nn.Conv2d(width, width // 2, 3, padding=1), nn.BatchNorm2d(width // 2), nn.ReLU())
        self.out = nn.Conv2d(width // 2, out_channels, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Features (B, L, 2C, h, w) -> raw outputs (B, out, H, W)."""
        x = sum(p(feats[:, i]) for i, p in enumerate(self.project))      # (B, width, h, w)
        x = self.refine(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # (B, width, 2h, 2w)
        x = self.up(x)                                                    # (B, width/2, 2h, 2w)
        x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)
        return self.out(x)                                                # (B, out, H, W)


@dataclass(frozen=True)
class HeadKind:
    """A head architecture in the registry :data:`HEADS` (``Profile.head`` names one).

    Attributes:
        name: registry key ("linear", "conv").
        build: ``build(in_channels, num_taps, out_channels, out_size) -> nn.Module``, mapping features
            (B, L, in_channels, h, w) to raw outputs (B, out_channels, H, W).
        output_layer: attribute of the built head holding its last layer (a conv with a bias), whose
            bias :func:`make_head` sets to the task's ``output_bias``.
        label: how tables and notebooks name it.
    """
    name: str
    build: Callable[..., nn.Module]
    output_layer: str
    label: str = ""


HEADS: Registry[HeadKind] = Registry("head")


def register_head(name: str, build: Callable[..., nn.Module], output_layer: str, *, label: str = "",
                  replace: bool = False) -> HeadKind:
    """Add a head architecture to :data:`HEADS`; ``make_head(name, ...)`` and ``Profile(head=name)``
    then build it."""
    return HEADS.register(name, HeadKind(name, build, output_layer, label or name), replace=replace)


register_head("linear", LinearHead, "proj", label="linear (BN + 1x1 conv)")
register_head("conv", ConvHead, "out", label="conv (DPT-style)")


def make_head(kind: str, task: str, embed_dim: int, num_taps: int, out_size: int | tuple[int, int],
              channels: int | None = None) -> nn.Module:
    """Head ``kind`` (a name in :data:`HEADS`: 'linear' or 'conv') for ``task``, reading features of
    width 2 * embed_dim; an unknown ``kind`` raises ``ValueError`` naming the registered ones.

    ``channels`` overrides the task's output channels (segmentation: the dataset's class count)."""
    spec = HEADS[kind]
    head = spec.build(2 * embed_dim, num_taps, channels or get_task(task).channels, out_size)
    nn.init.constant_(getattr(head, spec.output_layer).bias, get_task(task).output_bias)
    return head


class SimoModel(nn.Module):
    """Shared-bottom multi-output model: one encoder, one head per task.

    ``forward(images)`` returns ``{task: raw output (B, C_task, H, W)}``.
    """

    def __init__(self, encoder: VisionTransformer, heads: dict[str, nn.Module], taps):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        self.taps = tuple(taps)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The model's task names, in head order."""
        return tuple(self.heads.keys())

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Head-input features (B, L, 2C, h, w) of ``images`` (B, 3, H, W) in [0, 1] (:func:`encoder_features`)."""
        return encoder_features(self.encoder, images, self.taps)         # (B, L, 2C, h, w)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{task: raw output (B, C_task, H, W)}`` of ``images`` (B, 3, H, W) in [0, 1]; the encoder runs once."""
        feats = self.features(images)
        return {t: head(feats) for t, head in self.heads.items()}


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of ``module``; only those with ``requires_grad`` when ``trainable_only``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

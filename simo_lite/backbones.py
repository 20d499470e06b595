"""Pretrained timm ViT backbones (e.g. DINOv2) from a LOCAL weights file; nothing is downloaded.

    >>> enc = load_backbone("vit_small_patch14_dinov2.lvd142m", "/weights/dinov2_vits14.safetensors",
    ...                     img_size=snap_size((288, 384), 14))          # (280, 378), the paper's crop
    >>> feats = encoder_features(enc, images, backbone_taps(enc))       # (B, 4, 2C, 20, 27)

The weights go through timm's own loading path (``pretrained_cfg_overlay=dict(file=...)``), so timm's
checkpoint filter applies: Meta's original DINOv2 ``.pth`` files are converted to timm's layout and
the position embedding is resampled (bicubic) when ``img_size`` differs from the pretraining size
(518 x 518 for DINOv2). safetensors and torch (``.pth`` / ``.bin`` / ``.pt``) files both work.

Shapes (B batch, C = ``embed_dim(encoder)``, patch p, working size (H, W) = multiples of p):
images (B, 3, H, W) in [0, 1] -> ``input_transform(encoder)(images)`` -> encoder tokens
(B, prefix + H/p * W/p, C); the prefix tokens are [CLS, registers...] (CLS first, also for the
DINOv2 ``reg4`` variants), which :func:`simo_lite.models.encoder_features` relies on.

Input normalisation: the course's own ViT, and the paper's code, feed ``2 * x - 1``. A pretrained
backbone was trained on ``(x - mean) / std`` with its ``pretrained_cfg`` mean and std (ImageNet
statistics for DINOv2); :func:`input_transform` returns either.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from .profiles import evenly_spaced_taps

__all__ = ["load_backbone", "make_backbone", "backbone_dims", "backbone_taps", "embed_dim", "snap_size",
           "input_transform", "InputTransform", "BackboneError", "EncoderIO", "encoder_io", "PIPELINE_INPUT"]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class BackboneError(ValueError):
    """A weights file that does not fit the named timm architecture (or cannot be read)."""


def _timm():
    import timm
    return timm


def _check_name(name: str) -> None:
    timm = _timm()
    if not isinstance(name, str) or not name:
        raise ValueError(f"backbone must be a timm model name, got {name!r}")
    if ":" in name:
        raise ValueError(f"backbone {name!r}: give a plain timm model name (e.g. 'vit_small_patch14_dinov2.lvd142m'), "
                         f"not a hub or local-dir reference; the weights come from the local file")
    if not timm.is_model(name):
        base = name.split(".")[0]
        close = timm.list_models(f"*{base.split('_')[0]}*{base.split('_')[-1]}*")[:8] if "_" in base else []
        raise ValueError(f"unknown timm model {name!r}" + (f"; similar: {', '.join(close)}" if close else "")
                         + " (timm.list_models() lists them all)")


def _check_vit(model: nn.Module, name: str) -> None:
    from timm.models.vision_transformer import VisionTransformer
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"backbone {name!r} is a {type(model).__name__}, not a timm VisionTransformer "
                         f"(simo_lite needs forward_intermediates with a CLS token)")
    if not getattr(model, "num_prefix_tokens", 0) or model.cls_token is None:
        raise ValueError(f"backbone {name!r} has no CLS token; simo_lite's heads read patch tokens + CLS")


def _kwargs(img_size, kwargs: dict) -> dict:
    kw = dict(num_classes=0, **kwargs)
    if img_size is not None:
        kw["img_size"] = tuple(int(s) for s in img_size) if not isinstance(img_size, int) else int(img_size)
    return kw


def make_backbone(name: str, img_size: int | tuple[int, int] | None = None, seed: int | None = None,
                  **kwargs: Any) -> nn.Module:
    """An untrained timm ViT ``name`` (random init, reproducible with ``seed``), no classifier.

    Same architecture and state-dict keys as :func:`load_backbone` with the same ``img_size`` and
    ``kwargs``, so its ``load_state_dict`` takes a loaded backbone's weights.
    """
    _check_name(name)
    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        model = _timm().create_model(name, pretrained=False, **_kwargs(img_size, kwargs))
    _check_vit(model, name)
    return model


def backbone_dims(name: str, **kwargs: Any) -> dict[str, int]:
    """The Profile fields of timm model ``name``: {'patch_size', 'embed_dim', 'depth', 'num_heads'}.

    Built on the ``meta`` device (no memory, no weights), so it is instant even for ViT-g.
    """
    _check_name(name)
    with torch.device("meta"):
        model = _timm().create_model(name, pretrained=False, **_kwargs(None, kwargs))
    _check_vit(model, name)
    ph, pw = model.patch_embed.patch_size
    if ph != pw:
        raise ValueError(f"backbone {name!r} has non-square patches {ph}x{pw}; simo_lite needs square patches")
    return dict(patch_size=int(ph), embed_dim=int(model.embed_dim), depth=len(model.blocks),
                num_heads=int(model.blocks[0].attn.num_heads))


class _Capture(logging.Handler):
    """Collects timm's 'Missing keys' / 'Unexpected keys' log records during a load."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def _state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    from timm.models import load_state_dict
    return load_state_dict(str(path), weights_only=True)


# torch.save's file formats: a zip archive (torch >= 1.6) or a legacy pickle stream (protocol 2+)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _check_file_format(path: Path) -> None:
    """Reject a weights file that is not even the container its suffix claims, naming the file.

    A torch file (.pth / .pt / .bin) must be a zip archive or a pickle stream; a .safetensors file
    must start with an 8-byte header length and a JSON header. Random bytes, HTML error pages,
    truncated downloads or empty files stop here with a message that says so, instead of torch's
    unpickler errors (whose advice to load with ``weights_only=False`` would be wrong, and unsafe)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors":
        n = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
        if size < 10 or not 2 <= n <= size - 8 or head[8:9] != b"{":
            raise BackboneError(f"weights file {path} is not a valid safetensors file ({size:,} bytes; "
                                f"expected an 8-byte header length and a JSON header): truncated, or another "
                                f"format renamed? Re-download or re-export it")
        return
    is_zip = head[:4] in _ZIP_MAGIC
    is_pickle = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
    if not (is_zip or is_pickle):
        raise BackboneError(f"weights file {path} is not a valid PyTorch checkpoint ({size:,} bytes, first bytes "
                            f"{head[:8].hex(' ')}): neither a torch.save zip archive nor a pickle. Is it truncated, "
                            f"or another format with a {path.suffix} name? Re-download it, or save the state dict "
                            f"again with torch.save(model.state_dict(), ...) or safetensors")


def _torch_error(e: BaseException) -> str:
    """torch's load error without its advice to retry with weights_only=False (never a fix here:
    simo_lite loads weights only and does not run pickled code)."""
    msg = f"{type(e).__name__}: {e}"
    if "weights_only" in msg:
        first = msg.split("\n")[0]
        keep = [part for part in first.replace("weights_only=True blocked", "blocked").split(". ")
                if "weights_only" not in part and "unsafe" not in part.lower()]
        msg = ". ".join(keep).rstrip(".") + (". The file holds pickled Python objects other than tensors; "
                                             "simo_lite loads weights only (no pickled code): save a plain "
                                             "state dict of tensors (torch.save(model.state_dict(), ...)) or "
                                             "convert it to safetensors")
    return msg


def _describe_mismatch(name: str, path: Path, img_size, kwargs: dict, cause: BaseException | str) -> BackboneError:
    """A BackboneError naming the file and a few missing / unexpected keys and shape mismatches."""
    with torch.device("meta"):
        ref = _timm().create_model(name, pretrained=False, **_kwargs(img_size, kwargs))
    expected = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    try:
        sd = _state_dict_of(path)
        try:
            from timm.models.vision_transformer import checkpoint_filter_fn
            sd = checkpoint_filter_fn(dict(sd), ref)
        except Exception:  # noqa: BLE001 - the filter itself may choke on a foreign file; compare raw keys
            pass
        found = {k: tuple(v.shape) for k, v in sd.items() if torch.is_tensor(v)}
    except Exception as e:  # noqa: BLE001
        return BackboneError(f"weights file {path} could not be read as a state dict for {name!r}: "
                             f"{_torch_error(e)}")
    head = ("head.", "fc_norm.")  # classifier weights are dropped by design (num_classes=0)
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected and not k.startswith(head)]
    shapes = [k for k in expected if k in found and found[k] != expected[k] and k != "pos_embed"]
    dims = ", ".join(f"{k} {v}" for k, v in _dims_of(ref).items())
    parts = [f"weights file {path} does not fit timm model {name!r} ({dims}"
             + (f", kwargs {kwargs}" if kwargs else "") + ")."]
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. "
                     + ", ".join(f"{k} {expected[k]}" for k in missing[:5]) + ".")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. "
                     + ", ".join(f"{k} {found[k]}" for k in unexpected[:5]) + ".")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es), e.g. " + ", ".join(
            f"{k}: file {found[k]}, model expects {expected[k]}" for k in shapes[:5]) + ".")
    text = _torch_error(cause) if isinstance(cause, BaseException) else cause
    lines = [ln.strip() for ln in text.strip().splitlines()
             if ln.strip() and not ln.startswith("Error(s) in loading")]
    first = (lines[0][:200] + ("..." if len(lines[0]) > 200 else "")) if lines else type(cause).__name__
    parts.append(f"Is the model name (and are its kwargs) right for this file? (timm: {first})")
    return BackboneError(" ".join(parts))


def _dims_of(model) -> dict:
    return dict(embed_dim=int(model.embed_dim), depth=len(model.blocks),
                patch=int(model.patch_embed.patch_size[0]))


def load_backbone(name: str, weights: str | Path, img_size: int | tuple[int, int] | None = None,
                  **kwargs: Any) -> nn.Module:
    """timm ViT ``name`` with the weights of the local file ``weights``, no classifier (``num_classes=0``).

    Args:
        name: a timm model name with or without its pretrained tag, e.g.
            'vit_small_patch14_dinov2.lvd142m', 'vit_base_patch14_reg4_dinov2.lvd142m'.
        weights: a local safetensors or torch (.pth/.bin/.pt) state dict of that model, in timm's
            layout or Meta's original DINOv2 layout. Never downloaded; no network access is attempted.
        img_size: working (H, W) (or an int for square) in pixels, multiples of the patch size
            (:func:`snap_size`); the position embedding is resampled to it on load. None keeps the
            pretraining size.
        **kwargs: passed to ``timm.create_model`` (e.g. ``depth``, ``embed_dim``, ``num_heads`` for
            small test models, ``dynamic_img_size=True``, ``drop_path_rate``).

    Raises:
        FileNotFoundError: ``weights`` is not a file (the message names it).
        BackboneError (a ValueError): the file does not fit the architecture (the message names the
            file and lists a few missing / unexpected keys and mismatched shapes), or it is not a
            valid safetensors / PyTorch file at all (random bytes, truncated, another format).
    """
    _check_name(name)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found (backbone {name!r}); nothing is downloaded, "
                                f"see docs/real-data.md for where to get the weights")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise BackboneError(f"weights file {path}: unknown format {path.suffix!r}; expected one of "
                            f"{', '.join(WEIGHT_SUFFIXES)}")
    _check_file_format(path)
    if img_size is not None:
        patch = backbone_dims(name, **kwargs)["patch_size"]
        hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if any(int(s) % patch for s in hw):
            raise ValueError(f"img_size {hw} is not a multiple of the patch size {patch} of {name!r}; "
                             f"use snap_size({hw}, {patch}) = {snap_size(hw, patch)}")
    logger = logging.getLogger("timm.models._builder")
    capture, old_level, old_propagate = _Capture(), logger.level, logger.propagate
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        model = _timm().create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                     **_kwargs(img_size, kwargs))
    except (RuntimeError, ValueError, KeyError, AssertionError, TypeError) as e:
        if isinstance(e, TypeError) and "unexpected keyword" in str(e):
            raise
        raise _describe_mismatch(name, path, img_size, kwargs, e) from e
    except Exception as e:  # noqa: BLE001 - e.g. a corrupt file
        raise BackboneError(f"weights file {path} could not be loaded for {name!r}: {_torch_error(e)}") from e
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
    bad = [r for r in capture.records if r.getMessage().startswith(("Missing keys", "Unexpected keys"))]
    if bad:  # timm loads non-strictly when it drops a classifier: treat stray keys as a mismatch
        raise _describe_mismatch(name, path, img_size, kwargs, bad[0].getMessage())
    for r in capture.records:  # pass timm's other warnings on as usual
        if r.levelno >= logging.WARNING:
            logger.handle(r)
    _check_vit(model, name)
    return model


def backbone_taps(encoder: nn.Module) -> tuple[int, ...]:
    """4 evenly spaced block indices (0-based), like ``Profile.taps``: 12 blocks -> (2, 5, 8, 11)
    (:func:`simo_lite.profiles.evenly_spaced_taps` of the encoder's depth)."""
    return evenly_spaced_taps(len(encoder.blocks))


def embed_dim(encoder: nn.Module) -> int:
    """Token width C of the encoder (head inputs have 2C channels: patch token + CLS)."""
    return int(encoder.embed_dim)


def snap_size(hw: int | tuple[int, int], patch: int, mode: str = "floor") -> tuple[int, int]:
    """(H, W) (or an int for square) rounded to multiples of ``patch``, at least one patch each.

    ``mode``: 'floor' (default; never larger than the data, NYUv2 (288, 384) -> (280, 378), the
    paper's crop), 'nearest' or 'ceil'.
    """
    if mode not in ("floor", "nearest", "ceil"):
        raise ValueError(f"unknown mode {mode!r}; valid: floor, nearest, ceil")
    hw = (hw, hw) if isinstance(hw, int) else tuple(hw)
    if len(hw) != 2 or patch < 1:
        raise ValueError(f"snap_size needs (H, W) and a patch size >= 1, got {hw!r}, {patch}")
    rnd = {"floor": lambda v: v // patch, "ceil": lambda v: -(-v // patch),
           "nearest": lambda v: int(v / patch + 0.5)}[mode]
    return tuple(max(1, rnd(int(v))) * patch for v in hw)


class InputTransform:
    """Maps images (B, 3, H, W) in [0, 1] to the encoder's input: ``(x - mean) / std`` per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.mean == self.std == (0.5, 0.5, 0.5):
            return images * 2 - 1                      # the same values, as the pipeline always computed them
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return (images - mean) / std

    def __repr__(self) -> str:
        return f"InputTransform(mean={self.mean}, std={self.std})"

    def __eq__(self, other) -> bool:
        return isinstance(other, InputTransform) and (self.mean, self.std) == (other.mean, other.std)


def input_transform(encoder: nn.Module, mode: str = "pretrained") -> InputTransform:
    """The normalisation of [0, 1] images for ``encoder``.

    ``mode='pretrained'``: the mean / std of the encoder's timm ``pretrained_cfg`` (DINOv2: ImageNet
    mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)); encoders without one (the course's own
    ViT) get the [-1, 1] scaling. ``mode='paper'``: always ``2 * x - 1`` (mean = std = 0.5), what the
    course's own ViT and the paper's code use, also for DINOv2.
    """
    if mode == "paper":
        return InputTransform((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    if mode != "pretrained":
        raise ValueError(f"unknown mode {mode!r}; valid: pretrained, paper")
    cfg = getattr(encoder, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if not mean or not std:
        return InputTransform((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return InputTransform(mean, std)


# the input normalisation the pipeline feeds every encoder (course ViT and pretrained backbones alike):
# the paper's code scales images to [-1, 1], also for DINOv2
PIPELINE_INPUT = "paper"


class EncoderIO:
    """How the pipeline talks to an encoder: ``transform`` maps images (B, 3, H, W) in [0, 1] to the
    encoder's input, and the outputs of blocks ``taps`` (0-based) feed the heads."""

    def __init__(self, transform: InputTransform, taps: tuple[int, ...]):
        self.transform, self.taps = transform, tuple(taps)

    def __repr__(self) -> str:
        return f"EncoderIO(transform={self.transform!r}, taps={self.taps})"

    def __eq__(self, other) -> bool:
        return isinstance(other, EncoderIO) and (self.transform, self.taps) == (other.transform, other.taps)


def encoder_io(encoder: nn.Module, mode: str = PIPELINE_INPUT) -> EncoderIO:
    """The input transform and tapped blocks of ``encoder``, derived from the encoder itself.

    ``transform``: :func:`input_transform` (``mode='paper'``, the pipeline's: ``2 * x - 1`` for every
    encoder; ``'pretrained'``: the backbone's own mean / std); ``taps``: :func:`backbone_taps`, 4 evenly
    spaced blocks (equal to ``Profile.taps`` of a profile whose ``depth`` is the encoder's). Used by
    ``training.build_model`` (the model's taps), the foundation's pretraining (its input) and
    ``models.encoder_features``."""
    return EncoderIO(input_transform(encoder, mode), backbone_taps(encoder))

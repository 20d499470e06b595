"""The checks of notebook 06 (Representation realignment): ``check_lora_param_count``, ``check_fold_lora``."""
from __future__ import annotations

from typing import Callable

import torch

from ._core import _call, _run, _tensor, _number, _gen

__all__ = ["check_lora_param_count", "check_fold_lora"]


def _tiny_lora(rank: int, embed_dim: int = 16, depth: int = 2, seed: int = 0):
    from simo_lite.models import make_encoder
    from simo_lite.realign import add_lora
    enc = make_encoder(img_size=16, patch_size=8, embed_dim=embed_dim, depth=depth, num_heads=4, seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        wrapper = add_lora(enc, rank=rank)
    return enc, wrapper


def check_lora_param_count(fn: Callable, strict: bool = False) -> bool:
    """``fn(depth, embed_dim, rank) -> int``: LoRA parameters on qkv, proj, fc1 and fc2 of every block.

    Compared with the trainable ``lora_`` parameters PEFT adds through :func:`simo_lite.realign.add_lora`
    to a small ViT (MLP ratio 4).
    """
    def body(fn):
        for depth, c, r in ((2, 16, 4), (1, 32, 2)):
            enc, _ = _tiny_lora(r, embed_dim=c, depth=depth)
            expected = sum(p.numel() for n, p in enc.named_parameters() if "lora_" in n)
            case = f"depth={depth}, embed_dim={c}, rank={r}"
            _number(_call(fn, case, depth, c, r), expected, "the LoRA parameter count", case, integer=True)
    return _run("LoRA parameter count", fn, body, strict)


def check_fold_lora(fn: Callable, strict: bool = False) -> bool:
    """``fn(weight, lora_A, lora_B, scaling) -> tensor``: the folded weight W + scaling · B A.

    ``weight`` (out, in), ``lora_A`` (r, in), ``lora_B`` (out, r). Compared with the weight that
    :func:`simo_lite.realign.fold_lora` (PEFT's merge_and_unload) writes into a small ViT.
    """
    from simo_lite.realign import fold_lora

    def body(fn):
        enc, wrapper = _tiny_lora(4)
        g = _gen(18)
        layers = {}
        with torch.no_grad():
            for name in ("blocks.0.attn.qkv", "blocks.1.mlp.fc2"):
                layer = enc.get_submodule(name)
                layer.lora_B["default"].weight.copy_(0.1 * torch.randn(layer.lora_B["default"].weight.shape,
                                                                         generator=g))
                layers[name] = (layer.base_layer.weight.clone(), layer.lora_A["default"].weight.clone(),
                                layer.lora_B["default"].weight.clone(), float(layer.scaling["default"]))
        folded = fold_lora(wrapper)
        for name, (w, a, b, s) in layers.items():
            case = f"{name}: weight {tuple(w.shape)}, rank {a.shape[0]}, scaling {s}"
            _tensor(_call(fn, case, w.clone(), a.clone(), b.clone(), s), folded.get_submodule(name).weight,
                    "the folded weight", case, atol=1e-6, rtol=1e-5, check_dtype="exact")
            w2, s2 = w.clone(), 0.5
            case = f"{name} with scaling {s2}"
            _tensor(_call(fn, case, w2, a.clone(), b.clone(), s2), w + s2 * b @ a, "the folded weight", case,
                    atol=1e-6, rtol=1e-5, check_dtype="exact")
    return _run("folding LoRA", fn, body, strict)

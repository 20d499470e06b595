"""Pretrained timm backbones from local weights files (fixture checkpoints; no network)."""
from __future__ import annotations

import re
import socket

import pytest
import torch

from simo_lite import backbones as bb
from simo_lite import fixtures
from simo_lite.models import encoder_features

DINO, DINO_KW = fixtures.TINY_DINOV2          # vit_small_patch14_dinov2 shrunk: C=32, 4 blocks, 2 heads
REG, REG_KW = fixtures.TINY_DINOV2_REG


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test runs with sockets unable to connect: any download attempt fails loudly."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    return dict(
        test_vit=fixtures.write_backbone_checkpoint(d / "test_vit.safetensors"),
        test_vit_pth=fixtures.write_backbone_checkpoint(d / "test_vit.pth", head=True),
        dino=fixtures.write_backbone_checkpoint(d / "dino.safetensors", DINO, **DINO_KW),
        reg=fixtures.write_backbone_checkpoint(d / "reg.pth", REG, seed=1, **REG_KW),
    )


def _images(b=2, hw=(56, 84), seed=0):
    return torch.rand(b, 3, *hw, generator=torch.Generator().manual_seed(seed))


def test_checkpoint_loads_back_bit_for_bit(weights):
    saved = bb.make_backbone(fixtures.FIXTURE_BACKBONE, seed=0).eval()        # what the fixture saved
    for key in ("test_vit", "test_vit_pth"):                                  # safetensors, torch + classifier
        enc = bb.load_backbone(fixtures.FIXTURE_BACKBONE, weights[key]).eval()
        assert enc.num_classes == 0
        assert enc.state_dict().keys() == saved.state_dict().keys()
        assert all(torch.equal(v, enc.state_dict()[k]) for k, v in saved.state_dict().items())
        x = _images(hw=(160, 160))
        with torch.no_grad():
            assert torch.equal(enc.forward_features(x), saved.forward_features(x))
    with torch.no_grad():
        fresh = bb.make_backbone(fixtures.FIXTURE_BACKBONE, seed=1).eval()
        assert not torch.equal(fresh.forward_features(x), saved.forward_features(x))


def test_dinov2_at_a_patch14_working_size_feeds_encoder_features(weights):
    hw = bb.snap_size((64, 90), 14)
    assert hw == (56, 84)
    enc = bb.load_backbone(DINO, weights["dino"], img_size=hw, **DINO_KW).eval()
    assert enc.patch_embed.img_size == hw and enc.pos_embed.shape == (1, 1 + 4 * 6, 32)
    assert bb.backbone_taps(enc) == (0, 1, 2, 3) and bb.embed_dim(enc) == 32
    with torch.no_grad():
        f = encoder_features(enc, _images(hw=hw), bb.backbone_taps(enc))
    assert f.shape == (2, 4, 64, 4, 6) and torch.isfinite(f).all()
    # the weights other than the (resampled) position embedding are the file's
    native = bb.load_backbone(DINO, weights["dino"], **DINO_KW)
    assert native.pos_embed.shape == (1, 1 + 37 * 37, 32)                     # the 518 px pretraining grid
    assert torch.equal(native.blocks[3].mlp.fc2.weight, enc.blocks[3].mlp.fc2.weight)
    # resampling the 37 x 37 grid to 4 x 6 gives the same embedding as timm's resampler
    from timm.layers import resample_abs_pos_embed
    ref = resample_abs_pos_embed(native.pos_embed.detach(), new_size=(4, 6), num_prefix_tokens=1)
    assert torch.allclose(ref, enc.pos_embed.detach(), atol=1e-6)


def test_register_tokens_keep_cls_first(weights):
    hw = (28, 42)
    enc = bb.load_backbone(REG, weights["reg"], img_size=hw, **REG_KW).eval()
    assert enc.num_prefix_tokens == 5 and enc.num_reg_tokens == 4
    seen = {}
    enc.blocks[0].register_forward_pre_hook(lambda m, args: seen.setdefault("in", args[0]))
    enc.blocks[1].register_forward_hook(lambda m, args, out: seen.setdefault("out", out))
    x = _images(hw=hw)
    with torch.no_grad():
        f = encoder_features(enc, x, (1,))                                    # tap block 1
    tokens = seen["in"]                                                       # (B, 5 + 2*3, C) entering block 0
    assert torch.equal(tokens[:, 0], enc.cls_token[0, 0].expand(2, -1))       # token 0 is CLS
    assert torch.equal(tokens[:, 1:5], enc.reg_token[0].expand(2, -1, -1))    # then the 4 registers
    # encoder_features' CLS channels are token 0 of the tapped block's output, broadcast over the grid
    C = bb.embed_dim(enc)
    assert f.shape == (2, 1, 2 * C, 2, 3)
    assert torch.allclose(f[:, 0, C:, 1, 2], seen["out"][:, 0], atol=1e-6)
    assert torch.allclose(f[:, 0, :C].flatten(2).transpose(1, 2), seen["out"][:, 5:], atol=1e-6)


def test_make_backbone_matches_the_loaded_architecture(weights):
    hw = (56, 84)
    enc = bb.load_backbone(DINO, weights["dino"], img_size=hw, **DINO_KW)
    blank = bb.make_backbone(DINO, img_size=hw, seed=3, **DINO_KW)
    again = bb.make_backbone(DINO, img_size=hw, seed=3, **DINO_KW)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in blank.state_dict().items())
    blank.load_state_dict(enc.state_dict())                                   # strict: same keys and shapes
    assert bb.backbone_dims(DINO, **DINO_KW) == dict(patch_size=14, embed_dim=32, depth=4, num_heads=2)
    assert bb.backbone_dims("vit_base_patch14_dinov2.lvd142m") == dict(patch_size=14, embed_dim=768,
                                                                          depth=12, num_heads=12)
    assert bb.backbone_dims(fixtures.FIXTURE_BACKBONE) == dict(patch_size=16, embed_dim=64, depth=6, num_heads=2)


def test_missing_file_and_wrong_architecture_are_named(weights, tmp_path):
    missing = tmp_path / "dinov2_vits14.safetensors"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        bb.load_backbone(DINO, missing)
    # the full-size architecture for the tiny file: shapes differ
    with pytest.raises(bb.BackboneError, match=re.escape(str(weights["dino"]))) as e:
        bb.load_backbone(DINO, weights["dino"])
    msg = str(e.value)
    assert "shape mismatch" in msg and "cls_token: file (1, 1, 32), model expects (1, 1, 384)" in msg
    assert "missing key" in msg and "blocks.4." in msg                          # 12 blocks expected, 4 in the file
    # one block too many: missing keys named with their expected shapes
    with pytest.raises(bb.BackboneError, match=r"missing key\(s\), e\.g\. blocks\.4\.norm1\.weight \(32,\)"):
        bb.load_backbone(DINO, weights["dino"], **{**DINO_KW, "depth": 5})
    # a DINOv2 file for a classifier model whose head timm drops (non-strict path): stray keys still fail
    with pytest.raises(bb.BackboneError, match=re.escape(str(weights["dino"])) + ".*vit_small_patch14_reg4"):
        bb.load_backbone("vit_small_patch14_reg4_dinov2", weights["dino"], **DINO_KW)
    with pytest.raises(bb.BackboneError, match="test_vit.safetensors.*shape mismatch"):
        bb.load_backbone("vit_tiny_patch16_224.augreg_in21k", weights["test_vit"])
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(bb.BackboneError, match=re.escape(str(bad))):
        bb.load_backbone(DINO, bad, **DINO_KW)
    with pytest.raises(ValueError, match="unknown timm model 'vit_smal_patch14_dinov2'"):
        bb.load_backbone("vit_smal_patch14_dinov2", weights["dino"])
    with pytest.raises(ValueError, match=r"not a multiple of the patch size 14.*\(56, 84\)"):
        bb.load_backbone(DINO, weights["dino"], img_size=(64, 90), **DINO_KW)


def test_snap_size():
    assert bb.snap_size((288, 384), 14) == (280, 378)                          # the paper's NYUv2 crop
    assert bb.snap_size((128, 256), 14) == (126, 252)
    assert bb.snap_size((288, 384), 14, mode="nearest") == (294, 378)
    assert bb.snap_size((288, 384), 14, mode="ceil") == (294, 392)
    assert bb.snap_size(5, 14) == (14, 14) and bb.snap_size(64, 8) == (64, 64)
    with pytest.raises(ValueError, match="mode"):
        bb.snap_size(64, 8, mode="round")


def test_input_transform(weights):
    x = _images(hw=(28, 42))
    dino = bb.load_backbone(DINO, weights["dino"], img_size=(28, 42), **DINO_KW)
    t = bb.input_transform(dino)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(t(x), (x - mean) / std, atol=1e-6)
    assert torch.allclose(bb.input_transform(dino, "paper")(x), x * 2 - 1, atol=1e-6)
    # test_vit was trained on mean = std = 0.5, the course's own ViT has no pretrained_cfg: both [-1, 1]
    vit = bb.load_backbone(fixtures.FIXTURE_BACKBONE, weights["test_vit"])
    assert torch.allclose(bb.input_transform(vit)(x), x * 2 - 1, atol=1e-6)
    from simo_lite.models import make_encoder
    assert bb.input_transform(make_encoder(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2)) \
        == bb.input_transform(dino, "paper")


def test_encoder_io_is_the_pipelines_input_and_taps(weights):
    """One function gives what the pipeline feeds an encoder ([-1, 1], bit for bit ``2x - 1``) and
    the blocks it reads (4 evenly spaced, ``Profile.taps`` for a profile of the same depth)."""
    from simo_lite import profiles
    from simo_lite.models import make_encoder
    x = _images(hw=(28, 42))
    dino = bb.load_backbone(DINO, weights["dino"], img_size=(28, 42), **DINO_KW)
    io = bb.encoder_io(dino)
    assert torch.equal(io.transform(x), x * 2 - 1)                   # exactly, not just close
    assert io.taps == bb.backbone_taps(dino) == profiles.evenly_spaced_taps(len(dino.blocks))
    assert bb.encoder_io(dino, "pretrained").transform == bb.input_transform(dino)
    own = make_encoder(img_size=32, patch_size=8, embed_dim=16, depth=12, num_heads=2)
    assert bb.encoder_io(own) == bb.EncoderIO(bb.input_transform(own, "paper"), (2, 5, 8, 11))
    assert bb.encoder_io(own).taps == profiles.get("gpu").taps

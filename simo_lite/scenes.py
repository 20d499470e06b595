"""SIMO-lite Scenes: procedural 3D rooms with exact dense labels, rendered by a batched ray caster.

Every scene is a room (floor, ceiling, back and side walls) holding 1..`max_objects` primitives
(sphere, box, cylinder) with random pose, size, colour and texture, lit by an ambient term plus one
directional light with cast shadows (Lambertian). One primary ray per pixel is intersected with every
surface at once (tensors shaped (B, K, P): scenes x object slots x pixels), so there is no Python loop
over pixels or scenes; only over fixed-size batches.

Labels come from the geometry of the first hit, not from the image:

=========  ===============  ======================================================================
key        shape / dtype    meaning
=========  ===============  ======================================================================
image      (N,3,H,W) f32    shaded colour in [0, 1]
seg        (N,H,W)   i64    semantic class, see :data:`CLASSES`
depth      (N,1,H,W) f32    camera-space z of the hit, metres, finite and > 0
normals    (N,3,H,W) f32    unit surface normal in the camera frame (x right, y down, z forward)
edges      (N,1,H,W) f32    1 on both sides of a boundary between 4-neighbours that lie on different
                            surfaces (occlusion) or whose normals differ by more than ``crease_deg``
                            (crease), so edges are 2 px wide; else 0
albedo     (N,3,H,W) f32    unlit surface colour (reflectance) in [0, 1]
shading    (N,1,H,W) f32    the light a pixel receives, ambient + (1 - ambient) * Lambert * shadow,
                            in [ambient, 1]: image = albedo * shading exactly
texture_   (N,1,H,W) f32    1 on both pixels of a 4-neighbour pair whose albedo steps by more than
edges                       ``texture_edge_threshold``: texture-pattern and colour edges, lighting-free
keypoints  (N,1,H,W) f32    3x3 blobs at the Harris corners of the albedo (box corners, checker
                            cells, colour junctions)
autoenc-   (N,3,H,W) f32    the image itself (the target of the autoencoder task; the same tensor as
oder                        ``image``, not stored twice)
=========  ===============  ======================================================================

The first six are the scene's geometry and reflectance; ``shading``, ``texture_edges``,
``keypoints`` and ``autoencoder`` are the low-level, appearance-level targets of the Taskonomy-like
task set. ``appearance`` (a view id) re-renders the *same* geometry and camera with new colours,
textures and light (:func:`appearance_index`): what the foundation's invariance pretraining pairs.

Scene ``i`` depends only on ``(seed, i)`` (a counter-based hash, not a stateful generator), so the
first scenes of a split stay the same when the split grows, and splits drawn from disjoint index
ranges (:data:`SPLIT_OFFSETS`) never share a scene.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import Dataset

from . import paths
from . import progress as pg
from .types import Split

__all__ = [
    "CLASSES", "NUM_CLASSES", "SPLIT_OFFSETS", "DEFAULT_OPTIONS", "make_scenes", "load_split",
    "ScenesDataset", "camera_rays", "normals_from_depth", "benchmark", "render", "appearance_index",
    "APPEARANCE_STREAMS", "KEYPOINT_THRESHOLD",
]

CLASSES = ("floor", "wall", "ceiling", "sphere", "box", "cylinder")
NUM_CLASSES = len(CLASSES)
SPHERE, BOX, CYLINDER = 0, 1, 2  # primitive kinds; class id = 3 + kind
SPLIT_OFFSETS = {"train": 0, "val": 10_000_000, "test": 20_000_000}
VERSION = 5  # bump when rendering or labels change: invalidates cached splits and trained models
KEYPOINT_THRESHOLD = 1e-4   # about 2 % of pixels are keypoint blobs at 64 px

DEFAULT_OPTIONS = dict(
    max_objects=4,       # 1..max_objects primitives per scene
    fov_deg=60.0,        # horizontal field of view
    shadows=True,        # cast shadows from the directional light onto every surface
    crease_deg=30.0,     # normal change that counts as a crease edge
    ambient=0.35,        # ambient light fraction
    appearance=0,        # appearance view: 0 the split's own look; v >= 1 new colours, textures and light
    texture_edge_threshold=0.25,  # albedo step (any channel) that counts as a texture edge (~30 % of pixels at 64 px)
    keypoint_threshold=KEYPOINT_THRESHOLD,   # Harris response of a keypoint (albedo luminance)
    batch_size=64,       # scenes rendered per vectorised batch (memory ~ batch * H * W * max_objects)
)

_EPS = 1e-4
_FAR = 1e6


# ----------------------------------------------------------------------------------------------
# Counter-based random numbers: u(seed, scene, stream) in [0, 1), independent of batching.
# ----------------------------------------------------------------------------------------------
def _hash32(x: torch.Tensor) -> torch.Tensor:
    """Integer mixing (lowbias32-style) on int64 tensors holding 32-bit values."""
    m = 0xFFFFFFFF
    x = x & m
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & m
    x = ((x ^ (x >> 15)) * 0x846CA68B) & m
    return x ^ (x >> 16)


def _uniform(seed: int, index: torch.Tensor, stream: int, shape: tuple[int, ...] = ()) -> torch.Tensor:
    """Uniform floats in [0, 1), shape (B, *shape), from (seed, scene index, stream id, element)."""
    n_el = math.prod(shape)
    el = torch.arange(max(n_el, 1), dtype=torch.int64)
    key = _hash32(index[:, None] * 0x9E3779B1 + _hash32(torch.tensor(seed * 7919 + stream * 104729 + 1)))
    x = _hash32(key + el[None, :] * 0x85EBCA6B)
    x = _hash32(x ^ (stream * 0x27D4EB2F))
    u = x.to(torch.float64) / 4294967296.0
    return u.float().reshape(len(index), *shape) if shape else u.float()[:, 0]


# ----------------------------------------------------------------------------------------------
# Scene parameters
# ----------------------------------------------------------------------------------------------
def appearance_index(index: torch.Tensor, view: torch.Tensor | int) -> torch.Tensor:
    """The index that draws the *appearance* of scenes ``index`` (B,) in appearance view ``view``.

    View 0 is the scene as the splits hold it (the index itself). A view v >= 1 hashes (index, v) to
    an index in [2**30, 2**31), beyond every split's range, so its colours, textures and light are
    new random draws while the geometry and camera (drawn from ``index``) stay the same."""
    view = torch.as_tensor(view, dtype=torch.int64).expand_as(index)
    mixed = _hash32(index ^ _hash32(view * 0x632BE5AB + 0x2545F491)) & 0x3FFFFFFF | 0x40000000
    return torch.where(view == 0, index, mixed)


# streams drawn per appearance (colours, textures, light); all others are geometry and camera
APPEARANCE_STREAMS = (7, 8, 9, 10, 11, 20, 21, 22, 23)


def _sample_params(seed: int, index: torch.Tensor, max_objects: int,
                   view: torch.Tensor | int = 0) -> dict[str, torch.Tensor]:
    """Room, camera, light and primitive parameters for scenes ``index`` (B,). World frame: y up.

    ``view`` (an int or (B,) ints, 0 = the split's own look) re-draws only the appearance streams
    (:data:`APPEARANCE_STREAMS`: light direction, room and object colours and textures)."""
    B, K = len(index), max_objects
    look = appearance_index(index, view)
    u = lambda stream, *shape: _uniform(seed, look if stream in APPEARANCE_STREAMS else index, stream, shape)  # noqa: E731
    p = {}
    p["room_half_width"] = 2.6 + 1.2 * u(1)                     # side walls at x = +-w   (m)
    p["room_depth"] = 6.5 + 2.5 * u(2)                          # back wall at z = d      (m)
    p["room_height"] = 2.6 + 0.8 * u(3)                         # ceiling at y = h        (m)
    p["cam_height"] = 1.2 + 0.6 * u(4)                          # camera at (0, h_c, 0)
    p["cam_pitch"] = math.radians(12) + math.radians(16) * u(5)  # looking down by this
    p["cam_yaw"] = math.radians(-15) + math.radians(30) * u(6)
    # light: from above, slightly behind the camera, random azimuth
    az, el = 2 * math.pi * u(7), math.radians(35) + math.radians(40) * u(8)
    p["light_dir"] = torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el),
                                  -torch.cos(el) * torch.cos(az).abs() * 0.5 - 0.2], -1)
    p["light_dir"] = p["light_dir"] / p["light_dir"].norm(dim=-1, keepdim=True)  # (B, 3) towards light
    # room surfaces: base colours (floor, wall, ceiling) and textures
    p["room_color"] = 0.25 + 0.6 * u(9, 3, 3)                   # (B, 3 surfaces, RGB)
    p["room_tex"] = (4 * u(10, 3)).long()                       # 0 plain, 1 checker, 2 stripes, 3 noise
    p["room_tex_scale"] = 1.0 + 2.0 * u(11, 3)                  # cycles per metre
    # primitives
    n_obj = 1 + (K * u(12)).long().clamp(max=K - 1)             # (B,) in 1..K
    p["obj_valid"] = torch.arange(K)[None, :] < n_obj[:, None]  # (B, K)
    p["obj_kind"] = (3 * u(13, K)).long().clamp(max=2)          # (B, K)
    # positions on a jittered 3x3 floor grid, distinct cells per scene (few overlaps)
    cells = torch.argsort(u(14, 9), dim=1)[:, :K]               # (B, K) distinct cell ids
    cx, cz = (cells % 3).float(), (cells // 3).float()
    jx, jz = u(15, K), u(16, K)
    depth_span = p["room_depth"][:, None] - 3.2
    p["obj_x"] = (cx - 1 + 0.5 * (jx - 0.5)) * 1.35
    p["obj_z"] = 2.6 + (cz + 0.25 + 0.5 * jz) / 3 * depth_span
    p["obj_size"] = 0.4 + 0.4 * u(17, K)                        # radius / half extent (m)
    p["obj_height"] = 0.5 + 1.1 * u(18, K)                      # box / cylinder height (m)
    p["obj_yaw"] = math.pi * u(19, K)
    p["obj_color"] = 0.1 + 0.85 * u(20, K, 3)
    p["obj_tex"] = (4 * u(21, K)).long().clamp(max=3)
    p["obj_tex_scale"] = 2.0 + 4.0 * u(22, K)
    p["obj_tex_phase"] = u(23, K, 3) * 10
    return p


def camera_rays(size: int, fov_deg: float = 60.0) -> torch.Tensor:
    """Ray directions in the camera frame with z = 1, shape (H*W, 3), for a square image.

    Because z = 1, a ray parameter ``t`` equals the camera-space depth of the hit point.
    """
    f = 0.5 * size / math.tan(math.radians(fov_deg) / 2)       # focal length (px)
    c = torch.arange(size, dtype=torch.float32) + 0.5 - size / 2
    v, uu = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([uu / f, v / f, torch.ones_like(uu)], -1).reshape(-1, 3)


def _camera_to_world(pitch: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """Rotation (B, 3, 3) taking camera-frame vectors (x right, y down, z fwd) to world (y up)."""
    B = len(pitch)
    flip = torch.diag(torch.tensor([1.0, -1.0, 1.0])).expand(B, 3, 3)
    cp, sp, cy, sy = torch.cos(pitch), torch.sin(pitch), torch.cos(yaw), torch.sin(yaw)
    one, zero = torch.ones_like(cp), torch.zeros_like(cp)
    # pitch down: rotate about x so that forward tilts towards -y
    rx = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(B, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(B, 3, 3)
    return ry @ rx @ flip


# ----------------------------------------------------------------------------------------------
# Ray-primitive intersections. o: (B, 1, 1, 3) or (B, 1, P, 3) origins; d: (B, 1, P, 3) directions.
# Primitive parameters are (B, K, 1). Each returns t (B, K, P), _FAR where missed, and normals.
# ----------------------------------------------------------------------------------------------
def _hit_sphere(o, d, cx, cy, cz, r):
    oc = torch.stack([o[..., 0] - cx, o[..., 1] - cy, o[..., 2] - cz], -1)   # (B, K, P, 3)
    a = (d * d).sum(-1)
    b = (d * oc).sum(-1)
    c = (oc * oc).sum(-1) - r * r
    disc = b * b - a * c
    t = (-b - disc.clamp(min=0).sqrt()) / a
    return torch.where((disc > 0) & (t > _EPS), t, _FAR)


def _local_xz(x, z, cx, cz, yaw):
    """Rotate (x, z) offsets from (cx, cz) into a frame turned by ``yaw`` about the vertical axis."""
    cs, sn = torch.cos(yaw), torch.sin(yaw)
    dx, dz = x - cx, z - cz
    return cs * dx - sn * dz, sn * dx + cs * dz


def _slab(o, d, half):
    """Entry and exit ray parameters of the slab -half <= o + t d <= half (one axis)."""
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t1, t2 = (-half - o) * inv, (half - o) * inv
    return torch.minimum(t1, t2), torch.maximum(t1, t2)


def _hit_box(o, d, cx, cz, half, height, yaw):
    ox, oz = _local_xz(o[..., 0], o[..., 2], cx, cz, yaw)
    dx, dz = _local_xz(d[..., 0], d[..., 2], 0.0, 0.0, yaw)
    lo_x, hi_x = _slab(ox, dx, half)
    lo_y, hi_y = _slab(o[..., 1] - height / 2, d[..., 1], height / 2)
    lo_z, hi_z = _slab(oz, dz, half)
    tmin = torch.maximum(torch.maximum(lo_x, lo_y), lo_z)
    tmax = torch.minimum(torch.minimum(hi_x, hi_y), hi_z)
    return torch.where((tmax >= tmin) & (tmin > _EPS), tmin, _FAR)


def _hit_cylinder(o, d, cx, cz, r, height):
    ox, oz = o[..., 0] - cx, o[..., 2] - cz
    dx, dz = d[..., 0], d[..., 2]
    a = (dx * dx + dz * dz).clamp(min=1e-12)
    b = dx * ox + dz * oz
    c = ox * ox + oz * oz - r * r
    disc = b * b - a * c
    t_side = (-b - disc.clamp(min=0).sqrt()) / a
    y_side = o[..., 1] + t_side * d[..., 1]
    side_ok = (disc > 0) & (t_side > _EPS) & (y_side >= 0) & (y_side <= height)
    dy = torch.where(d[..., 1].abs() < 1e-9, torch.full_like(d[..., 1], 1e-9), d[..., 1])
    t_cap = (height - o[..., 1]) / dy
    px, pz = ox + t_cap * dx, oz + t_cap * dz
    cap_ok = (t_cap > _EPS) & (px * px + pz * pz <= r * r)
    t = torch.minimum(torch.where(side_ok, t_side, _FAR), torch.where(cap_ok, t_cap, _FAR))
    return t


def _hit_objects(o, d, p):
    """Ray parameters t (B, K, P) of every primitive slot, _FAR where missed or slot empty.

    o, d: ray origins and directions, each (B, 1, 3) or (B, P, 3). Each primitive is intersected
    only with the intersection routine of its own kind (rays gathered per object), so the cost is
    one intersection per (object, ray), not one per (object, kind, ray).
    """
    B, K = p["obj_kind"].shape
    P = max(o.shape[1], d.shape[1])
    t = torch.full((B, K, P), _FAR)
    for kind in (SPHERE, BOX, CYLINDER):
        b, k = torch.nonzero(p["obj_valid"] & (p["obj_kind"] == kind), as_tuple=True)  # (M,), (M,)
        if len(b) == 0:
            continue
        g = lambda key: p[key][b, k][:, None]  # noqa: E731  (M, 1)
        ob, db = o[b], d[b]                    # (M, 1|P, 3)
        if kind == SPHERE:
            t_k = _hit_sphere(ob, db, g("obj_x"), g("obj_size"), g("obj_z"), g("obj_size"))
        elif kind == BOX:
            t_k = _hit_box(ob, db, g("obj_x"), g("obj_z"), g("obj_size"), g("obj_height"), g("obj_yaw"))
        else:
            t_k = _hit_cylinder(ob, db, g("obj_x"), g("obj_z"), g("obj_size"), g("obj_height"))
        t[b, k] = t_k.expand(len(b), P)
    return t


def _object_normals(hit, kind, p, slot):
    """World normals (B, P, 3) at hit points (B, P, 3) on the object in ``slot`` (B, P)."""
    take = lambda k: torch.gather(p[k], 1, slot)  # noqa: E731  (B, P)
    cx, cz, size, height, yaw = take("obj_x"), take("obj_z"), take("obj_size"), take("obj_height"), take("obj_yaw")
    x, y, z = hit.unbind(-1)
    # sphere
    n_s = torch.stack([x - cx, y - size, z - cz], -1)
    # cylinder: side or cap
    # cap or side: whichever surface the hit point lies closer to (robust at the rim)
    radial = torch.sqrt((x - cx) ** 2 + (z - cz) ** 2)
    on_cap = (y - height).abs() < (radial - size).abs()
    n_c = torch.where(on_cap[..., None], torch.tensor([0.0, 1.0, 0.0]),
                      torch.stack([x - cx, torch.zeros_like(x), z - cz], -1))
    # box: the local axis along which the point lies on a face
    lx, lz = _local_xz(x, z, cx, cz, yaw)
    ly = y - height / 2
    rel = torch.stack([lx / size, ly / (height / 2), lz / size], -1)
    axis = rel.abs().argmax(-1, keepdim=True)
    n_local = torch.zeros_like(rel).scatter_(-1, axis, torch.gather(rel, -1, axis).sign())
    cs, sn = torch.cos(yaw), torch.sin(yaw)  # inverse of _local_xz rotation
    n_b = torch.stack([cs * n_local[..., 0] + sn * n_local[..., 2], n_local[..., 1],
                       -sn * n_local[..., 0] + cs * n_local[..., 2]], -1)
    n = torch.where((kind == SPHERE)[..., None], n_s, torch.where((kind == BOX)[..., None], n_b, n_c))
    return n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def _texture(pos, kind, scale, phase):
    """Texture multiplier in [0.45, 1] at world points (B, P, 3); kind 0 plain .. 3 noise, (B, P)."""
    q = pos * scale[..., None] + phase
    checker = (torch.floor(q).sum(-1).remainder(2) == 0).float()
    stripes = (torch.sin(3.0 * (q[..., 0] + 0.5 * q[..., 1] + 0.3 * q[..., 2])) > 0).float()
    cell = torch.floor(2 * q)
    noise = torch.frac(torch.sin((cell * torch.tensor([12.9898, 78.233, 37.719])).sum(-1)) * 43758.5453).abs()
    pattern = torch.where(kind == 1, checker, torch.where(kind == 2, stripes, torch.where(kind == 3, noise, 1.0)))
    return 0.45 + 0.55 * pattern


def _shift_sum(x: torch.Tensor, weights: dict[tuple[int, int], float]) -> torch.Tensor:
    """sum_{(dy, dx)} w * x[..., y + dy, x + dx] over (B, C, H, W) with replicated borders.

    Elementwise slices, not conv2d: a scene's labels must not depend on the batch it was rendered in
    (bitwise), and conv2d's algorithm can depend on the batch shape."""
    H, W = x.shape[-2:]
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    out = torch.zeros_like(x)
    for (dy, dx), w in weights.items():
        out = out + w * xp[..., 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]
    return out


_SOBEL_X = {(-1, -1): -1, (0, -1): -2, (1, -1): -1, (-1, 1): 1, (0, 1): 2, (1, 1): 1}
_SOBEL_Y = {(-1, -1): -1, (-1, 0): -2, (-1, 1): -1, (1, -1): 1, (1, 0): 2, (1, 1): 1}
_BOX3 = {(dy, dx): 1 / 9 for dy in (-1, 0, 1) for dx in (-1, 0, 1)}


def _texture_edges(albedo: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, 1, H, W) {0, 1}: both pixels of every 4-neighbour pair whose albedo (B, 3, H, W) differs by
    more than ``threshold`` in some channel (reflectance discontinuities: texture-pattern cells and
    colour boundaries, independent of lighting; the Canny-edge analogue)."""
    across_x = (albedo[..., :, 1:] - albedo[..., :, :-1]).abs().amax(1) > threshold   # (B, H, W-1)
    across_y = (albedo[..., 1:, :] - albedo[..., :-1, :]).abs().amax(1) > threshold   # (B, H-1, W)
    e = torch.zeros(albedo.shape[0], *albedo.shape[2:], dtype=torch.bool)
    e[:, :, :-1] |= across_x
    e[:, :, 1:] |= across_x
    e[:, :-1, :] |= across_y
    e[:, 1:, :] |= across_y
    return e[:, None].float()


def _keypoints(albedo: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, 1, H, W) {0, 1}: 2D keypoints of the albedo, the Harris-corner analogue of Taskonomy's
    SURF keypoints: local maxima (3x3) of the Harris response R = det(M) - 0.05 tr(M)^2 of the
    albedo luminance above ``threshold``, M the 3x3-box structure tensor of Sobel gradients (/8),
    each keypoint drawn as a 3x3 blob (corners of boxes, checker cells and colour junctions)."""
    lum = (albedo * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True)  # (B, 1, H, W)
    ix, iy = _shift_sum(lum, _SOBEL_X) / 8, _shift_sum(lum, _SOBEL_Y) / 8
    sxx, syy, sxy = _shift_sum(ix * ix, _BOX3), _shift_sum(iy * iy, _BOX3), _shift_sum(ix * iy, _BOX3)
    r = sxx * syy - sxy * sxy - 0.05 * (sxx + syy) ** 2
    H, W = r.shape[-2:]
    rp = torch.nn.functional.pad(r, (1, 1, 1, 1), value=-float("inf"))
    local_max = torch.stack([rp[..., 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]
                             for dy in (-1, 0, 1) for dx in (-1, 0, 1)]).amax(0)
    peaks = ((r >= local_max) & (r > threshold)).float()
    pp = torch.nn.functional.pad(peaks, (1, 1, 1, 1))
    return torch.stack([pp[..., 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]
                        for dy in (-1, 0, 1) for dx in (-1, 0, 1)]).amax(0)


def _render_batch(index: torch.Tensor, size: int, seed: int, opt: dict,
                  view: torch.Tensor | int | None = None) -> dict[str, torch.Tensor]:
    B, K, P = len(index), opt["max_objects"], size * size
    p = _sample_params(seed, index, K, opt["appearance"] if view is None else view)
    rot = _camera_to_world(p["cam_pitch"], p["cam_yaw"])                   # (B, 3, 3)
    d_cam = camera_rays(size, opt["fov_deg"])                               # (P, 3), z = 1
    # explicit sums, not einsum/bmm: their reduction order depends on the batch shape, and a scene
    # must not depend on which batch it was rendered in (bitwise)
    d = (rot[:, None] * d_cam[None, :, None, :]).sum(-1)                    # (B, P, 3) world dirs
    o = torch.zeros(B, 1, 3)
    o[:, 0, 1] = p["cam_height"]                                            # (B, 1, 3)

    # --- room planes: floor y=0, ceiling y=h, walls x=+-w and z=d -------------------------------
    dx, dy, dz = d.unbind(-1)
    safe = lambda v: torch.where(v.abs() < 1e-9, torch.full_like(v, 1e-9), v)  # noqa: E731
    oy = p["cam_height"][:, None]
    planes_t = torch.stack([
        (0 - oy) / safe(dy),                                   # floor
        (p["room_height"][:, None] - oy) / safe(dy),           # ceiling
        (p["room_half_width"][:, None]) / safe(dx),            # wall x = +w
        (-p["room_half_width"][:, None]) / safe(dx),           # wall x = -w
        p["room_depth"][:, None] / safe(dz),                   # back wall
    ], 1)                                                      # (B, 5, P)
    planes_t = torch.where(planes_t > _EPS, planes_t, _FAR)
    plane_n = torch.tensor([[0, 1, 0], [0, -1, 0], [-1, 0, 0], [1, 0, 0], [0, 0, -1]], dtype=torch.float32)
    plane_cls = torch.tensor([0, 2, 1, 1, 1])                  # floor, ceiling, wall, wall, wall
    t_room, room_id = planes_t.min(1)                          # (B, P)

    # --- primitives ------------------------------------------------------------------------------
    t_obj_all = _hit_objects(o, d, p)                       # (B, K, P)
    t_obj, slot = t_obj_all.min(1)                             # (B, P)
    is_obj = t_obj < t_room
    t = torch.where(is_obj, t_obj, t_room)                     # (B, P) == camera-space depth
    hit = o + t[..., None] * d                                 # (B, P, 3) world hit points

    kind = torch.gather(p["obj_kind"], 1, slot)                # (B, P)
    n_obj = _object_normals(hit, kind, p, slot)
    n_world = torch.where(is_obj[..., None], n_obj, plane_n[room_id])
    seg = torch.where(is_obj, 3 + kind, plane_cls[room_id])
    surface = torch.where(is_obj, 5 + slot, room_id)           # distinct id per surface

    # --- albedo: base colour x texture ------------------------------------------------------------
    room_surf = plane_cls[room_id]                             # 0 floor, 1 wall, 2 ceiling
    base_room = torch.gather(p["room_color"], 1, room_surf[..., None].expand(B, P, 3))
    base_obj = torch.gather(p["obj_color"], 1, slot[..., None].expand(B, P, 3))
    tex_kind = torch.where(is_obj, torch.gather(p["obj_tex"], 1, slot), torch.gather(p["room_tex"], 1, room_surf))
    tex_scale = torch.where(is_obj, torch.gather(p["obj_tex_scale"], 1, slot),
                            torch.gather(p["room_tex_scale"], 1, room_surf))
    phase = torch.where(is_obj[..., None], torch.gather(p["obj_tex_phase"], 1, slot[..., None].expand(B, P, 3)), 0.0)
    albedo = torch.where(is_obj[..., None], base_obj, base_room) * _texture(hit, tex_kind, tex_scale, phase)[..., None]
    albedo = albedo.clamp(0, 1)

    # --- shading: ambient + Lambertian directional light with cast shadows -----------------------
    light = p["light_dir"][:, None, :]                         # (B, 1, 3)
    lambert = (n_world * light).sum(-1).clamp(min=0)
    if opt["shadows"]:
        origin = hit + n_world * 1e-3
        t_shadow = _hit_objects(origin, light, p).amin(1)
        lambert = lambert * (t_shadow >= _FAR / 2).float()
    amb = opt["ambient"]
    shading = amb + (1 - amb) * lambert                        # (B, P) in [amb, 1]
    image = (albedo * shading[..., None]).clamp(0, 1)

    # --- camera-frame normals, edges ---------------------------------------------------------------
    normals = (rot.transpose(1, 2)[:, None] * n_world[:, :, None, :]).sum(-1)  # R^T n: world -> camera
    normals = normals / normals.norm(dim=-1, keepdim=True)
    H = W = size
    to_img = lambda x: x.reshape(B, H, W, x.shape[-1]).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    n_img, surf = to_img(normals), surface.reshape(B, H, W)
    cos_crease = math.cos(math.radians(opt["crease_deg"]))
    edges = torch.zeros(B, H, W, dtype=torch.bool)
    # a boundary between horizontal / vertical neighbours marks both pixels (edges 2 px wide)
    across_x = (surf[:, :, :-1] != surf[:, :, 1:]) | ((n_img[:, :, :, :-1] * n_img[:, :, :, 1:]).sum(1) < cos_crease)
    across_y = (surf[:, :-1, :] != surf[:, 1:, :]) | ((n_img[:, :, :-1, :] * n_img[:, :, 1:, :]).sum(1) < cos_crease)
    edges[:, :, :-1] |= across_x
    edges[:, :, 1:] |= across_x
    edges[:, :-1, :] |= across_y
    edges[:, 1:, :] |= across_y
    albedo_img = to_img(albedo)
    return {
        "image": to_img(image),
        "seg": seg.reshape(B, H, W).long(),
        "depth": t.reshape(B, 1, H, W),
        "normals": n_img,
        "edges": edges[:, None].float(),
        "albedo": albedo_img,
        "shading": to_img(shading[..., None]),
        "texture_edges": _texture_edges(albedo_img, opt["texture_edge_threshold"]),
        "keypoints": _keypoints(albedo_img, opt["keypoint_threshold"]),
    }


def make_scenes(n: int, size: int = 64, seed: int = 0, first_index: int = 0, progress: bool = False,
                **options: float | bool) -> Split:
    """Render scenes ``first_index .. first_index + n - 1`` of the stream ``seed``.

    Args:
        n: number of scenes.
        size: image side in pixels (square images, H = W = size).
        seed: dataset seed; together with the scene index it fully determines a scene.
        first_index: index of the first scene (splits use disjoint ranges, see SPLIT_OFFSETS).
        progress: show a tqdm bar over batches.
        **options: overrides of :data:`DEFAULT_OPTIONS` (max_objects, fov_deg, shadows, ...).

    Returns:
        dict with image (N,3,H,W) float [0,1], seg (N,H,W) int64, depth (N,1,H,W) metres,
        normals (N,3,H,W) unit, edges (N,1,H,W) {0,1}, albedo (N,3,H,W) float [0,1].
    """
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"unknown scene options {sorted(unknown)}; valid: {sorted(DEFAULT_OPTIONS)}")
    opt = {**DEFAULT_OPTIONS, **options}
    if n < 0 or size < 4:
        raise ValueError(f"need n >= 0 and size >= 4, got n={n}, size={size}")
    if opt["max_objects"] < 1 or opt["max_objects"] > 9:
        raise ValueError(f"max_objects must be in 1..9, got {opt['max_objects']}")
    index = torch.arange(first_index, first_index + n, dtype=torch.int64)
    return render(index, size, seed, progress=progress, **opt)


def render(index: torch.Tensor, size: int = 64, seed: int = 0, view: torch.Tensor | int | None = None,
           progress: bool = False, **options: float | bool) -> Split:
    """Render the scenes ``index`` (N,) int64 of the stream ``seed``, in any order, each in its own
    appearance ``view`` ((N,) ints or one int; None: the ``appearance`` option, 0 by default).

    The keys and shapes of :func:`make_scenes`; scene ``index[i]`` in view ``view[i]`` is the same
    tensor whatever else is rendered with it. Two views of one index share geometry, camera and
    every geometric label (seg, depth, normals, edges) and differ in image, albedo, shading,
    texture edges and keypoints: the positive pairs of :mod:`simo_lite.foundation`'s pretraining."""
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"unknown scene options {sorted(unknown)}; valid: {sorted(DEFAULT_OPTIONS)}")
    opt = {**DEFAULT_OPTIONS, **options}
    app = opt["appearance"] if view is None else view
    if isinstance(app, torch.Tensor):
        if app.shape != index.shape or app.dtype != torch.int64 or bool((app < 0).any()):
            raise ValueError(f"view must be one int >= 0 or int64 of the shape of index {tuple(index.shape)}, got "
                             f"{app.dtype} {tuple(app.shape)}")
        views = app
    else:
        if not isinstance(app, int) or isinstance(app, bool) or app < 0:
            raise ValueError(f"appearance / view must be an int >= 0 (0: the split's own look), got {app!r}")
        views = torch.full_like(index, app)
    n, bs = len(index), opt["batch_size"]
    starts = pg.progress(range(0, n, bs), f"rendering {n} scenes", show=progress, unit="batch")
    with torch.no_grad():
        parts = [_render_batch(index[s:s + bs], size, seed, opt, views[s:s + bs]) for s in starts]
    if not parts:
        parts = [_render_batch(index[:0], size, seed, opt, views[:0])]
    out = {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
    out["autoencoder"] = out["image"]                  # the autoencoder's target: the image, one tensor
    return out


def normals_from_depth(depth: torch.Tensor, fov_deg: float = 60.0) -> torch.Tensor:
    """Camera-frame normals (N,3,H,W) from a depth map (N,1,H,W) by central finite differences.

    Back-projects each pixel to X = depth * ray (ray z = 1), then n = dX/dv x dX/du, normalised.
    Border pixels are left at zero. Used to check labels against each other.
    """
    N, _, H, W = depth.shape
    rays = camera_rays(H, fov_deg).reshape(H, W, 3).permute(2, 0, 1)  # (3, H, W)
    pts = depth * rays                                                  # (N, 3, H, W)
    du = torch.zeros_like(pts)
    dv = torch.zeros_like(pts)
    du[..., 1:-1] = pts[..., 2:] - pts[..., :-2]
    dv[..., 1:-1, :] = pts[..., 2:, :] - pts[..., :-2, :]
    n = torch.cross(dv, du, dim=1)
    return n / n.norm(dim=1, keepdim=True).clamp(min=1e-12)


# ----------------------------------------------------------------------------------------------
# Splits, cache and Dataset
# ----------------------------------------------------------------------------------------------
def _cache_dir() -> Path:
    """Where rendered splits are cached: :func:`simo_lite.paths.cache_dir` (``$SIMO_LITE_CACHE`` or ``data/cache``)."""
    return paths.cache_dir()


def load_split(split: str, n: int, size: int = 64, seed: int = 0, cache: bool = True,
               progress: bool = False, **options: float | bool) -> Split:
    """Render (or load from ``data/cache``) ``n`` scenes of ``split`` in {'train', 'val', 'test'}.

    The cache file is a safetensors file named by a hash of every parameter that changes pixels.
    """
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r}; valid: {sorted(SPLIT_OFFSETS)}")
    opt = {**DEFAULT_OPTIONS, **options}
    key = {k: v for k, v in opt.items() if k != "batch_size"}
    key.update(split=split, n=n, size=size, seed=seed, version=VERSION)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = _cache_dir() / f"scenes-{split}-{n}x{size}-{digest}.safetensors"
    if cache and path.exists():
        from safetensors.torch import load_file
        try:
            data = load_file(path)
            data["autoencoder"] = data["image"]
            return _by_recipe(data, key)
        except Exception:  # corrupt cache: render again
            path.unlink(missing_ok=True)
    data = make_scenes(n, size=size, seed=seed, first_index=SPLIT_OFFSETS[split], progress=progress, **options)
    if cache:
        from .checkpoints import save_tensors
        save_tensors({k: v for k, v in data.items() if k != "autoencoder"}, path,
                     metadata={"config": json.dumps(key, sort_keys=True)})
    return _by_recipe(data, key)


def _by_recipe(data: Split, recipe: dict) -> Split:
    """Key the split's tensors by their recipe (the parameters that change pixels), not their bytes: the
    renderer's floats differ in the last bits between CPUs (about 1e-7 of a metric), and the store's keys,
    hence the shipped models, must match on every machine (:func:`simo_lite.store.fingerprint_by_recipe`)."""
    from .store import fingerprint_by_recipe
    for k, v in data.items():
        if k != "autoencoder":                     # the image tensor itself (an alias in the data key)
            fingerprint_by_recipe(v, k, recipe)
    return data


class ScenesDataset(Dataset):
    """A torch Dataset over one split; item ``i`` is a dict of per-scene tensors (no batch dim)."""

    def __init__(self, split: str, n: int, size: int = 64, seed: int = 0, tasks: Sequence[str] | None = None,
                 cache: bool = True, **options):
        self.data = load_split(split, n, size=size, seed=seed, cache=cache, **options)
        keep = ["image", *(tasks if tasks is not None else [k for k in self.data if k != "image"])]
        missing = set(keep) - set(self.data)
        if missing:
            raise ValueError(f"unknown label(s) {sorted(missing)}; valid: {sorted(self.data)}")
        self.data = {k: self.data[k] for k in keep}
        self.split = split

    def __len__(self) -> int:
        return len(self.data["image"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.data.items()}


def benchmark(size: int = 64, n: int = 2000, repeats: int = 3, **options: float | bool) -> float:
    """Scenes rendered per second (best of ``repeats``) at ``size`` x ``size``."""
    make_scenes(min(n, 64), size=size, **options)  # warm-up
    best = 0.0
    for r in range(repeats):
        t0 = time.perf_counter()
        make_scenes(n, size=size, seed=r, **options)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m simo_lite.scenes --bench [--size 64 128] [-n 2000]``: print the rendering rate (scenes/s)
    at each size; without ``--bench``, the help."""
    ap = argparse.ArgumentParser(description="SIMO-lite Scenes: render, or benchmark the renderer")
    ap.add_argument("--bench", action="store_true", help="print scenes/s")
    ap.add_argument("--size", type=int, nargs="+", default=[64])
    ap.add_argument("-n", type=int, default=2000)
    args = ap.parse_args(argv)
    if args.bench:
        for s in args.size:
            print(f"scenes {s}x{s}: {benchmark(s, args.n):,.0f} scenes/s on {torch.get_num_threads()} threads")
    else:
        ap.print_help()


if __name__ == "__main__":
    main()

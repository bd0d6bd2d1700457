"""The embedded procedural dataset ``shapes``: ten small shapes on cluttered, textured backgrounds.

Every image has a smooth random background (low-frequency colour noise, a linear gradient and faint stripes), one
to three distractors (thin line fragments and soft elongated blobs, none of them a class) and one target shape at a
random position, scale, small rotation and colour. The target's colour is independent of its class and the
distractors often share it, so the label is carried by the target's form alone and where a network looks matters.

Rendering is batched: each shape is a signed-distance formula evaluated on a coordinate grid for a whole group of
images at once, and turned into anti-aliased coverage, so any ``image_size`` works and 10,000 images at 32x32 take
about two seconds on one CPU core. All randomness comes from one ``torch.Generator`` seeded by ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import AttnsearchError

__all__ = ["SHAPE_CLASSES", "make_shapes"]

SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "diamond",
    "plus",
    "horizontal_bar",
    "vertical_bar",
    "frame",
)

_SLOTS = 3  # distractor slots per image; 1 to 3 of them are used
_TRIES = 4  # candidate positions per distractor, the first clear of the target wins
_CHUNK_PIXELS = 1 << 21  # images rendered together: bounds memory at large image sizes


def _box(u: Tensor, v: Tensor, a: float, b: float) -> Tensor:
    qx, qy = u.abs() - a, v.abs() - b
    outside = torch.hypot(qx.clamp(min=0), qy.clamp(min=0))
    return outside + torch.maximum(qx, qy).clamp(max=0)


def _circle(u: Tensor, v: Tensor) -> Tensor:
    return torch.hypot(u, v) - 0.95


def _square(u: Tensor, v: Tensor) -> Tensor:
    return _box(u, v, 0.8, 0.8)


def _triangle(u: Tensor, v: Tensor) -> Tensor:
    # apex up (rows grow downwards), symmetric in u so that horizontal flips keep the class
    side = (1.6 * u.abs() - 0.95 * (v + 0.95)) / math.hypot(1.6, 0.95)
    return torch.maximum(v - 0.65, side)


def _plus(u: Tensor, v: Tensor) -> Tensor:
    return torch.minimum(_box(u, v, 0.95, 0.24), _box(u, v, 0.24, 0.95))


def _cross(u: Tensor, v: Tensor) -> Tensor:
    return _plus((u + v) * math.sqrt(0.5), (u - v) * math.sqrt(0.5))


def _ring(u: Tensor, v: Tensor) -> Tensor:
    return (torch.hypot(u, v) - 0.75).abs() - 0.22


def _diamond(u: Tensor, v: Tensor) -> Tensor:
    return (u.abs() + v.abs() - 1.0) * math.sqrt(0.5)


def _hbar(u: Tensor, v: Tensor) -> Tensor:
    return _box(u, v, 1.0, 0.3)


def _vbar(u: Tensor, v: Tensor) -> Tensor:
    return _box(u, v, 0.3, 1.0)


def _frame(u: Tensor, v: Tensor) -> Tensor:
    return (_box(u, v, 0.8, 0.8) + 0.2).abs() - 0.2


# Signed distances in shape units (the shape fits the unit disc): negative inside. Same order as SHAPE_CLASSES.
_SDF: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (
    _circle,
    _square,
    _triangle,
    _cross,
    _ring,
    _diamond,
    _plus,
    _hbar,
    _vbar,
    _frame,
)


def _uniform(g: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> Tensor:
    return torch.rand(shape, generator=g) * (hi - lo) + lo


def _draw_params(n: int, size: int, g: torch.Generator) -> dict[str, Tensor]:
    # Every random number is drawn here, before rendering, so the images do not depend on how they are chunked.
    labels = (torch.arange(n) % len(SHAPE_CLASSES))[torch.randperm(n, generator=g)]
    p: dict[str, Tensor] = {"labels": labels}
    colour = torch.rand((n, 3), generator=g)
    p["colour"] = colour
    # background at least 0.3 away from the target in every channel (cyclically shifted by 0.5 +- 0.2)
    p["base"] = (colour + 0.5 + _uniform(g, (n, 3), -0.2, 0.2)) % 1.0
    p["noise"] = _uniform(g, (n, 3, 4, 4), -0.13, 0.13)
    p["grad_angle"] = _uniform(g, (n,), 0.0, 2 * math.pi)
    p["grad_amp"] = _uniform(g, (n, 3), -0.12, 0.12)
    p["stripe_angle"] = _uniform(g, (n,), 0.0, math.pi)
    p["stripe_freq"] = _uniform(g, (n,), 1.5, 5.0)
    p["stripe_phase"] = _uniform(g, (n,), 0.0, 2 * math.pi)
    p["stripe_amp"] = _uniform(g, (n, 3), -0.06, 0.06)

    px = 2.0 / size  # one pixel in the [-1, 1] coordinates used throughout
    radius = _uniform(g, (n,), 0.26, 0.42)
    stretch = _uniform(g, (n, 2), 0.9, 1.1)
    margin = radius * stretch.max(dim=1).values + px
    p["radius"], p["stretch"] = radius, stretch
    p["angle"] = _uniform(g, (n,), -0.2, 0.2)
    p["centre"] = (torch.rand((n, 2), generator=g) * 2 - 1) * (1 - margin)[:, None]

    count = torch.randint(1, _SLOTS + 1, (n,), generator=g)
    active = torch.arange(_SLOTS)[None, :] < count[:, None]
    is_line = torch.rand((n, _SLOTS), generator=g) < 0.5
    half_len = _uniform(g, (n, _SLOTS), 0.18, 0.45)
    half_width = _uniform(g, (n, _SLOTS), 0.025, 0.04).clamp(min=0.4 * px)
    blob_len = _uniform(g, (n, _SLOTS), 0.12, 0.22)
    blob_aspect = _uniform(g, (n, _SLOTS), 1.0, 2.2)
    extent = torch.where(is_line, half_len + half_width, blob_len)
    tries = torch.rand((n, _SLOTS, _TRIES, 2), generator=g) * 1.8 - 0.9
    gap = (tries - p["centre"][:, None, None, :]).norm(dim=-1)
    clear = gap > (1.1 * radius * stretch.max(dim=1).values)[:, None, None] + extent[..., None]
    first = clear.to(torch.int8).argmax(dim=-1)  # first clear candidate (0 when none is, masked below)
    p["d_centre"] = torch.gather(tries, 2, first[..., None, None].expand(n, _SLOTS, 1, 2)).squeeze(2)
    p["d_active"] = active & clear.any(dim=-1)
    p["d_line"] = is_line
    p["d_angle"] = _uniform(g, (n, _SLOTS), 0.0, math.pi)
    p["d_half_len"], p["d_half_width"] = half_len, half_width
    p["d_blob_len"], p["d_blob_aspect"] = blob_len, blob_aspect
    same = torch.rand((n, _SLOTS, 1), generator=g) < 0.5  # half the distractors wear the target's colour
    p["d_colour"] = torch.where(same, colour[:, None, :], torch.rand((n, _SLOTS, 3), generator=g))
    return p


def _background(p: dict[str, Tensor], x: Tensor, y: Tensor, size: int) -> Tensor:
    b = p["base"].shape[0]
    img = p["base"][:, :, None, None] + F.interpolate(p["noise"], size=(size, size), mode="bilinear")
    ga = p["grad_angle"][:, None, None]
    ramp = x * torch.cos(ga) + y * torch.sin(ga)  # (B, S, S)
    img = img + p["grad_amp"][:, :, None, None] * ramp[:, None]
    sa = p["stripe_angle"][:, None, None]
    t = x * torch.cos(sa) + y * torch.sin(sa)
    wave = torch.sin(math.pi * p["stripe_freq"][:, None, None] * t + p["stripe_phase"][:, None, None])
    return (img + p["stripe_amp"][:, :, None, None] * wave[:, None]).reshape(b, 3, size, size)


def _paint(img: Tensor, alpha: Tensor, colour: Tensor) -> Tensor:
    return img.lerp_(colour[:, :, None, None].expand_as(img), alpha[:, None])


def _distractor(p: dict[str, Tensor], k: int, idx: Tensor, line: bool, x: Tensor, y: Tensor, px: float) -> Tensor:
    def get(name: str) -> Tensor:
        return p[name][idx, k, None, None]

    dx = x - p["d_centre"][idx, k, 0, None, None]
    dy = y - p["d_centre"][idx, k, 1, None, None]
    ang = get("d_angle")
    along = dx * torch.cos(ang) + dy * torch.sin(ang)
    across = dy * torch.cos(ang) - dx * torch.sin(ang)
    if line:
        sd = torch.hypot((along.abs() - get("d_half_len")).clamp(min=0), across) - get("d_half_width")
        return (0.5 - sd / px).clamp(0, 1)
    e2 = (along / get("d_blob_len")) ** 2 + (across * get("d_blob_aspect") / get("d_blob_len")) ** 2
    return 0.9 * torch.exp(-2.0 * e2)  # soft-edged, unlike every class


def _render(p: dict[str, Tensor], size: int, g: torch.Generator) -> Tensor:
    b = p["labels"].shape[0]
    px = 2.0 / size
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) * px - 1.0
    y, x = grid[None, :, None], grid[None, None, :]  # rows grow downwards
    img = _background(p, x, y, size)

    for k in range(_SLOTS):
        alpha = torch.zeros(b, size, size)
        for line in (True, False):
            # only the images whose slot k holds this kind of distractor
            idx = (p["d_active"][:, k] & (p["d_line"][:, k] == line)).nonzero().squeeze(1)
            if idx.numel():
                alpha[idx] = _distractor(p, k, idx, line, x, y, px)
        img = _paint(img, alpha, p["d_colour"][:, k])

    # the target goes on top, one group of images per class
    dx, dy = x - p["centre"][:, 0, None, None], y - p["centre"][:, 1, None, None]
    ang = p["angle"][:, None, None]
    radius = p["radius"][:, None, None]
    u = (dx * torch.cos(ang) + dy * torch.sin(ang)) / (radius * p["stretch"][:, 0, None, None])
    v = (dy * torch.cos(ang) - dx * torch.sin(ang)) / (radius * p["stretch"][:, 1, None, None])
    cover = torch.empty(b, size, size)
    for cls, sdf in enumerate(_SDF):
        idx = (p["labels"] == cls).nonzero().squeeze(1)
        if idx.numel():
            sd_px = sdf(u[idx], v[idx]) * radius[idx] / px
            cover[idx] = (0.5 - sd_px).clamp(0, 1)
    img = _paint(img, cover, p["colour"])
    img = img + 0.025 * torch.randn(img.shape, generator=g)  # sensor-like grain
    return (img.clamp(0, 1) * 255).round_().to(torch.uint8)


def make_shapes(n: int, image_size: int, *, seed: int) -> tuple[Tensor, Tensor]:
    """Generate ``n`` images of the ``shapes`` dataset and their labels (indices into ``SHAPE_CLASSES``).

    Classes are balanced (counts differ by at most one) and shuffled. The output depends only on
    ``(n, image_size, seed)``: the same arguments give identical bytes.

    Args:
        n: number of images (>= 0).
        image_size: side length S in pixels (>= 8).
        seed: seed of the private ``torch.Generator``; the global RNG is neither used nor touched.

    Returns:
        ``(images, labels)``: uint8 (n, 3, S, S) and int64 (n,).

    Example:
        >>> x, y = make_shapes(20, 32, seed=0)
        >>> x.shape, x.dtype, y.dtype, int(y.bincount().min())
        (torch.Size([20, 3, 32, 32]), torch.uint8, torch.int64, 2)
        >>> torch.equal(x, make_shapes(20, 32, seed=0)[0])
        True
    """
    if n < 0:
        raise AttnsearchError(f"n must be >= 0, got {n}")
    if image_size < 8:
        raise AttnsearchError(f"image_size must be >= 8, got {image_size}")
    g = torch.Generator().manual_seed(seed)
    p = _draw_params(n, image_size, g)
    out = torch.empty((n, 3, image_size, image_size), dtype=torch.uint8)
    step = max(1, _CHUNK_PIXELS // (image_size * image_size))
    for start in range(0, n, step):
        part = {k: t[start : start + step] for k, t in p.items()}
        out[start : start + step] = _render(part, image_size, g)
    return out, p["labels"].to(torch.int64)

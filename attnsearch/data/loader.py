"""Batches straight from device-resident uint8 tensors: no DataLoader, no worker processes, no per-sample Python.

The data path follows airbench (Keller Jordan): the whole dataset lives on the training device as uint8, an
epoch is a permutation whose slices are the batches, and augmentation is a few batched tensor ops per batch.
Every random number is drawn on the CPU from the caller's ``torch.Generator`` at the start of an epoch and moved
to the device once, so batch order and augmentation are the same for a seed on any device. The kornia
augmentations (:mod:`attnsearch.data.augment`) draw their parameters on the CPU too, from a seed per batch drawn
there: the same draws on any device (the pixels they produce may differ in the last bits between CPU and CUDA
kernels).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..augment_params import Pairs
from ..errors import AttnsearchError
from .augment import KORNIA_AUGMENTS, BatchAugment, seeded

__all__ = ["AUGMENTS", "CROP_PADDING", "Batches", "normalization"]

AUGMENTS = ("crop", "flip", *KORNIA_AUGMENTS)  # the augmentations Batches knows
CROP_PADDING = 4  # pixels of reflect padding around a random crop


def normalization(x: torch.Tensor, *, chunk_pixels: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) standard deviation of uint8 images (N, C, H, W), in pixel units 0..255.

    Exact: each channel's 256-bin histogram is counted (in chunks of about ``chunk_pixels`` values, so that no
    large copy is made) and the moments are taken from it in float64. The two results are float32 (C,) on
    ``x``'s device. A constant channel gets std 1, not 0.

    Example:
        >>> x = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 2, 2)
        >>> mean, std = normalization(x)
        >>> mean.tolist(), std.tolist()
        ([127.5, 127.5, 127.5], [127.5, 127.5, 127.5])
    """
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {x.dtype}")
    c = x.shape[1]
    per_chunk = max(1, chunk_pixels // max(1, x[0].numel()))
    counts = torch.zeros(c, 256, dtype=torch.int64, device=x.device)
    for part in x.split(per_chunk):
        for channel in range(c):
            counts[channel] += torch.bincount(part[:, channel].reshape(-1), minlength=256)
    counts = counts.double().cpu()  # (C, 256)
    values = torch.arange(256, dtype=torch.float64)
    total = counts.sum(dim=1)
    mean = (counts * values).sum(dim=1) / total  # (C,)
    variance = (counts * (values - mean[:, None]).square()).sum(dim=1) / total
    std = variance.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.float().to(x.device), std.float().to(x.device)


class Batches:
    """Normalised (and optionally augmented) batches of device-resident uint8 images; one iteration = one epoch.

    Each ``iter()`` draws a fresh permutation (``shuffle``) and fresh augmentation from ``generator``, so two
    instances built with equally seeded generators yield identical epochs. Augmentation happens on uint8 before
    normalisation: ``"crop"`` takes a random H x W window of the image padded by 4 pixels with reflect padding
    (``torch.nn.functional.pad(mode="reflect")``: the edge pixel is not repeated, and no artificial black border
    appears), done as one gather with per-sample reflected indices; ``"flip"`` mirrors a random half of the batch
    horizontally (each sample with probability 1/2). The others (``resized_crop``, ``color_jitter``, ``mixup``,
    ``cutmix``, with ``augment_params``) follow, through kornia (:mod:`attnsearch.data.augment`, which says in what
    order), each batch under a seed drawn for it from ``generator`` after the epoch's other draws (so a recipe
    without them draws exactly what it always did). With ``mixup`` or ``cutmix`` the second item of each batch is
    a float tensor (B, 3) of mixed targets instead of the labels (B,).

    Example:
        >>> images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
        >>> labels = torch.arange(10)
        >>> mean, std = normalization(images)
        >>> batches = Batches(images, labels, 4, mean=mean, std=std, augment=("crop", "flip"), shuffle=True,
        ...                   generator=torch.Generator().manual_seed(0))
        >>> len(batches), [tuple(x.shape) for x, _ in batches]
        (3, [(4, 3, 32, 32), (4, 3, 32, 32), (2, 3, 32, 32)])
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        mean: torch.Tensor,
        std: torch.Tensor,
        augment: tuple[str, ...] = (),
        augment_params: Pairs = (),
        shuffle: bool = False,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if batch_size < 1:
            raise AttnsearchError(f"batch_size must be at least 1, got {batch_size}")
        unknown = [a for a in augment if a not in AUGMENTS]
        if unknown:
            raise AttnsearchError(f"unknown augmentation(s) {', '.join(unknown)}; valid: {', '.join(AUGMENTS)}")
        if "crop" in augment and min(images.shape[2:]) <= CROP_PADDING:
            raise AttnsearchError(f"crop needs images larger than {CROP_PADDING} pixels (reflect padding)")
        if "color_jitter" in augment and images.shape[1] != 3:
            raise AttnsearchError(f"color_jitter needs RGB images (3 channels), got {images.shape[1]}")
        try:
            kornia = BatchAugment(augment, augment_params, size=(images.shape[2], images.shape[3]))
        except ValueError as err:
            raise AttnsearchError(f"augment_params: {err}") from None
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("generator must be a CPU generator (random numbers are drawn on the CPU)")
        self.images = images  # uint8 (N, C, H, W)
        self.labels = labels.to(images.device)  # (N,)
        self.batch_size = batch_size
        self.augment = tuple(augment)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.channels_last = channels_last
        self.dtype = dtype
        self._kornia = kornia if kornia.active else None
        channels = images.shape[1]
        # x * scale + shift == (x - mean) / std, one fused multiply-add per pixel
        self._scale = (1.0 / std.float()).to(images.device).view(1, channels, 1, 1)
        self._shift = (-mean.float() / std.float()).to(images.device).view(1, channels, 1, 1)
        self._scale01 = self._scale * 255  # the same on images in 0..1

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, device = self.images.shape[0], self.images.device
        # All of the epoch's random numbers at once, on the CPU, in a fixed order; then one copy to the device.
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        offsets = flips = None
        if "crop" in self.augment:
            offsets = torch.randint(0, 2 * CROP_PADDING + 1, (n, 2), generator=self.generator).to(device)  # (N, 2)
        if "flip" in self.augment:
            flips = torch.randint(0, 2, (n,), generator=self.generator).bool().to(device)  # (N,)
        seeds = None
        if self._kornia is not None:  # one seed per batch for kornia's draws (see attnsearch.data.augment)
            seeds = torch.randint(0, 2**62, (len(self),), generator=self.generator).tolist()
        order = order.to(device)
        for batch in range(len(self)):
            start = batch * self.batch_size
            index = order[start : start + self.batch_size]  # (B,)
            x = self.images[index]  # uint8 (B, C, H, W)
            if offsets is not None:
                x = _crop(x, offsets[start : start + self.batch_size])
            if flips is not None:
                x = torch.where(flips[start : start + self.batch_size].view(-1, 1, 1, 1), x.flip(3), x)
            y = self.labels[index]
            if seeds is not None and self._kornia is not None:
                with seeded(seeds[batch]):
                    x = self._kornia.images(x.to(torch.float32) / 255) * self._scale01 + self._shift
                    x, y = self._kornia.mix(x, y)
            else:
                x = x.to(torch.float32) * self._scale + self._shift
            if self.channels_last:
                # after normalising: the per-channel broadcast is about 5x slower on a channels-last tensor
                x = x.contiguous(memory_format=torch.channels_last)
            yield x.to(self.dtype), y


def _crop(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    # Equivalent to F.pad(x, (p, p, p, p), mode="reflect")[b, :, dy:dy + H, dx:dx + W] for every b, but as one
    # gather: output pixel (i, j) of sample b reads source pixel (reflect(i + dy - p), reflect(j + dx - p)).
    b, c, h, w = x.shape
    rows = _reflect(torch.arange(h, device=x.device) + offsets[:, :1] - CROP_PADDING, h)  # (B, H)
    cols = _reflect(torch.arange(w, device=x.device) + offsets[:, 1:] - CROP_PADDING, w)  # (B, W)
    flat = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)  # (B, C, H*W)
    return x.reshape(b, c, h * w).gather(2, flat).view(b, c, h, w)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    # -1 -> 1 and size -> size - 2 (the edge is not repeated); valid for |overshoot| < size
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)

"""Batches: shapes, normalisation, epochs as permutations, determinism, and crops/flips checked by definition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnsearch.data.loader import CROP_PADDING, Batches, normalization


def images(n: int = 64, size: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    x[:, 1] //= 2  # channels with different statistics
    return x


def raw(x: torch.Tensor, **kwargs: object) -> Batches:
    """Batches that yield the pixel values themselves (mean 0, std 1), labels = sample index."""
    zeros, ones = torch.zeros(3), torch.ones(3)
    return Batches(x, torch.arange(len(x)), len(x), mean=zeros, std=ones, **kwargs)  # type: ignore[arg-type]


def test_normalization_matches_direct_computation() -> None:
    x = images(50)
    mean, std = normalization(x, chunk_pixels=1000)  # many chunks
    assert mean.dtype == std.dtype == torch.float32 and mean.shape == std.shape == (3,)
    torch.testing.assert_close(mean, x.double().mean(dim=(0, 2, 3)).float())
    torch.testing.assert_close(std, x.double().std(dim=(0, 2, 3), unbiased=False).float())
    constant = torch.full((4, 3, 2, 2), 7, dtype=torch.uint8)
    assert normalization(constant)[1].tolist() == [1.0, 1.0, 1.0]


def test_shapes_dtypes_and_normalised_values() -> None:
    x = images(200)
    mean, std = normalization(x)
    batches = Batches(x, torch.arange(200), 200, mean=mean, std=std)
    (xb, yb), *rest = list(batches)
    assert not rest
    assert xb.shape == (200, 3, 16, 16) and xb.dtype == torch.float32
    assert yb.dtype == torch.int64 and torch.equal(yb, torch.arange(200))  # no shuffle: in order
    assert xb.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (xb.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3
    half = Batches(x, torch.arange(200), 64, mean=mean, std=std, dtype=torch.bfloat16)
    assert next(iter(half))[0].dtype == torch.bfloat16


def test_every_sample_once_per_epoch_and_batch_count() -> None:
    x, labels = images(70), torch.arange(70) % 7
    batches = Batches(x, labels, 16, mean=torch.zeros(3), std=torch.ones(3), shuffle=True, augment=("crop", "flip"))
    assert len(batches) == 5
    for _ in range(2):
        seen = torch.cat([y for _, y in batches])
        assert sorted(seen.tolist()) == sorted(labels.tolist())
    epoch1, epoch2 = (torch.cat([y for _, y in batches]) for _ in range(2))
    assert not torch.equal(epoch1, epoch2)  # a fresh permutation each epoch

    dropped = Batches(x, labels, 16, mean=torch.zeros(3), std=torch.ones(3), shuffle=True, drop_last=True)
    sizes = [len(y) for _, y in dropped]
    assert len(dropped) == 4 and sizes == [16, 16, 16, 16]
    assert len(Batches(x[:10], labels[:10], 16, mean=torch.zeros(3), std=torch.ones(3), drop_last=True)) == 0


def test_determinism_by_seed() -> None:
    x = images(40)

    def epochs(seed: int) -> list[torch.Tensor]:
        batches = raw(x, shuffle=True, augment=("crop", "flip"), generator=torch.Generator().manual_seed(seed))
        return [xb for _ in range(2) for xb, _ in batches]

    a, b, c = epochs(1), epochs(1), epochs(2)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not any(torch.equal(u, v) for u, v in zip(a, c, strict=True))


def test_crop_is_a_window_of_the_reflect_padded_image() -> None:
    x = images(64, size=12)
    (xb, yb), *_ = list(raw(x, augment=("crop",), generator=torch.Generator().manual_seed(3)))
    padded = F.pad(x.float(), (CROP_PADDING,) * 4, mode="reflect")  # (N, 3, 20, 20)
    span = 2 * CROP_PADDING + 1
    found = []
    for out, i in zip(xb, yb.tolist(), strict=True):
        windows = [
            (dy, dx)
            for dy in range(span)
            for dx in range(span)
            if torch.equal(out, padded[i, :, dy : dy + 12, dx : dx + 12])
        ]
        assert len(windows) == 1, f"sample {i}: not exactly one window of the padded image matches"
        found.append(windows[0])
    # the content really moves, by many different offsets in both directions
    assert len(set(found)) > 20
    assert len({dy for dy, _ in found}) >= 7 and len({dx for _, dx in found}) >= 7


def test_flip_mirrors_about_half() -> None:
    x = images(256, size=8)
    (xb, yb), *_ = list(raw(x, augment=("flip",), generator=torch.Generator().manual_seed(0)))
    flipped = 0
    for out, i in zip(xb, yb.tolist(), strict=True):
        same, mirrored = torch.equal(out, x[i].float()), torch.equal(out, x[i].flip(-1).float())
        assert same != mirrored
        flipped += mirrored
    assert 0.35 < flipped / 256 < 0.65


def test_channels_last_when_asked() -> None:
    x = images(8)
    xb, _ = next(iter(raw(x, channels_last=True, augment=("crop", "flip"))))
    assert xb.is_contiguous(memory_format=torch.channels_last) and not xb.is_contiguous()
    xb, _ = next(iter(raw(x)))
    assert xb.is_contiguous()


@pytest.mark.parametrize("augment", [(), ("crop", "flip")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_gives_the_same_values(augment: tuple[str, ...], dtype: torch.dtype) -> None:
    x = images(40)
    mean, std = normalization(x)

    def epoch(channels_last: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        batches = Batches(
            x,
            torch.arange(40),
            16,
            mean=mean,
            std=std,
            augment=augment,
            shuffle=True,
            generator=torch.Generator().manual_seed(5),
            channels_last=channels_last,
            dtype=dtype,
        )
        return list(batches)

    for (a, ya), (b, yb) in zip(epoch(True), epoch(False), strict=True):
        assert a.dtype == b.dtype == dtype and a.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(ya, yb) and torch.equal(a, b)  # bit for bit: the layout changes no value
        expected = (x[ya].float() - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
        if not augment:  # (x - mean) / std, to the precision of the dtype
            tol = 1e-5 if dtype == torch.float32 else 1e-2
            torch.testing.assert_close(a.float(), expected.to(dtype).float(), rtol=tol, atol=tol)


def test_rejects_bad_arguments() -> None:
    x = images(8)
    with pytest.raises(ValueError, match="unknown augmentation"):
        raw(x, augment=("rotate",))
    with pytest.raises(ValueError, match="uint8"):
        raw(x.float())
    with pytest.raises(ValueError, match="crop needs"):
        raw(images(8, size=4), augment=("crop",))

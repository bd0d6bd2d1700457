"""The procedural ``shapes`` dataset: determinism, shapes and balance, speed, learnability, no colour shortcut."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from attnsearch.data.shapes import SHAPE_CLASSES, make_shapes

pytestmark = pytest.mark.usefixtures("one_thread")


def test_same_seed_same_bytes_and_global_rng_untouched() -> None:
    state = torch.get_rng_state()
    x1, y1 = make_shapes(64, 32, seed=3)
    x2, y2 = make_shapes(64, 32, seed=3)
    assert torch.equal(x1, x2)
    assert torch.equal(y1, y2)
    assert torch.equal(state, torch.get_rng_state())


def test_different_seeds_differ() -> None:
    x1, y1 = make_shapes(64, 32, seed=0)
    x2, y2 = make_shapes(64, 32, seed=1)
    assert not torch.equal(x1, x2)
    assert not torch.equal(y1, y2)


@pytest.mark.parametrize("size", [8, 32, 48, 33])
def test_dtype_shape_range_any_size(size: int) -> None:
    x, y = make_shapes(30, size, seed=0)
    assert x.shape == (30, 3, size, size)
    assert x.dtype == torch.uint8
    assert y.shape == (30,)
    assert y.dtype == torch.int64
    assert int(y.min()) >= 0 and int(y.max()) < len(SHAPE_CLASSES)
    assert int(x.max()) > 150 and int(x.min()) < 100  # uses the range, not a flat grey


def test_balanced_labels_and_edge_counts() -> None:
    _, y = make_shapes(1003, 16, seed=5)
    counts = torch.bincount(y, minlength=10)
    assert int(counts.max() - counts.min()) <= 1
    x0, y0 = make_shapes(0, 16, seed=0)
    assert x0.shape == (0, 3, 16, 16) and y0.shape == (0,)


def test_ten_distinct_classes() -> None:
    assert len(SHAPE_CLASSES) == 10
    assert len(set(SHAPE_CLASSES)) == 10


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="image_size"):
        make_shapes(4, 7, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        make_shapes(-1, 32, seed=0)


def test_ten_thousand_images_are_fast() -> None:
    start = time.perf_counter()
    x, _ = make_shapes(10_000, 32, seed=0)
    elapsed = time.perf_counter() - start
    assert x.shape == (10_000, 3, 32, 32)
    assert elapsed < 20.0, f"10,000 images took {elapsed:.1f} s"  # about 2.5 s on one core; generous for noise


@pytest.fixture(scope="module")
def train_val() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = make_shapes(2000, 32, seed=11)
    vx, vy = make_shapes(500, 32, seed=12)
    return x.float() / 127.5 - 1, y, vx.float() / 127.5 - 1, vy


def test_tiny_cnn_learns_it(train_val: tuple[torch.Tensor, ...]) -> None:
    x, y, vx, vy = train_val
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(2):
        for batch in torch.randperm(len(y)).split(32):
            loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (net(vx).argmax(1) == vy).float().mean().item()
    assert acc > 0.35, f"held-out accuracy {acc:.2f} after 2 epochs (chance 0.10)"


def test_mean_colour_says_nothing_about_the_class(train_val: tuple[torch.Tensor, ...]) -> None:
    x, y, vx, vy = train_val
    feats, vfeats = x.mean(dim=(2, 3)), vx.mean(dim=(2, 3))
    torch.manual_seed(0)
    clf = nn.Linear(3, 10)
    opt = torch.optim.Adam(clf.parameters(), lr=0.05)
    for _ in range(300):
        loss = nn.functional.cross_entropy(clf(feats), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = (clf(vfeats).argmax(1) == vy).float().mean().item()
    assert acc < 0.25, f"per-channel mean colour predicts the class with accuracy {acc:.2f}"

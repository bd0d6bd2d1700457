"""Verdicts on trained trials: two placements whose true effects are equal read as a tie; a placement with a large
true effect is separated. Both studies train for real on scikit-learn's digits (a tiny VGG reaches about 95% in
three epochs there), with two seeds per trial.

The modules are registered by the test and removed after it: ``twin_a`` and ``twin_b`` compute the same function
(SE, Hu et al. 2018) and differ only in the random numbers drawn while the model is built, so their scores differ by
noise alone; ``blackout`` zeroes its input, so nothing past block3 sees the image and the network guesses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from attnsearch.attention import registry
from attnsearch.attention.se import SqueezeExcite
from attnsearch.results import StudyResults
from attnsearch.search.runner import run_search
from attnsearch.space import parse_space
from tests.tiny import space as tiny_space

ADDED = ("twin_a", "twin_b", "blackout")


@pytest.fixture(autouse=True)
def test_modules() -> Iterator[None]:
    @registry.register_module("twin_a", paper="a copy of SE (Hu et al., CVPR 2018)")
    class TwinA(SqueezeExcite):
        pass

    @registry.register_module("twin_b", paper="a copy of SE that draws one more random number when built")
    class TwinB(SqueezeExcite):
        def __init__(self, channels: int, *, reduction: int = 16) -> None:
            torch.rand(1)  # shifts the random stream: the layers built after it start elsewhere
            super().__init__(channels, reduction=reduction)

    @registry.register_module("blackout", paper="a test module: zeroes its input")
    class Blackout(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 0.0

    yield
    for key in ADDED:
        registry._REGISTRY.pop(key, None)


def study(tmp_path: Path, modules: list[str]) -> StudyResults:
    data = tiny_space(
        slots={"block3": modules},
        data={"dataset": "digits", "train_size": 1000, "val_size": None},
        train={"epochs": 3},
        search={"sampler": "grid", "repeats": 2, "pruner": "none"},
    )
    return run_search(parse_space(data), results=tmp_path).results


def test_equal_true_effects_read_as_a_tie(tmp_path: Path) -> None:
    results = study(tmp_path, ["twin_a", "twin_b"])
    a, b = (next(r for r in results.ranked() if results.placed(r)["block3"] == m) for m in ("twin_a", "twin_b"))
    assert a.score("val_acc") != b.score("val_acc")  # the noise draws differ ...
    assert a.metrics.val_images == 359 and a.metrics.val_acc_std is not None  # 20% of digits' 1797, stratified
    verdict = results.verdicts()["block3"]
    assert verdict.tie and verdict.low < 0 < verdict.high  # ... and the verdict says they are not told apart
    assert results.best_modules() == {} and results.summary()["slots"]["block3"]["best"] is None


def test_a_large_true_effect_is_separated(tmp_path: Path) -> None:
    results = study(tmp_path, ["none", "blackout"])
    verdict = results.verdicts()["block3"]
    assert verdict.leader == "none" and verdict.separated and verdict.low > 0
    effect = next(e for e in results.effects() if e.module == "blackout")
    assert effect.high < 0 and not effect.tie
    assert results.best_modules() == {"block3": "none"}

"""A diverged trial fails alone as ``diverged`` and is never scored: a training loss that is not finite or has
exploded (:func:`attnsearch.train.exploded`), or a validation loss that is not finite, in any repeat."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnsearch.search.worker as worker_module
import attnsearch.train as train_module
from attnsearch.candidate import BackboneSpec, Candidate, TrainRecipe
from attnsearch.data.dataset import Dataset
from attnsearch.results import StudyResults
from attnsearch.search.events import NewBest
from attnsearch.search.runner import run_search
from attnsearch.search.store import ResultsStore
from attnsearch.search.worker import run_candidate
from attnsearch.space import parse_space
from attnsearch.train import train_model

pytestmark = [pytest.mark.reliability, pytest.mark.usefixtures("one_thread")]


def toy(n_train: int = 64, n_val: int = 32, classes: int = 4) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_train + n_val, 3, 8, 8), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, classes, (n_train + n_val,), generator=gen)
    return Dataset("toy", x[:n_train], y[:n_train], x[n_train:], y[n_train:], tuple(f"c{c}" for c in range(classes)))


def small(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, classes))


RECIPE = TrainRecipe(epochs=3, batch_size=16, lr=0.01, augment=(), channels_last=False)  # 4 steps an epoch


def test_the_issues_diverged_trial_fails_alone_and_is_never_ranked(
    tmp_path: Path, tiny_space: Callable[..., dict]
) -> None:
    """The issue's input: sgd at lr 1e4 on the tiny space (finite, huge training loss; NaN validation loss)."""
    space = parse_space(
        tiny_space(
            slots={"block3": ["none", "se"]},
            train={"epochs": 1, "optimizer": "sgd", "lr": [0.05, 1.0e4]},
            search={"sampler": "grid", "pruner": "none"},
        )
    )
    events: list = []
    outcome = run_search(space, results=tmp_path, on_event=events.append)
    records = ResultsStore(tmp_path / "tiny").read_records()
    states = {(r.label, r.candidate.train.lr): (r.state, r.reason) for r in records}
    assert states == {
        ("baseline (nothing placed)", 0.05): ("complete", None),
        ("baseline (nothing placed)", 1.0e4): ("failed", "diverged"),
        ("block3=se", 0.05): ("complete", None),
        ("block3=se", 1.0e4): ("failed", "diverged"),
    }
    results = StudyResults.from_store(tmp_path / "tiny")
    healthy = {r.number for r in records if r.state == "complete"}
    assert {r.number for r in results.ranked()} == healthy and results.best().number in healthy
    cells = results.slot_scores()["block3"]
    assert {m: c.count for m, c in cells.items()} == {"none": 1, "se": 1}  # the slot means count healthy trials only
    assert {e.record.number for e in events if isinstance(e, NewBest)} <= healthy  # never announced as best
    assert outcome.summary["states"] == {"complete": 2, "failed": 2}
    assert {row["number"] for row in outcome.summary["leaderboard"]} == healthy


@pytest.mark.parametrize("factor", [math.inf, math.nan, 1.0e6], ids=["+inf", "NaN", "finite but exploded"])
def test_a_training_loss_that_is_not_finite_or_explodes_is_diverged(monkeypatch, factor: float) -> None:
    """From the 6th step (epoch 2) the training loss is multiplied by ``factor``; the run stops there."""
    calls = {"n": 0}

    def loss(logits: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        calls["n"] += 1
        value = F.cross_entropy(logits, y, **kwargs)
        return value * factor if calls["n"] > 5 else value

    monkeypatch.setattr(train_module, "mixed_cross_entropy", loss)  # the training loss (plain labels here)
    reported: list[int] = []
    result = train_model(small(), toy(), RECIPE, report=lambda e, acc: bool(reported.append(e)), threads=1)
    assert (result.state, result.reason) == ("failed", "diverged")
    assert result.epochs_run == 1 and reported == [1]  # epoch 2 stopped at its 2nd step, neither kept nor reported
    assert calls["n"] == 6 if factor != 1.0e6 else calls["n"] >= 6


def test_a_healthy_run_is_not_taken_for_diverged() -> None:
    result = train_model(small(), toy(), dataclasses.replace(RECIPE, lr=0.5), threads=1)
    assert (result.state, result.reason, result.epochs_run) == ("complete", None, 3)
    assert all(h["train_loss"] < train_module.DIVERGENCE_FACTOR * math.log(4) for h in result.history)


class NaNWhenEvaluated(nn.Module):
    """Passes its input through in training; NaN in eval mode (a model whose validation loss is not finite)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.training else x * math.nan


def test_a_validation_loss_that_is_not_finite_is_diverged_with_a_finite_training_loss() -> None:
    reported: list[int] = []
    model = nn.Sequential(small(), NaNWhenEvaluated())
    result = train_model(model, toy(), RECIPE, report=lambda e, acc: bool(reported.append(e)), threads=1)
    assert (result.state, result.reason) == ("failed", "diverged")
    assert result.epochs_run == 1 and reported == []  # the epoch is kept in the history, not given to the pruner
    assert math.isfinite(result.train_loss) and math.isnan(result.val_loss)


def test_a_repeat_that_diverges_fails_the_trial(monkeypatch, tiny_dataset: Dataset) -> None:
    """search.repeats = 2: the first seed trains well, the second at lr 1e4 (sgd) diverges; the trial is diverged."""
    real = worker_module.train_model

    def second_seed_diverges(model, dataset, recipe, *, seed, **kwargs):
        if seed == candidate.seed + 1:
            recipe = dataclasses.replace(recipe, optimizer="sgd", lr=1.0e4)
        return real(model, dataset, recipe, seed=seed, **kwargs)

    monkeypatch.setattr(worker_module, "train_model", second_seed_diverges)
    candidate = Candidate(BackboneSpec("vgg11_bn", 0.125, "compact"), train=TrainRecipe(epochs=1, batch_size=32))
    outcome = run_candidate(candidate, tiny_dataset, device=torch.device("cpu"), repeats=2, threads=1)
    assert (outcome.state, outcome.reason) == ("failed", "diverged")
    assert [(r.seed, r.state) for r in outcome.repeats] == [(0, "complete"), (1, "failed")]

"""Trials that raise inside a module or run out of memory fail alone, with their reasons; the study goes on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from attnsearch.attention.cbam import CBAM
from attnsearch.attention.eca import EfficientChannelAttention
from attnsearch.search.runner import run_search
from attnsearch.search.store import ResultsStore
from attnsearch.space import parse_space

pytestmark = [pytest.mark.reliability, pytest.mark.usefixtures("one_thread")]

CHANGES = {"slots": {"block3": ["none", "cbam", "eca"]}, "train": {"epochs": 1}, "search": {"sampler": "grid"}}


def test_a_raising_module_and_an_out_of_memory_fail_their_trials_only(
    tmp_path: Path, monkeypatch, tiny_space: Callable[..., dict]
) -> None:
    calls = {"cbam": 0}

    def broken(self, x: torch.Tensor) -> torch.Tensor:
        calls["cbam"] += 1
        raise RuntimeError("a bug inside the module")

    def exhausted(self, x: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    # the cost pass runs on the meta device, where the module must still work: break it on real tensors only
    original_cbam, original_eca = CBAM.forward, EfficientChannelAttention.forward
    monkeypatch.setattr(CBAM, "forward", lambda self, x: original_cbam(self, x) if x.is_meta else broken(self, x))
    monkeypatch.setattr(
        EfficientChannelAttention, "forward", lambda self, x: original_eca(self, x) if x.is_meta else exhausted(self, x)
    )
    run_search(parse_space(tiny_space(**CHANGES)), results=tmp_path)
    trials = {t.label: t for t in ResultsStore(tmp_path / "tiny").read_records()}
    assert trials["baseline (nothing placed)"].state == "complete"
    broken_trial, oom_trial = trials["block3=cbam"], trials["block3=eca"]
    assert broken_trial.state == "failed" and "RuntimeError: a bug inside the module" in broken_trial.reason
    assert oom_trial.state == "failed" and oom_trial.reason == "oom"
    assert calls["cbam"] >= 1

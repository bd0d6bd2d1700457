"""run_candidate's costs: counted once per structure, latency measured per trial, memory from the first step."""

from __future__ import annotations

import pytest
import torch

import attnsearch.search.worker as worker
from attnsearch.candidate import BackboneSpec, Candidate, DataSpec, PlacementSpec, TrainRecipe
from attnsearch.costs import count_flops, count_params
from attnsearch.data import Dataset

import tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def candidate(lr: float, module: str = "se") -> Candidate:
    return Candidate(
        backbone=BackboneSpec("vgg11_bn", 0.125, "compact"),
        placements=(PlacementSpec("block3", module),),
        train=TrainRecipe(epochs=1, batch_size=32, lr=lr, augment=()),
        data=DataSpec(**tiny.SPACE["data"]),  # what tiny_dataset holds
    )


def test_counts_are_shared_by_candidates_that_differ_only_in_training(
    monkeypatch: pytest.MonkeyPatch, tiny_dataset: Dataset
) -> None:
    dataset = tiny_dataset
    monkeypatch.setattr(worker, "_COUNTS", {})
    calls = []
    original = worker.measure_costs
    monkeypatch.setattr(worker, "measure_costs", lambda *a, **k: calls.append(1) or original(*a, **k))
    cpu = torch.device("cpu")
    first = worker.run_candidate(candidate(0.1), dataset, device=cpu)
    second = worker.run_candidate(candidate(0.01), dataset, device=cpu)
    other = worker.run_candidate(candidate(0.1, "eca"), dataset, device=cpu)
    assert len(calls) == 2  # se once for both learning rates, eca once
    assert first.state == second.state == other.state == "complete"
    # the shared counts are the model's own: params and FLOPs of the built network
    model = worker.build_candidate(candidate(0.01), dataset, seed=0)
    assert second.metrics.params == first.metrics.params == count_params(model)
    assert second.metrics.flops == count_flops(model, (1, 3, 32, 32))
    assert other.metrics.params != first.metrics.params
    # measured per trial: latency on the device, training memory from the first step
    for outcome in (first, second, other):
        assert outcome.metrics.latency_ms > 0
        assert outcome.metrics.train_memory_bytes > 32 * 8 * 32 * 32 * 4  # the first conv's output alone
    # the cache's counts are copied into each trial's metrics: a trial's own figures never change the cache's
    worker._COUNTS[next(iter(worker._COUNTS))]["params"] = -1
    assert first.metrics.params == second.metrics.params == count_params(model)

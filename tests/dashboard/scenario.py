"""A run of the tiny space told as Events: two complete trials, one pruned, one failed, one infeasible, one running."""

from __future__ import annotations

from attnsearch.candidate import BackboneSpec, Candidate, PlacementSpec, TrainRecipe
from attnsearch.dashboard.state import DashboardState
from attnsearch.record import EpochRecord, Metrics, TrialRecord, WorkerInfo
from attnsearch.search.events import EpochEnded, Event, NewBest, RunStarted, TrialEnded, TrialStarted
from attnsearch.space import parse_space

import tiny  # tests/tiny.py: the tiny space (a fixture cannot reach a module like this one)


def candidate(**placed: str) -> Candidate:
    placements = tuple(PlacementSpec(slot, module) for slot, module in placed.items())
    return Candidate(BackboneSpec("vgg11_bn", 0.125), placements, TrainRecipe(epochs=3))


def trial(
    number: int,
    c: Candidate,
    end: str,
    score: float | None,
    reason: str | None = None,
    *,
    params: int = 150_000,
) -> list[Event]:
    """One trial's events: started, its epochs (none when infeasible), and how it ended."""
    worker = WorkerInfo(host="node-a", pid=1, device="cpu")
    running = TrialRecord(number, "running", candidate=c)
    events: list[Event] = [TrialStarted(running)]
    epochs = 0 if end == "infeasible" else 1 if end == "pruned" else 3
    for epoch in range(1, epochs + 1):
        events.append(EpochEnded(number, epoch, 3, 0.3, worker))
    history = tuple(EpochRecord(e, 1.0, 0.3, None, 1.0, 64, 0.01, 1.0, 0.1) for e in range(1, epochs + 1))
    metrics = Metrics(
        val_acc=score, val_images=1000, params=params, flops=5_200_000, train_seconds=4.0, images_per_second=900.0
    )
    state = "complete" if end == "finished" else end
    events.append(TrialEnded(TrialRecord(number, state, reason, c, metrics=metrics, history=history, worker=worker)))
    return events


def scenario(objectives: list[dict] | None = None, *, second: float = 0.75) -> list[Event]:
    """The run's events; ``second``: the score of its second trial (block3=se block5=eca) against the baseline's
    0.50, both on 1000 validation images (0.75: separated at both slots; 0.51: within noise, a tie)."""
    search = {"objectives": objectives, "pruner": "none"} if objectives else {"pruner": "median"}
    space = parse_space(tiny.space(train={"epochs": 3}, search=search), check_data=False)
    events: list[Event] = [RunStarted(space, target=8, finished=0)]
    events += trial(0, candidate(), "finished", 0.50)
    events.append(NewBest(events[-1].record))
    events += trial(1, candidate(block3="se", block5="eca"), "finished", second)
    events.append(NewBest(events[-1].record))
    events += trial(2, candidate(block3="cbam"), "pruned", 0.10)
    events += trial(3, candidate(block5="eca"), "failed", None, "diverged")
    events += trial(4, candidate(block3="cbam", block5="eca"), "infeasible", None, "params 2e+05 > max_params 1e+05")
    c = candidate(block3="se")
    events.append(TrialStarted(TrialRecord(5, "running", candidate=c)))
    events.append(EpochEnded(5, 2, 3, 0.625, WorkerInfo(device="cpu")))
    return events


def state_of(events: list[Event]) -> DashboardState:
    state = DashboardState()
    for i, event in enumerate(events):
        state.apply(event, now=1_000.0 + 10 * i)
    return state

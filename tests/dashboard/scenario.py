"""A run told as Events: two complete trials, one pruned, one failed, one infeasible, one running."""

from __future__ import annotations

from attnsearch.candidate import BackboneSpec, Candidate, PlacementSpec, TrainRecipe
from attnsearch.dashboard.state import DashboardState
from attnsearch.search.runner import Event
from attnsearch.space import parse_space

SPACE = {
    "name": "demo-study",
    "backbone": {"name": "vgg11_bn", "width": 0.125},
    "slots": {"block3": ["none", "se", "cbam"], "block5": ["none", "eca"]},
    "train": {"epochs": 3},
    "search": {"sampler": "random", "n_trials": 8, "pruner": "median"},
}


def candidate(**placed: str) -> Candidate:
    placements = tuple(PlacementSpec(slot, module) for slot, module in placed.items())
    return Candidate(BackboneSpec("vgg11_bn", 0.125), placements, TrainRecipe(epochs=3))


def trial(number: int, c: Candidate, end: str, score: float | None, reason: str | None = None) -> list[Event]:
    worker = {"host": "node-a", "pid": 1, "device": "cpu"}
    events = [Event("started", number, c.describe(), {"candidate": c, "worker": {}})]
    epochs = 1 if end == "pruned" else 3
    if end != "infeasible":
        for epoch in range(1, epochs + 1):
            events.append(Event("epoch", number, "", {"epoch": epoch, "epochs": 3, "value": 0.3, "worker": worker}))
    metrics = {"params": 150_000, "flops": 5.2e6, "train_seconds": 4.0, "images_per_second": 900.0}
    if score is not None:
        metrics["val_acc"] = score
    events.append(Event(end, number, c.describe(), {"metrics": metrics, "reason": reason}))
    return events


def scenario(objectives: list[dict] | None = None) -> list[Event]:
    source = dict(SPACE)
    if objectives:
        source["search"] = {**SPACE["search"], "objectives": objectives, "pruner": "none"}
    space = parse_space(source, check_data=False)
    events = [Event("run", text="demo", data={"space": space, "target": 8, "finished": 0, "folder": None})]
    events += trial(0, candidate(), "finished", 0.50)
    events.append(Event("best", 0, "baseline (nothing placed)  val_acc 50.00%"))
    events += trial(1, candidate(block3="se", block5="eca"), "finished", 0.75)
    events.append(Event("best", 1, "block3=se block5=eca  val_acc 75.00%"))
    events += trial(2, candidate(block3="cbam"), "pruned", 0.10)
    events += trial(3, candidate(block5="eca"), "failed", None, "diverged")
    events += trial(4, candidate(block3="cbam", block5="eca"), "infeasible", None, "params 2e+05 > max_params 1e+05")
    c = candidate(block3="se")
    events.append(Event("started", 5, c.describe(), {"candidate": c, "worker": {}}))
    events.append(Event("epoch", 5, "", {"epoch": 2, "epochs": 3, "value": 0.625, "worker": {"device": "cpu"}}))
    return events


def state_of(events: list[Event]) -> DashboardState:
    state = DashboardState()
    for i, event in enumerate(events):
        state.apply(event, now=1_000.0 + 10 * i)
    return state

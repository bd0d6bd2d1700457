"""A confirmation race told by hand, without training: the tiny space searched as a grid (6 trials on 1000
validation images each), then its top 3 and the baseline raced over 3 shared seeds, as events and as a folder.

The race's scores (``RACE``) were chosen so that its verdict has one of everything: block3=se beats the baseline
(+2.4 pt [1.2, 3.7] over 3 seeds), block3=se block5=eca is not separated from it (+0.8 pt [-2.3, 4.0]), and
block3=cbam is dropped after round 2, wholly behind the leader. Each trial also scores a test split of 2,000 images
(its validation score minus one point), which decides nothing.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import yaml

from attnsearch.candidate import BackboneSpec, Candidate, PlacementSpec, TrainRecipe
from attnsearch.entrants import confirm_candidate, confirm_data, confirm_seeds, select_entrants
from attnsearch.record import Metrics, TrialRecord, WorkerInfo, timestamp
from attnsearch.results import StudyResults
from attnsearch.search.events import (
    ConfirmEnded,
    ConfirmEpochEnded,
    ConfirmRoundEnded,
    ConfirmStarted,
    ConfirmTrialEnded,
    ConfirmTrialStarted,
    Event,
    RunStarted,
)
from attnsearch.search.store import ResultsStore
from attnsearch.space import SearchSpace, parse_space

import tiny

SOURCE = tiny.space(search={"sampler": "grid", "pruner": "none", "confirm": {"top": 3, "seeds": 3}})
SEARCH = {  # placements -> validation accuracy of its one search trial
    (): 0.70,
    (("block3", "se"),): 0.80,
    (("block3", "se"), ("block5", "eca")): 0.79,
    (("block3", "cbam"),): 0.76,
    (("block3", "cbam"), ("block5", "eca")): 0.74,
    (("block5", "eca"),): 0.72,
}
RACE = {  # label -> its score in each round it ran (cbam: dropped after round 2)
    "block3=se": [0.800, 0.812, 0.821],
    "block3=se block5=eca": [0.790, 0.800, 0.795],
    "block3=cbam": [0.700, 0.706],
    "baseline (nothing placed)": [0.770, 0.790, 0.800],
}
WORKER = WorkerInfo(device="cpu")
T0 = float(int(time.time()) - 3600)  # the scenario's clock: its first event, an hour ago (a live pid began before)


def space() -> SearchSpace:
    return parse_space(SOURCE, check_data=False)


def stamp(seconds: float) -> str:
    """A record's timestamp for the scenario's clock (UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(seconds))


def search_records() -> list[TrialRecord]:
    found = []
    for number, (placed, acc) in enumerate(SEARCH.items()):
        candidate = Candidate(
            BackboneSpec("vgg11_bn", 0.125, "compact"),
            tuple(PlacementSpec(s, m) for s, m in placed),
            TrainRecipe(epochs=2, batch_size=32, lr=0.05),
        )
        metrics = Metrics(val_acc=acc, val_images=1000, params=150_000, flops=5_200_000, train_seconds=4.0)
        when = stamp(T0 + 10 * number)
        found.append(TrialRecord(number, "complete", candidate=candidate, metrics=metrics, started=when, finished=when))
    return found


def race_records(upto: tuple[int, int] | None = None) -> list[tuple[str, TrialRecord]]:
    """(event, record) of the race in order: ``started`` then ``ended`` for each trial, round by round, the trials of
    a round one after another; ``upto`` (round, index in it): stop with that trial started, not ended."""
    sp = space()
    results = StudyResults.from_space(sp, search_records())
    confirm = sp.config.search.confirm
    assert confirm is not None
    seeds = confirm_seeds(sp.name, confirm.seeds, avoid=[0])
    entrants = select_entrants(results, confirm.top)
    steps: list[tuple[str, TrialRecord]] = []
    number = 0
    for r, seed in enumerate(seeds, 1):
        index = 0
        for entrant in entrants:
            label = entrant.candidate.describe()
            if r > len(RACE[label]):
                continue  # dropped
            candidate = confirm_candidate(entrant.candidate, confirm, seed, confirm_data(sp))
            at = T0 + 100 + 10 * number
            running = TrialRecord(
                number, "running", candidate=candidate, phase="confirm", confirm_round=r,
                confirm_of=entrant.search_trial, started=stamp(at), worker=WORKER,
            )  # fmt: skip
            steps.append(("started", running))
            if upto == (r, index):
                return steps
            score = RACE[label][r - 1]
            metrics = Metrics(val_acc=score, params=150_000, train_seconds=4.0)
            done = replace(
                running, state="complete", metrics=metrics, finished=stamp(at + 5), test_acc=score - 0.01,
                test_images=2000,
            )  # fmt: skip
            steps.append(("ended", done))
            number += 1
            index += 1
    return steps


def events(upto: tuple[int, int] | None = None) -> list[Event]:
    """The run's events: a continued study whose search is over (its 6 records), then the race as
    :mod:`attnsearch.search.confirm` tells it, up to ``upto`` (see :func:`race_records`), epochs reported."""
    sp = space()
    searched = search_records()
    found: list[Event] = [RunStarted(sp, target=6, finished=6, records=tuple(searched))]
    results = StudyResults.from_space(sp, searched)
    labels = tuple(e.candidate.describe() for e in select_entrants(results, 3))
    found.append(ConfirmStarted(labels, 3, "2 epochs on 128 training images"))
    rounds = 0
    for kind, record in race_records(upto):
        if kind == "started":
            found.append(ConfirmTrialStarted(record))
            found.append(ConfirmEpochEnded(record.number, 1, 2))
            continue
        found.append(ConfirmEpochEnded(record.number, 2, 2, record.metrics.val_acc))
        found.append(ConfirmTrialEnded(record))
        results = results.with_confirm_record(record)
        verdict = results.confirmation()
        if verdict.rounds > rounds:
            rounds = verdict.rounds
            remaining = verdict.remaining
            means = {c.label: sum(c.scores.values()) / len(c.scores) for c in remaining}
            dropped = tuple(c.label for c in verdict.contenders if c.dropped_in == rounds)
            leader = max(means, key=lambda label: means[label])
            found.append(ConfirmRoundEnded(rounds, leader, dropped, tuple(c.label for c in remaining)))
    if upto is None:
        found.append(ConfirmEnded(results.confirmation()))
    return found


def write_folder(root: Path, upto: tuple[int, int] | None = None, *, worker: WorkerInfo | None = None) -> Path:
    """The scenario written as a results folder under ``root`` (``tiny/``): space.yaml, the search's records and the
    race's, each trial's last record; ``worker``: the one the trial left running names, started now (so that a pid
    alive now is not taken for one used again since)."""
    store = ResultsStore(root / "tiny")
    store.create(yaml.safe_dump(SOURCE).encode())
    for record in search_records():
        store.write_record(record)
    last = {record.number: record for _, record in race_records(upto)}
    for record in last.values():
        if record.state == "running" and worker is not None:
            record = replace(record, worker=worker, started=timestamp())
        store.write_record(record)
    return store.root

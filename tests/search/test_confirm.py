"""The confirmation race (search.confirm): its YAML section, who races, shared seeds and initialisation, the rule
that drops a contender, a real race, resuming it after kill -9, and a test split that decides nothing."""

from __future__ import annotations

import json
import shutil
import signal
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from click.testing import CliRunner

import attnsearch.data as data_module
from attnsearch.candidate import BackboneSpec, Candidate, PlacementSpec, TrainRecipe
from attnsearch.cli import main
from attnsearch.confirmation import describe_confirmation, judge
from attnsearch.data import load_dataset
from attnsearch.record import Metrics, TrialRecord
from attnsearch.results import StudyResults
from attnsearch.search import confirm as confirm_module
from attnsearch.search.confirm import confirm_seeds, run_confirmation, select_entrants
from attnsearch.search.executor import Job
from attnsearch.search.runner import RunInterrupted, run_search
from attnsearch.search.store import ResultsStore
from attnsearch.search.worker import TrialOutcome, build_candidate, run_candidate, share_backbone
from attnsearch.space import SpaceError, parse_space
from attnsearch.model import build_model
from processes import wait_for_line

T975_1 = 12.706204736174705  # Student's t, 0.975 quantile, 1 degree of freedom
T975_2 = 4.302652729749464  # ... 2 degrees of freedom

BARE = Candidate(BackboneSpec("vgg11_bn", 0.125), (), TrainRecipe(epochs=1))


def placed(*modules: str) -> Candidate:
    """BARE with ``modules`` at block3 (and block5 for a second one)."""
    slots = ("block3", "block5")
    return replace(BARE, placements=tuple(PlacementSpec(s, m) for s, m in zip(slots, modules, strict=False)))


def confirm_record(number: int, candidate: Candidate, r: int, score: float | None, **fields: Any) -> TrialRecord:
    metrics = Metrics(val_acc=score, val_images=fields.pop("val_images", None))
    state = fields.pop("state", "complete")
    return TrialRecord(
        number, state, candidate=replace(candidate, seed=1000 + r), metrics=metrics, phase="confirm",
        confirm_round=r, **fields,
    )  # fmt: skip


def race_records(scores: dict[Candidate, list[float]], **fields: Any) -> list[TrialRecord]:
    """One complete record per contender and round, numbered round by round in the order given."""
    found = []
    for r in range(1, max(len(s) for s in scores.values()) + 1):
        for candidate, values in scores.items():
            if r <= len(values):
                found.append(confirm_record(len(found), candidate, r, values[r - 1], **fields))
    return found


# ---------------------------------------------------------------------------------------------- the YAML section


def test_confirm_section_defaults_switches_and_errors(tiny_space: Callable[..., dict]) -> None:
    def confirm_of(value: Any) -> Any:
        return parse_space(tiny_space(search={"confirm": value})).config.search.confirm

    assert parse_space(tiny_space()).config.search.confirm is None  # absent: off
    default = confirm_of({})
    assert (default.top, default.seeds, default.epochs, default.train_size) == (3, 5, None, None)
    assert confirm_of(True) == default and confirm_of(None) is None and confirm_of(False) is None
    given = confirm_of({"top": 2, "seeds": 4, "epochs": 6, "train_size": "all"})
    assert (given.top, given.seeds, given.epochs, given.train_size) == (2, 4, 6, "all")
    for value, message in [
        ({"tops": 2}, "search.confirm.tops: unknown key; valid: top, seeds, epochs, train_size"),
        ({"seeds": 1}, "search.confirm.seeds: must be greater than or equal to 2"),
        ({"top": 0}, "search.confirm.top: must be greater than or equal to 1"),
        ({"epochs": "3"}, "search.confirm.epochs: must be a valid integer, got '3'"),
        (3, "search.confirm: must be a valid dictionary"),
    ]:
        with pytest.raises(SpaceError) as caught:
            confirm_of(value)
        assert str(caught.value).startswith(message), caught.value
    with pytest.raises(SpaceError, match=r"^search.confirm.epochs: the recipe's budget is train.steps"):
        parse_space(tiny_space(train={"steps": 10}, search={"confirm": {"epochs": 2}}))


def test_a_bad_confirm_section_is_one_line_and_exit_2(tiny_space_file: Callable[..., Path]) -> None:
    result = CliRunner().invoke(main, ["validate", str(tiny_space_file(search={"confirm": {"seed": 3}}))])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "search.confirm.seed: unknown key; valid: top, seeds, epochs, train_size" in result.output
    assert len(result.output.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- who races


def search_record(number: int, candidate: Candidate, score: float, **fields: Any) -> TrialRecord:
    return TrialRecord(number, "complete", candidate=candidate, metrics=Metrics(val_acc=score), **fields)


def test_the_top_distinct_candidates_and_the_baseline_once() -> None:
    se, cbam, eca = placed("se"), placed("cbam"), placed("eca")
    study = StudyResults(
        {
            0: search_record(0, se, 0.80),
            1: search_record(1, replace(se, seed=7), 0.79),  # the same candidate with another seed: not distinct
            2: search_record(2, cbam, 0.90, reused_from=5),  # a reused duplicate is no trial of the ranking
            3: search_record(3, eca, 0.70),
            4: search_record(4, BARE, 0.60),
            5: search_record(5, cbam, 0.50),
        }
    )
    entrants = select_entrants(study, 2)
    assert [(e.candidate.describe(), e.search_trial, e.baseline) for e in entrants] == [
        ("block3=se", 0, False),
        ("block3=eca", 3, False),
        ("baseline (nothing placed)", 4, True),  # the search tried it: trial 4
    ]
    # the baseline among the top is there once, at its rank
    assert [e.search_trial for e in select_entrants(study, 4)] == [0, 3, 4, 5]
    # a baseline the search never tried: built from the best candidate, nothing placed
    without = StudyResults({0: search_record(0, se, 0.8)})
    (_, base) = select_entrants(without, 3)
    assert base.candidate == BARE and base.search_trial is None
    assert select_entrants(StudyResults(), 3) == []


def test_round_seeds_are_shared_fixed_fresh_and_never_the_searchs() -> None:
    seeds = confirm_seeds("tiny", 5)
    assert seeds == confirm_seeds("tiny", 5) and len(set(seeds)) == 5 and seeds != confirm_seeds("other", 5)
    assert all(0 <= s < 2**31 for s in seeds)
    avoided = confirm_seeds("tiny", 5, avoid=[seeds[1]])
    assert seeds[1] not in avoided and avoided[0] == seeds[0]


# ---------------------------------------------------------------------------------------------- shared initialisation


def test_a_candidates_backbone_layers_start_as_the_baselines(tiny_dataset: Any) -> None:
    candidate, bare = placed("se", "eca"), BARE
    model = build_candidate(candidate, tiny_dataset, 11, init_from=bare)
    baseline = build_candidate(bare, tiny_dataset, 11)
    mine, reference = model.state_dict(), baseline.state_dict()
    assert set(reference) < set(mine)
    for name, tensor in reference.items():  # every backbone layer, by name: features.8 is features.8 in both
        assert torch.equal(mine[name], tensor), name
    inserted = sorted(set(mine) - set(reference))
    assert inserted and all("_attn." in name for name in inserted)
    # the inserted modules' own weights come from the seed: as the search builds the candidate, another seed differs
    alone = build_candidate(candidate, tiny_dataset, 11).state_dict()
    other = build_candidate(candidate, tiny_dataset, 12, init_from=bare).state_dict()
    weights = [n for n in inserted if mine[n].is_floating_point() and mine[n].numel() > 1]
    assert weights and all(torch.equal(mine[n], alone[n]) for n in weights)
    assert any(not torch.equal(mine[n], other[n]) for n in weights)


def test_sharing_matches_layers_by_name_not_by_position() -> None:
    # built with different seeds, so only a copy makes them equal; a densenet's per-layer modules sit inside the
    # dense layers ('attn'), a VGG's between the layers of a Sequential, shifting every index after them
    for backbone, placements in [
        ("vgg11_bn", {"block1": "se", "block3": "cbam"}),
        ("densenet_bc100", {"denseblock1_layers": "se", "transition1": "eca"}),
    ]:
        options = {"num_classes": 10, "width": 0.25, "head": "compact", "image_size": 32}
        torch.manual_seed(1)
        model = build_model(backbone, placements, **options)
        torch.manual_seed(2)
        bare = build_model(backbone, **options)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        copied = share_backbone(model, bare)
        after = model.state_dict()
        assert copied == list(bare.state_dict())
        assert all(torch.equal(after[k], v) for k, v in bare.state_dict().items())
        own = [k for k in after if k not in bare.state_dict()]
        assert own and all(torch.equal(after[k], before[k]) for k in own)
        first = next(k for k, v in bare.state_dict().items() if v.ndim == 4)
        assert not torch.equal(before[first], after[first])  # the seeds differed: something was copied
    with pytest.raises(ValueError, match="cannot share initialisation"):
        share_backbone(build_model("vgg11_bn", width=0.125, image_size=32), bare)


# ---------------------------------------------------------------------------------------------- the rule


def test_a_contender_wholly_below_the_leader_is_dropped_one_that_overlaps_stays() -> None:
    se, cbam, eca = placed("se"), placed("cbam"), placed("eca")
    scores = {
        se: [0.80, 0.82, 0.81],  # the leader
        cbam: [0.75, 0.76, 0.77],  # se - cbam: 0.05, 0.06, 0.04
        eca: [0.81, 0.79, 0.82],  # overlaps the leader
        BARE: [0.70, 0.72, 0.71],
    }
    verdict = judge(race_records(scores), seeds=3)
    by = {c.label: c for c in verdict.contenders}
    # round 2: cbam - se = -0.05, -0.06: mean -0.055, sd 0.00707 -> -0.055 +- 12.706 * 0.005: [-0.1185, 0.0085], kept
    # round 3: -0.05, -0.06, -0.04: mean -0.05, sd 0.01 -> -0.05 +- 4.3027 * 0.01 / sqrt(3): [-0.0748, -0.0252]
    assert by["block3=cbam"].dropped_in == 3 and by["block3=eca"].dropped_in is None
    # the baseline: 0.10, 0.10 below se in rounds 1-2 -> sd 0: dropped in round 2 (a zero-width interval)
    assert by["baseline (nothing placed)"].dropped_in == 2
    assert verdict.rounds == 3 and verdict.finished
    # the verdict against the baseline, per placement: se - baseline = 0.10, 0.10, 0.10 (sd 0: no width)
    cbam_vs = [0.05, 0.04, 0.06]
    half = T975_2 * statistics.stdev(cbam_vs) / 3**0.5
    assert by["block3=cbam"].difference == pytest.approx(0.05)
    assert (by["block3=cbam"].low, by["block3=cbam"].high) == pytest.approx((0.05 - half, 0.05 + half))
    eca_vs = [0.11, 0.07, 0.11]
    mean, half = statistics.fmean(eca_vs), T975_2 * statistics.stdev(eca_vs) / 3**0.5
    assert (by["block3=eca"].low, by["block3=eca"].high) == pytest.approx((mean - half, mean + half))
    assert [c.label for c in verdict.winners] == ["block3=se", "block3=eca", "block3=cbam"]


def test_the_rule_by_hand_two_rounds_minimize_and_failures() -> None:
    se, cbam = placed("se"), placed("cbam")
    # two rounds: se leads; cbam - se = -0.02, -0.04: mean -0.03, sd 0.01414 -> -0.03 +- 12.706 * 0.01 = [-0.157, 0.097]
    verdict = judge(race_records({se: [0.80, 0.82], cbam: [0.78, 0.78], BARE: [0.70, 0.75]}), seeds=5)
    by = {c.label: c for c in verdict.contenders}
    assert [c.dropped_in for c in verdict.contenders] == [None, None, None] and not verdict.finished
    vs = [0.10, 0.07]
    mean, half = 0.085, T975_1 * statistics.stdev(vs) / 2**0.5
    assert (by["block3=se"].difference, by["block3=se"].low, by["block3=se"].high) == pytest.approx(
        (mean, mean - half, mean + half)
    )
    lines = describe_confirmation(verdict)
    assert lines[0] == "race in progress: 2 of 5 seed rounds finished"
    assert "block3=se: +8.5 pt [-10.6, 27.6] over 2 seeds: not separated" in lines
    assert "no placement beats the baseline so far (the race goes on)" in lines  # not a conclusion mid-race
    # minimized: a contender wholly *above* the leader is the worse one
    loss = judge(race_records({se: [0.50, 0.52, 0.51], cbam: [0.55, 0.56, 0.57]}), metric="val_acc", seeds=3,
                 direction="minimize")  # fmt: skip
    assert [(c.label, c.dropped_in) for c in loss.contenders] == [("block3=se", None), ("block3=cbam", 3)]
    # a contender whose trial fails on its own is out from that round; one killed or running has not ended its round
    records = race_records({se: [0.80, 0.82], BARE: [0.70, 0.71]})
    failing = [
        confirm_record(9, cbam, 1, None, state="failed", reason="diverged"),
        confirm_record(10, placed("eca"), 1, None, state="failed", reason="interrupted"),
    ]
    verdict = judge([*records, *failing], seeds=5)
    assert verdict.rounds == 0  # eca's round 1 is not over
    verdict = judge([*records, failing[0]], seeds=5)
    assert verdict.rounds == 2 and {c.label: c.dropped_in for c in verdict.contenders}["block3=cbam"] == 1
    assert "block3=cbam: no paired score against the baseline (diverged)" in describe_confirmation(verdict)


def test_the_interval_is_never_narrower_than_the_scores_noise() -> None:
    # cbam trails by 0.05 twice: a zero-width t interval, dropped. With 1000 validation images behind each score,
    # their binomial noise (Wilson se ~0.013 each) makes the mean difference's se ~0.0134: 1.96 * 0.0134 ~ 0.026 <
    # 0.05, dropped too; with 100 images (se ~0.04 each, ~0.042 for the mean) it is kept
    scores = {placed("se"): [0.80, 0.82], placed("cbam"): [0.75, 0.77]}
    assert [c.dropped_in for c in judge(race_records(scores), seeds=3).contenders] == [None, 2]
    assert [c.dropped_in for c in judge(race_records(scores, val_images=1000), seeds=3).contenders] == [None, 2]
    assert [c.dropped_in for c in judge(race_records(scores, val_images=100), seeds=3).contenders] == [None, None]


# ---------------------------------------------------------------------------------------------- the race, driven


class TableExecutor:
    """Trains nothing: each trial's score comes from ``table`` (label -> score per round, by the candidate's seed)."""

    def __init__(self, table: dict[str, list[float]], seeds: list[int], capacity: int = 2, fail: set = frozenset()):
        self.table, self.seeds, self.capacity, self.fail = table, seeds, capacity, fail
        self.queue: list[Job] = []
        self.trained: list[tuple[str, int]] = []
        self.closed = False
        from attnsearch.record import WorkerInfo

        self.worker = WorkerInfo(host="table")

    def submit(self, job: Job) -> None:
        assert job.init_from is not None and job.init_from.placements == () and job.score_test
        self.queue.append(job)

    def wait(self, on_report: Any) -> list[tuple[Job, TrialOutcome]]:
        done, self.queue = self.queue[: self.capacity], self.queue[self.capacity :]
        out = []
        for job in done:
            r = self.seeds.index(job.candidate.seed) + 1
            label = job.candidate.describe()
            self.trained.append((label, r))
            if (label, r) in self.fail:
                out.append((job, TrialOutcome("failed", "interrupted")))
                continue
            on_report(job.number, 1, self.table[label][r - 1], self.worker)
            metrics = Metrics(val_acc=self.table[label][r - 1])
            out.append((job, TrialOutcome("complete", metrics=metrics, test_acc=0.5, test_images=10)))
        return out

    def stop(self) -> None: ...

    def close(self) -> None:
        self.closed = True


def test_the_race_drops_trains_no_dropped_one_stops_with_one_left_and_resumes(
    tmp_path: Path, tiny_space: Callable[..., dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    space = parse_space(tiny_space(search={"confirm": {"top": 2, "seeds": 5}}))
    se, cbam = placed("se"), placed("cbam")
    split = {"validation": "generated", "test_images": 64}  # the search's data have a test split
    found = [search_record(n, c, score, split=split) for n, c, score in [(0, se, 0.8), (1, cbam, 0.7), (2, BARE, 0.6)]]
    search = StudyResults.from_space(space, found)
    store = ResultsStore(tmp_path / "tiny")
    seeds = confirm_seeds("tiny", 5, avoid=[0])
    table = {"block3=se": [0.80, 0.81], "block3=cbam": [0.60, 0.62], "baseline (nothing placed)": [0.70, 0.70]}
    # round 2: cbam - se = -0.20, -0.19: [-0.259, -0.131], and the baseline -0.10, -0.11: [-0.169, -0.041]: both
    # dropped (equal differences without recorded noise would give no interval, and drop nothing)
    first = TableExecutor(table, seeds, fail={("block3=cbam", 2)})  # a stop signal reached it
    monkeypatch.setattr(confirm_module._Race, "_executor", lambda self, *_: first)
    events: list[Any] = []
    with pytest.raises(RunInterrupted):
        run_confirmation(space, store, search, emit=events.append)
    assert first.closed and first.trained == [("block3=se", 1), ("block3=cbam", 1), ("baseline (nothing placed)", 1),
                                              ("block3=se", 2), ("block3=cbam", 2)]  # fmt: skip
    assert json.loads((tmp_path / "tiny" / "summary.json").read_text())["confirmation"]["rounds"] == 1
    # started again: the complete trials stay, the interrupted one (and the round's last) are trained
    again = TableExecutor(table, seeds)
    monkeypatch.setattr(confirm_module._Race, "_executor", lambda self, *_: again)
    events.clear()
    results = run_confirmation(space, store, search, emit=events.append)
    assert again.trained == [("block3=cbam", 2), ("baseline (nothing placed)", 2)]
    verdict = results.confirmation()
    assert verdict.finished and verdict.rounds == 2 and [c.label for c in verdict.remaining] == ["block3=se"]
    assert [c.label for c in verdict.winners] == ["block3=se"]
    assert describe_confirmation(verdict)[0] == "block3=se beats the baseline by +10.5 pt [4.1, 16.9] over 2 seeds"
    assert [e.kind for e in events].count("confirm round") == 1 and events[-1].kind == "confirmed"
    records = store.read_confirm_records()
    assert [r.number for r in records] == [0, 1, 2, 3, 4, 5] and records[4].reason is None
    assert {(r.confirm_round, r.candidate.seed) for r in records} == {(1, seeds[0]), (2, seeds[1])}
    # a race that is over trains nothing and makes no executor
    monkeypatch.setattr(confirm_module._Race, "_executor", lambda self, *_: pytest.fail("trained again"))
    assert run_confirmation(space, store, search, emit=events.append).confirmation() == verdict


# ---------------------------------------------------------------------------------------------- a real race


# a grid of four placements (block3 always holds one, so the best is never the baseline), one epoch each, and a race
# at another budget
RACE = {
    "slots": {"block3": ["se", "cbam"], "block5": ["none", "eca"]},
    "train": {"epochs": 1},
    "search": {"sampler": "grid", "pruner": "none", "confirm": {"top": 2, "seeds": 2, "epochs": 2}},
}


@pytest.fixture(scope="module")
def raced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny space searched (a grid of 4 trials of 1 epoch) and raced (2 placements and the baseline, 2 rounds
    of 2 epochs) once; its results folder (a test that writes copies it)."""
    import tiny

    space = parse_space(tiny.space(**RACE))
    results = tmp_path_factory.mktemp("raced")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_search(space, results=results, on_event=None)
    finally:
        torch.set_num_threads(before)
    return results / "tiny"


def test_a_real_race_records_apart_from_the_search(raced: Path, tmp_path: Path) -> None:
    store = ResultsStore(raced)
    results = StudyResults.from_store(store)
    search_only = StudyResults.from_space(results.space, store.read_records())
    # nothing of the search counts the race's trials
    assert results.done == search_only.done == 4 and results.counts() == search_only.counts()
    assert [r.number for r in results.ranked()] == [r.number for r in search_only.ranked()]
    assert results.slot_scores() == search_only.slot_scores() and results.effects() == search_only.effects()
    journal = shutil.copy(raced / "journal.log", tmp_path / "journal.log")  # read from a copy: no lock file there
    assert len(optuna.load_study(study_name="tiny", storage=_journal(Path(journal))).trials) == 4
    records = store.read_confirm_records()
    assert len(records) == 6 and all(r.phase == "confirm" and r.state == "complete" for r in records)
    search_seeds = {r.candidate.seed for r in results.records.values()}
    for r in (1, 2):
        round_records = [x for x in records if x.confirm_round == r]
        assert len({x.candidate.seed for x in round_records}) == 1  # one seed per round, shared
        assert round_records[0].candidate.seed not in search_seeds
    assert {x.candidate.train.epochs for x in records} == {2}  # the race's budget, not the search's
    entrants = select_entrants(results, 2)
    assert {x.confirm_of for x in records} == {e.search_trial for e in entrants}
    for x in records:
        raw = json.loads(store.confirm_record_path(x.number).read_text())
        assert raw["test_images"] == 64 and 0 <= raw["test_acc"] <= 1 and "test_acc" not in raw["metrics"]
        assert raw["confirm_round"] == x.confirm_round and raw["phase"] == "confirm"
    for n in store.trial_numbers():  # a search record holds none of the race's keys
        assert not {"test_acc", "confirm_round", "confirm_of"} & set(json.loads(store.record_path(n).read_text()))
    summary = json.loads((raced / "summary.json").read_text())
    assert summary["confirmation"]["finished"] and summary["confirmation"]["rounds"] == 2
    assert summary["confirmation"] == results.confirmation().to_dict()
    lines = describe_confirmation(results.confirmation())
    assert lines[-1].startswith("test split (64 images; reported only, never used to select): ")


def test_the_test_split_decides_nothing(
    raced: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_dataset: Any
) -> None:
    # the race again from the same search, every test label changed: the same trials, scores and verdict
    folder = tmp_path / "tiny"
    shutil.copytree(raced, folder, ignore=shutil.ignore_patterns("confirm", "summary.json"))

    def shifted(spec: Any, *, test: bool = False) -> Any:
        dataset = load_dataset(spec, test=test)
        if dataset.test_y is None:
            return dataset
        return replace(dataset, test_y=(dataset.test_y + 1) % dataset.num_classes)

    monkeypatch.setattr(data_module, "load_dataset", shifted)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        space = ResultsStore(folder).read_space()
        run_search(space, results=tmp_path, on_event=None)
    finally:
        torch.set_num_threads(before)
    first, second = ResultsStore(raced).read_confirm_records(), ResultsStore(folder).read_confirm_records()
    assert [(r.candidate, r.metrics.val_acc) for r in first] == [(r.candidate, r.metrics.val_acc) for r in second]
    assert [r.test_acc for r in first] != [r.test_acc for r in second]  # the labels did change what it scored
    a, b = StudyResults.from_store(raced).confirmation(), StudyResults.from_store(folder).confirmation()
    assert [(c.label, c.dropped_in, c.difference, c.low) for c in a.contenders] == [
        (c.label, c.dropped_in, c.difference, c.low) for c in b.contenders
    ]
    # and one trial by hand: the test split is scored after training, apart from every metric
    candidate = replace(placed("se"), data=BARE.data, train=TrainRecipe(epochs=1, batch_size=32))
    data = load_dataset(replace(BARE.data, train_size=64, val_size=32), test=True)
    plain = run_candidate(candidate, data, device=torch.device("cpu"), threads=1)
    scored = run_candidate(candidate, data, device=torch.device("cpu"), threads=1, score_test=True)
    assert plain.test_acc is None and scored.test_images == 32 and scored.metrics == replace(
        plain.metrics, latency_ms=scored.metrics.latency_ms, train_seconds=scored.metrics.train_seconds,
        images_per_second=scored.metrics.images_per_second,
    )  # fmt: skip


def test_a_dataset_without_a_test_split_races_with_one_note(
    tmp_path: Path, tiny_space: Callable[..., dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    space = parse_space(tiny_space(data={"dataset": "digits"}, search={"confirm": {"top": 1, "seeds": 2}}))
    split = load_dataset(space.data_spec()).split  # what the search's trials record of it
    assert "test_images" not in split
    search = StudyResults.from_space(
        space, [search_record(0, placed("se"), 0.8, split=split), search_record(1, BARE, 0.7, split=split)]
    )
    table = {"block3=se": [0.8, 0.8], "baseline (nothing placed)": [0.7, 0.7]}
    executor = TableExecutor(table, confirm_seeds("tiny", 2, avoid=[0]))
    executor.jobs = []

    def submit(job: Job) -> None:
        executor.jobs.append(job)
        executor.queue.append(job)

    executor.submit = submit  # type: ignore[method-assign]
    monkeypatch.setattr(confirm_module._Race, "_executor", lambda self, *_: executor)
    events: list[Any] = []
    run_confirmation(space, ResultsStore(tmp_path / "tiny"), search, emit=events.append)
    notes = [e.text for e in events if e.kind == "note"]
    assert notes == ["no test score: digits has no test split"]
    assert all(not job.score_test for job in executor.jobs)


# ---------------------------------------------------------------------------------------------- kill -9


def _journal(path: Path) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


@pytest.mark.slow
def test_the_race_resumes_after_kill_9(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    # the race's trials train 512 images for 3 epochs: the kill lands inside one
    confirm = {"top": 1, "seeds": 2, "epochs": 3, "train_size": 512}
    path = tiny_space_file(**{**RACE, "search": {**RACE["search"], "confirm": confirm}})
    results = tmp_path / "results"
    argv = [sys.executable, "-m", "attnsearch", "run", str(path), "--results", str(results), "--no-dashboard"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_line(process, "confirmation trial 1 epoch 1/3")  # trial 0 is complete, trial 1 trains
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    folder = results / "tiny"
    store = ResultsStore(folder)
    before = {r.number: r for r in store.read_confirm_records()}
    assert before[0].state == "complete" and before[1].state == "running"
    kept = store.confirm_record_path(0).read_bytes()
    search_before = [store.record_path(n).read_bytes() for n in store.trial_numbers()]
    again = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert store.confirm_record_path(0).read_bytes() == kept  # not trained again
    assert [store.record_path(n).read_bytes() for n in store.trial_numbers()] == search_before
    after = store.read_confirm_records()
    assert [r.number for r in after] == [0, 1, 2, 3] and all(r.state == "complete" for r in after)
    assert "confirmation trial 1 was running when the last run stopped: trained again" in again.stdout
    verdict = StudyResults.from_store(store).confirmation()
    assert verdict.finished and verdict.rounds == 2
    assert "Confirmation race (shared seeds, paired 95% intervals against the baseline):" in again.stdout
    assert describe_confirmation(verdict)[0] in again.stdout
    assert yaml.safe_load(path.read_text())["search"]["confirm"] == confirm


def test_the_race_events_show_on_the_dashboard_apart_from_the_search_and_print_one_line_each() -> None:
    import io

    from attnsearch.dashboard.state import DashboardState
    from attnsearch.search.events import (
        ConfirmEnded,
        ConfirmEpochEnded,
        ConfirmRoundEnded,
        ConfirmStarted,
        ConfirmTrialEnded,
        ConfirmTrialStarted,
    )
    from attnsearch.search.log import plain_log

    running = confirm_record(0, placed("se"), 1, None, state="running")
    done = confirm_record(0, placed("se"), 1, 0.8)
    verdict = judge(race_records({placed("se"): [0.8, 0.82], BARE: [0.7, 0.71]}), seeds=2)
    events = [
        ConfirmStarted(("block3=se", "baseline (nothing placed)"), 2, "1 epochs on 128 training images"),
        ConfirmTrialStarted(running),
        ConfirmEpochEnded(0, 1, 1, 0.8),
        ConfirmTrialEnded(done),
        ConfirmRoundEnded(1, "block3=se", (), ("block3=se", "baseline (nothing placed)")),
        ConfirmEnded(verdict),
    ]
    state = DashboardState()
    for event in events[:3]:  # the confirmation trial runs: shown apart from the search's trials, its epochs too
        state.apply(event)
    assert not state.running and not state.results.records and list(state.confirm_running) == [0]
    assert (state.confirm_running[0].label, state.confirm_running[0].epoch) == ("confirm r1 block3=se", 1)
    for event in events[3:]:
        state.apply(event)
    # never a search trial: no record, no count, nothing running; its record is the race's, its verdict the event's
    assert not state.results.records and state.results.counts()["done"] == 0 and not state.confirm_running
    assert state.results.confirm_records == {0: done} and state.confirmation() is verdict
    assert [line.kind for line in state.events] == ["confirm", "round", "confirmed"]
    out = io.StringIO()
    emit = plain_log(out)
    for event in events:
        emit(event)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(events) and not any(line[9:].startswith("trial ") for line in lines)
    assert lines[1].endswith("confirm started: confirmation trial 0 (round 1, seed 1001): block3=se")
    assert lines[3].endswith("confirm finished: confirmation trial 0 (round 1): block3=se  val_acc 80.00%")
    assert lines[-1].endswith("confirmed: after 2 seed rounds: block3=se beats the baseline")


def test_no_race_when_the_baseline_leads_the_top_or_nothing_completed(
    tmp_path: Path, tiny_space: Callable[..., dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    space = parse_space(tiny_space(search={"confirm": {"top": 1, "seeds": 2}}))
    monkeypatch.setattr(confirm_module._Race, "_executor", lambda self, *_: pytest.fail("trained"))
    store = ResultsStore(tmp_path / "tiny")
    for found, note in [
        ([search_record(0, BARE, 0.8), search_record(1, placed("se"), 0.7)],
         "no confirmation race: the baseline leads the top 1 (raise search.confirm.top)"),
        ([], "no confirmation race: the search has no complete trial"),
    ]:  # fmt: skip
        events: list[Any] = []
        results = run_confirmation(space, store, StudyResults.from_space(space, found), emit=events.append)
        assert [e.text for e in events] == [note] and not results.confirm_records and not store.confirm_numbers()


def test_the_verdict_read_back_races_the_searchs_current_leaders(tiny_space: Callable[..., dict]) -> None:
    from attnsearch.entrants import confirm_candidate, confirm_data, race_keys

    space = parse_space(tiny_space(search={"confirm": {"top": 1, "seeds": 2, "epochs": 3}}))
    confirm, data = space.config.search.confirm, confirm_data(space)
    se, cbam = placed("se"), placed("cbam")
    search = [search_record(0, cbam, 0.7), search_record(1, BARE, 0.6), search_record(2, se, 0.8)]

    def raced(candidate: Candidate, r: int, score: float, number: int) -> TrialRecord:
        again = confirm_candidate(candidate, confirm, 1000 + r, data)
        return TrialRecord(number, "complete", candidate=again, metrics=Metrics(val_acc=score), phase="confirm",
                           confirm_round=r)  # fmt: skip

    # cbam led when a first race ran; the search went on and se leads now: cbam's records are not the race's
    old = [raced(c, r, s, n) for n, (c, r, s) in enumerate([(cbam, 1, 0.9), (BARE, 1, 0.6), (cbam, 2, 0.9)])]
    new = [raced(c, r, s, n) for n, (c, r, s) in enumerate([(se, 1, 0.8), (se, 2, 0.82), (BARE, 2, 0.7)], 3)]
    results = StudyResults.from_space(space, search, confirm_records=[*old, *new])
    keys = race_keys(space, results)
    assert keys == [new[0].candidate.key(), old[1].candidate.key()]  # se, then the baseline
    verdict = results.confirmation()
    assert [c.label for c in verdict.contenders] == ["block3=se", "baseline (nothing placed)"]
    assert verdict.rounds == 2 and verdict.contenders[0].pairs == 2
    # the records alone would have raced all three
    assert len(judge([*old, *new], seeds=2).contenders) == 3


def test_a_race_added_or_changed_after_the_search_is_the_same_study(raced: Path, tmp_path: Path) -> None:
    import tiny

    folder = tmp_path / "tiny"
    shutil.copytree(raced, folder)
    before = {n: ResultsStore(folder).record_path(n).read_bytes() for n in ResultsStore(folder).trial_numbers()}
    without = {**RACE, "search": {k: v for k, v in RACE["search"].items() if k != "confirm"}}
    outcome = run_search(parse_space(tiny.space(**without)), results=tmp_path)  # the race removed: not refused
    assert outcome.ran == 0 and len(ResultsStore(folder).read_confirm_records()) == 6
    longer = {**RACE, "search": {**RACE["search"], "confirm": {**RACE["search"]["confirm"], "seeds": 3}}}
    run_search(parse_space(tiny.space(**longer)), results=tmp_path)  # one more round, the same search
    store = ResultsStore(folder)
    rounds = sorted(r.confirm_round for r in store.read_confirm_records())
    assert rounds.count(3) >= 1 and rounds.count(1) == rounds.count(2) == 3 and len(rounds) <= 9
    assert {n: store.record_path(n).read_bytes() for n in store.trial_numbers()} == before  # no search trial ran
    assert yaml.safe_load(store.space_path.read_text())["search"]["confirm"]["seeds"] == 3

"""TrialRecord: typed and versioned, standard JSON on disk, old records read, a bad one a line naming file and key."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from attnsearch.candidate import BackboneSpec, Candidate, PlacementSpec
from attnsearch.errors import AttnsearchError
from attnsearch.record import SCHEMA, EpochRecord, Metrics, TrialRecord, WorkerInfo, counts_towards_target
from attnsearch.search.store import ResultsStore, StoreError

GOLDEN = Path(__file__).parent / "golden" / "golden" / "trials" / "0" / "trial.json"  # written before the schema


def strict(text: str | bytes) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not standard JSON")

    return json.loads(text, parse_constant=refuse)


def record(**changes: object) -> TrialRecord:
    candidate = Candidate(BackboneSpec("vgg11_bn", 0.125), (PlacementSpec("block3", "se", (("reduction", 8),)),))
    fields = {
        "number": 4,
        "state": "complete",
        "candidate": candidate,
        "params": {"block3": "se"},
        "metrics": Metrics(val_acc=0.75, val_loss=0.9, params=1000, flops=2000),
        "history": (EpochRecord(1, 1.2, 0.75, 0.9, 0.9, 64, 0.01, 1.5, 0.1),),
        "worker": WorkerInfo(host="node", pid=7, device="cpu", threads=1),
        "classes": ("a", "b"),
        "started": "2026-11-29T10:00:00+0000",
        "finished": "2026-11-29T10:00:05+0000",
    }
    return TrialRecord(**{**fields, **changes})  # type: ignore[arg-type]


def test_round_trip_and_what_the_views_read() -> None:
    r = record()
    again = TrialRecord.from_json(r.to_json(), "trial.json")
    assert again == r and again.schema == SCHEMA
    assert again.label == "block3=se(reduction=8)" and again.score("val_acc") == 0.75 and again.score("params") == 1000
    assert again.score("latency_ms") is None and again.score("nonsense") is None
    assert again.finished_at - again.started_at == 5.0 and again.counts_towards_target
    data = strict(r.to_json())
    assert list(data)[:6] == ["schema", "number", "state", "reason", "placements", "candidate"]
    assert data["placements"] == "block3=se(reduction=8)" and data["candidate"]["placements"][0]["params"] == {
        "reduction": 8
    }
    # absent metrics and worker fields are left out; replay-only keys appear only on replays
    assert data["metrics"] == {"val_acc": 0.75, "val_loss": 0.9, "params": 1000, "flops": 2000}
    assert data["worker"] == {"host": "node", "pid": 7, "device": "cpu", "threads": 1}
    assert not {"reused_from", "replay_of", "overrides", "threads"} & set(data)
    replay = strict(record(replay_of=4, overrides={"epochs": 30}, threads=2).to_json())
    assert (replay["replay_of"], replay["overrides"], replay["threads"]) == (4, {"epochs": 30}, 2)


def test_nan_and_infinities_are_written_as_null() -> None:
    nan, inf = math.nan, math.inf
    r = record(
        metrics=Metrics(val_acc=0.5, val_loss=nan, train_loss=inf),
        history=(EpochRecord(1, -inf, 0.5, None, nan, 64, 0.01, 1.0, 0.1),),
        timings={"train": nan},
    )
    data = strict(r.to_json())  # a strict parser takes it
    assert data["metrics"] == {"val_acc": 0.5, "val_loss": None, "train_loss": None}
    assert data["history"][0]["train_loss"] is None and data["history"][0]["val_loss"] is None
    assert data["timings"] == {}  # left out (unknown): a null there would not read back as a number


def test_a_record_of_the_landed_main_is_read() -> None:
    text = GOLDEN.read_text()
    before = json.loads(text)
    assert "schema" not in before and "first_val_epoch" in before["candidate"]["train"]
    r = TrialRecord.from_json(text, str(GOLDEN))
    assert r.schema == SCHEMA and r.number == before["number"] and r.state == "complete"
    assert r.metrics.val_acc == before["metrics"]["val_acc"] and len(r.history) == len(before["history"])
    assert r.worker.threads == before["worker"]["threads"] and r.classes == tuple(before["classes"])
    # a NaN the old writer let through reads as null
    before["metrics"]["val_loss"] = math.nan
    assert TrialRecord.from_json(json.dumps(before), "old.json").metrics.val_loss is None


WHERE = "trials/4/trial.json"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(nonsense=1), f"{WHERE}: nonsense: unknown key"),
        (
            lambda d: d["metrics"].update(val_acc="high"),
            f'{WHERE}: metrics.val_acc: must be a valid number, got "high"',
        ),
        (lambda d: d.update(state="done"), f'{WHERE}: state: unknown state "done"; valid: running, complete, pruned'),
        (lambda d: d["candidate"]["train"].update(epochs=0), f"{WHERE}: candidate.train.epochs: must be greater than"),
        (lambda d: d["history"][0].pop("lr"), f"{WHERE}: history[0].lr: required key is missing"),
        (lambda d: d.update(schema=SCHEMA + 1), f"written by a newer attnsearch (record schema {SCHEMA + 1}"),
        (lambda d: d.pop("number"), "not a trial record (no trial number)"),
    ],
)
def test_a_bad_record_is_one_line_naming_the_file_and_the_key(change, message: str) -> None:
    data = json.loads(record().to_json())
    change(data)
    with pytest.raises(AttnsearchError) as caught:
        TrialRecord.from_dict(data, WHERE)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_store_writes_and_reads_records_only(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "study")
    store.write_record(record())
    store.write_record(record(number=5, state="running", metrics=Metrics(), history=()))
    assert [r.number for r in store.read_records()] == [4, 5]
    assert store.read_finished(4) == record()
    with pytest.raises(StoreError, match="trial 5 is running, not complete"):
        store.read_finished(5)
    with pytest.raises(StoreError, match="no such trial record"):
        store.read_record(9)
    (tmp_path / "study" / "trials" / "5" / "trial.json").write_text('{"number": 5, "state": ')
    with pytest.raises(StoreError, match=r"trials/5/trial.json: not a readable trial record"):
        store.read_records()


def test_what_counts_towards_the_target() -> None:
    assert [counts_towards_target(s, None) for s in ("complete", "pruned", "infeasible", "running")] == [
        True,
        True,
        True,
        False,
    ]
    assert counts_towards_target("failed", "diverged") and counts_towards_target("failed", "oom")
    for reason in ("killed", "interrupted", "worker_lost"):  # not the candidate's fault: it runs again
        assert not counts_towards_target("failed", reason)

"""`attnsearch replay`: a trial trained again from its trial.json alone reproduces its record on CPU."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import attnsearch as a
from attnsearch.candidate import Candidate
from attnsearch.cli import main
from attnsearch.replay import CUDA_TOLERANCE, ReplayResult, ranking_agreement, replay_trials

pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def replayed(finished_study: Path, tmp_path_factory: pytest.TempPathFactory) -> list[ReplayResult]:
    """The three best trials replayed from a copy of the study that has no Optuna journal."""
    folder = Path(shutil.copytree(finished_study, tmp_path_factory.mktemp("copied") / finished_study.name))
    (folder / "journal.log").unlink()
    return replay_trials(folder, top=3, device="cpu")


def test_cpu_replay_reproduces_the_record_exactly(finished_study: Path, replayed: list[ReplayResult]) -> None:
    records = [json.loads(path.read_text()) for path in finished_study.glob("trials/*/trial.json")]
    best = sorted(records, key=lambda t: (-t["metrics"]["val_acc"], t["number"]))[:3]  # ties: the lower number
    assert len(records) == 6 and sorted(r.trial for r in replayed) == sorted(t["number"] for t in best)
    for r in replayed:
        record = json.loads((finished_study / "trials" / str(r.trial) / "trial.json").read_text())
        assert r.state == "complete" and r.threads == 1 and r.tolerance == 0.0
        # bit-identical: the same accuracy and loss as recorded, and the same weights as the kept model.pt
        assert r.replayed["val_acc"] == record["metrics"]["val_acc"] and r.matches
        assert r.replayed["val_loss"] == record["metrics"]["val_loss"]
        assert r.weights_equal is True and r.saved is None


def test_replay_table_json_and_spearman(
    finished_study: Path, replayed: list[ReplayResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the command formats what the library returns: reuse the replays above instead of training again
    def fake(folder: object, trials: tuple[int, ...], **options: object) -> list[ReplayResult]:
        return [r for r in replayed if r.trial in trials] if trials else replayed

    monkeypatch.setattr("attnsearch.replay.replay_trials", fake)
    table = invoke("replay", str(finished_study), "--top", "3")
    assert table.exit_code == 0, table.output
    scores = [r.recorded["val_acc"] for r in replayed]
    expected = 1.0 if len(set(scores)) > 1 else None
    assert "Spearman rank correlation of val_acc, recorded vs replayed, over 3 trials:" in table.output
    assert ("1.000" if expected else "undefined") in table.output and "exactly" in table.output
    as_json = json.loads(invoke("replay", str(finished_study), "--top", "3", "--json").output)
    assert as_json["spearman"] == expected and as_json["kendall"] == expected and as_json["metric"] == "val_acc"
    assert [t["replayed"]["val_acc"] for t in as_json["trials"]] == [r.replayed["val_acc"] for r in replayed]
    one = invoke("replay", str(finished_study), "--trial", "0")
    assert one.exit_code == 0 and "val_acc reproduced exactly (cpu, 1 thread(s)" in one.output
    assert "weights identical to model.pt" in one.output and "Spearman" not in one.output


def test_longer_replay_is_a_new_record_and_leaves_the_trial_alone(
    study_copy: Path, snapshot: Callable[[Path], dict[str, bytes]]
) -> None:
    trials = snapshot(study_copy / "trials")
    summary = (study_copy / "summary.json").read_bytes()
    done = invoke("replay", str(study_copy), "--trial", "1", "--epochs", "2", "--lr", "0.02", "--json")
    assert done.exit_code == 0, done.output
    [result] = json.loads(done.output[done.output.index("{") :])["trials"]
    saved = Path(result["saved"])
    assert saved == study_copy / "replays" / "1-e2-lr0.02" and result["matches"] is None
    record = json.loads((saved / "trial.json").read_text())
    assert record["replay_of"] == 1 and record["state"] == "complete" and len(record["history"]) == 2
    candidate = Candidate.from_dict(record["candidate"])
    assert (
        candidate.train.epochs == 2 and candidate.train.lr == 0.02 and record["overrides"] == {"epochs": 2, "lr": 0.02}
    )
    assert record["metrics"]["val_acc"] == result["replayed"]["val_acc"]
    b = candidate.backbone
    model = a.build_model(b.name, candidate.placement_dict(), num_classes=10, width=b.width, head=b.head, image_size=32)
    model.load_state_dict(torch.load(saved / "model.pt", weights_only=True), strict=True)
    assert snapshot(study_copy / "trials") == trials and (study_copy / "summary.json").read_bytes() == summary


def test_a_record_from_cuda_is_held_to_the_tolerance(study_copy: Path) -> None:
    path = study_copy / "trials" / "0" / "trial.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "worker": {**record["worker"], "device": "cuda:0"}}))
    [result] = replay_trials(study_copy, [0], device="cpu")
    assert result.tolerance == CUDA_TOLERANCE and result.matches


def _pairs(recorded: list[float | None], replayed: list[float | None]) -> list[ReplayResult]:
    """Replays that carry only a recorded and a replayed val_acc: what ranking_agreement reads."""
    return [
        ReplayResult(
            i, "", "val_acc", {"val_acc": x}, {"val_acc": y}, "complete", None, {}, "cpu", 1, 0.0, x == y, None, None
        )
        for i, (x, y) in enumerate(zip(recorded, replayed, strict=True))
    ]


def test_ranking_agreement_by_hand() -> None:
    # the numbers the hand-written Spearman this replaced gave (scipy.stats now): ties share their average rank
    assert ranking_agreement(_pairs([1, 2, 3, 4], [10, 20, 30, 40])) == (pytest.approx(1.0), 4)
    assert ranking_agreement(_pairs([1, 2, 3, 4], [4, 3, 2, 1]))[0] == pytest.approx(-1.0)
    # [1, 2.5, 2.5, 4] vs [1, 3, 2, 4] -> 4.5 / sqrt(4.5 * 5)
    assert ranking_agreement(_pairs([1, 2, 2, 3], [1, 3, 2, 4]))[0] == pytest.approx(4.5 / math.sqrt(22.5))
    # ties on both sides: [1, 2.5, 2.5, 4.5, 4.5] vs [1.5, 1.5, 3, 4, 5] -> 8.25 / sqrt(9 * 9.5)
    assert ranking_agreement(_pairs([10, 20, 20, 30, 30], [1, 1, 2, 3, 4]))[0] == pytest.approx(8.25 / math.sqrt(85.5))
    assert ranking_agreement(_pairs([1, 2, 2, 3], [4, 3, 2, 1]))[0] == pytest.approx(-0.9486832980505138)
    # Kendall's tau-b by hand: 5 concordant, 1 discordant of 6 pairs -> 4/6; with a tie in x: 5 / sqrt(5 * 6)
    assert ranking_agreement(_pairs([1, 2, 3, 4], [10, 20, 40, 30]), "kendall")[0] == pytest.approx(4 / 6)
    assert ranking_agreement(_pairs([1, 2, 2, 3], [1, 3, 2, 4]), "kendall")[0] == pytest.approx(5 / math.sqrt(30))
    # undefined: one side constant, or fewer than three pairs with both scores
    assert ranking_agreement(_pairs([0.5, 0.5, 0.5], [1, 2, 3])) == (None, 3)
    assert ranking_agreement(_pairs([0.5, 0.5, 0.5], [1, 2, 3]), "kendall") == (None, 3)
    assert ranking_agreement(_pairs([1, 2, None], [1, 2, 3])) == (None, 2)
    with pytest.raises(ValueError, match="spearman"):
        ranking_agreement(_pairs([1, 2, 3], [1, 2, 3]), "pearson")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _damage(folder: Path, how: str, marker: Path) -> list[str]:
    """Break a copy of the study one way; return the replay arguments that meet the damage."""
    record = folder / "trials" / "1" / "trial.json"
    if how == "missing folder":
        shutil.rmtree(folder)
    elif how == "truncated record":
        record.write_bytes(record.read_bytes()[:50])
    elif how == "not a record":
        record.write_text("[1, 2, 3]")
    elif how == "not complete":
        record.write_text(json.dumps({**json.loads(record.read_text()), "state": "failed", "reason": "diverged"}))
    elif how == "bad candidate":
        record.write_text(json.dumps({**json.loads(record.read_text()), "candidate": {"nonsense": 1}}))
    elif how == "code in the weights":
        torch.save({"features.0.weight": _Evil(marker)}, folder / "trials" / "1" / "model.pt")
    elif how == "weights not a state_dict":
        torch.save([torch.zeros(2)], folder / "trials" / "1" / "model.pt")
    return {"unknown trial": ["--trial", "99"], "nothing asked": []}.get(how, ["--trial", "1"])


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing folder", "no such results folder"),
        ("unknown trial", "no such trial record"),
        ("truncated record", "not a readable trial record"),
        ("not a record", "not a trial record"),
        ("not complete", "trial 1 is failed (diverged), not complete"),
        ("bad candidate", "trial.json: candidate.nonsense: unknown key"),
        ("code in the weights", "not a weights file that loads safely"),
        ("weights not a state_dict", "not a state_dict"),
        ("nothing asked", "nothing to replay"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    study_copy: Path, tmp_path: Path, how: str, message: str, snapshot: Callable[[Path], dict[str, bytes]]
) -> None:
    marker = tmp_path / "PWNED"
    args = _damage(study_copy, how, marker)
    before = snapshot(tmp_path)
    done = invoke("replay", str(study_copy), *args, "--epochs", "2") if how == "not complete" else None
    if done is not None:  # with overrides as well as without: refused before any training
        assert done.exit_code == 2 and message in done.output
    done = invoke("replay", str(study_copy), *args)
    assert done.exit_code == 2, done.output
    assert done.output.startswith("attnsearch: error:") and done.output.count("\n") == 1
    assert message in done.output, done.output
    assert snapshot(tmp_path) == before and not marker.exists()

"""`attnsearch replay` at another budget (--train-size, --val-size, --epochs) and with --test: the overrides are
recorded and saved under replays/, the test split is scored once and shown apart from val, with Wilson intervals;
a dataset without a test split and a bad size are refused in one line before anything is trained or written."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import attnsearch as a
from attnsearch.candidate import Candidate
from attnsearch.cli import main
from attnsearch.data import load_dataset
from attnsearch.data.loader import normalization
from attnsearch.errors import AttnsearchError
from attnsearch.evaluation import evaluate
from attnsearch.replay import ReplayResult, replay_trials
from attnsearch.stats import wilson_interval

pytestmark = pytest.mark.usefixtures("one_thread")

BUDGET = {"epochs": 2, "train_size": 200, "val_size": "all"}  # shapes: "all" validation images are its 2,000


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def full_budget(finished_study: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ReplayResult]:
    """Trial 1 of a copy of the study, trained at BUDGET and scored on the test split: the copy and the result."""
    folder = Path(shutil.copytree(finished_study, tmp_path_factory.mktemp("budget") / finished_study.name))
    [result] = replay_trials(folder, [1], overrides=BUDGET, test=True, device="cpu")
    return folder, result


def test_overrides_are_recorded_and_saved_under_replays(finished_study: Path, full_budget: tuple[Path, Any]) -> None:
    folder, r = full_budget
    assert r.state == "complete" and r.saved == folder / "replays" / "1-e2-train200-valall"
    assert r.overrides == BUDGET and r.searched == {"epochs": 1, "train_size": 128, "val_size": 64}
    assert r.matches is None and r.tolerance is None and r.weights_equal is None  # another budget: no check
    record = json.loads((r.saved / "trial.json").read_text())
    candidate = Candidate.from_dict(record["candidate"])
    assert record["replay_of"] == 1 and record["state"] == "complete"
    assert (candidate.train.epochs, candidate.data.train_size, candidate.data.val_size) == (2, 200, None)
    # the record's overrides hold numbers only: "all" as the images the split held
    assert record["overrides"] == {"epochs": 2, "train_size": 200, "val_size": 2000}
    assert record["split"]["train_images"] == 200 and record["split"]["val_images"] == 2000
    assert record["metrics"]["val_images"] == r.replayed_images == 2000 and r.recorded_images == 64
    # the trial's own folder is as the search left it
    for name in ("trial.json", "model.pt"):
        assert (folder / "trials" / "1" / name).read_bytes() == (finished_study / "trials" / "1" / name).read_bytes()


def test_test_score_is_the_saved_weights_on_the_test_split(full_budget: tuple[Path, Any]) -> None:
    _, r = full_budget
    record = json.loads((r.saved / "trial.json").read_text())
    candidate = Candidate.from_dict(record["candidate"])
    data = load_dataset(candidate.data, test=True)
    assert data.test_x is not None and data.test_y is not None
    assert r.test_images == record["test_images"] == data.test_x.shape[0] == 2000
    # by hand: the saved weights scored on the test images, normalised with the training images' statistics
    b = candidate.backbone
    model = a.build_model(b.name, candidate.placement_dict(), num_classes=10, width=b.width, head=b.head, image_size=32)
    model.load_state_dict(torch.load(r.saved / "model.pt", weights_only=True), strict=True)
    mean, std = normalization(data.train_x)
    by_hand = evaluate(model, (data.test_x, data.test_y), mean=mean, std=std, precision="fp32")
    assert by_hand.count == 2000 and r.test_acc == record["test_acc"] == by_hand.accuracy
    # apart from every validation figure: no test key among the val metrics, and val scored on its own split
    assert "test_acc" not in r.replayed and not any("test" in key for key in record["metrics"])
    assert record["metrics"]["val_acc"] == evaluate(model, data, precision="fp32").accuracy == r.replayed["val_acc"]


def test_output_shows_test_apart_and_intervals(
    full_budget: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch, snapshot: Callable[[Path], dict[str, bytes]]
) -> None:
    folder, r = full_budget
    asked: dict[str, Any] = {}

    def fake(results_dir: object, trials: tuple[int, ...], **options: Any) -> list[ReplayResult]:
        asked.update(options)  # the command formats what the library returns: no second training
        return [r]

    monkeypatch.setattr("attnsearch.replay.replay_trials", fake)
    args = ("replay", str(folder), "--trial", "1", "--epochs", "2", "--train-size", "200", "--val-size", "ALL")
    done = invoke(*args, "--test")
    assert done.exit_code == 0, done.output
    assert asked["overrides"] == {**dict.fromkeys(("batch_size", "lr")), **BUDGET} and asked["test"] is True
    low, high = wilson_interval(round(r.test_acc * 2000), 2000)
    test_line = f"test accuracy {r.test_acc:.1%} [{low * 100:.1f}, {high * 100:.1f}] on 2000 images (Wilson 95%)"
    assert test_line in done.output
    low, high = wilson_interval(round(r.replayed["val_acc"] * 2000), 2000)
    val_line = f"val accuracy, replayed: {r.replayed['val_acc']:.1%} [{low * 100:.1f}, {high * 100:.1f}] on 2000"
    assert val_line in done.output and "val accuracy, recorded:" in done.output
    assert "Budget differs from the search's (epochs 1 -> 2, train_size 128 -> 200, val_size 64 -> all)" in done.output
    assert "not comparable" in done.output and "reproduced" not in done.output
    assert f"replay saved: {r.saved}" in done.output
    as_json = json.loads(invoke(*args, "--test", "--json").output)
    [trial] = as_json["trials"]
    assert trial["test_acc"] == r.test_acc and trial["test_images"] == 2000 and "test_acc" not in trial["replayed"]
    assert trial["intervals"]["test"] == list(wilson_interval(round(r.test_acc * 2000), 2000))
    # several trials: a test column, the intervals' sizes, and the warning against choosing by test score
    monkeypatch.setattr("attnsearch.replay.replay_trials", lambda *_, **__: [r, r])
    table = invoke("replay", str(folder), "--top", "2", "--test", "--epochs", "2")
    assert table.exit_code == 0, table.output
    assert "test_acc" in table.output and "Intervals: Wilson 95%, val_acc on 64 images recorded, 2000" in table.output
    assert "would select on test" in table.output


def test_overrides_equal_to_the_searched_values_are_a_plain_replay(
    study_copy: Path, snapshot: Callable[[Path], dict[str, bytes]]
) -> None:
    # --epochs and --train-size as the search had them change nothing: checked for exactness, nothing saved
    record = json.loads((study_copy / "trials/0/trial.json").read_text())["candidate"]
    same = {"epochs": record["train"]["epochs"], "train_size": record["data"]["train_size"]}
    before = snapshot(study_copy)
    [r] = replay_trials(study_copy, [0], overrides=same, device="cpu")
    assert r.overrides == {} and r.matches and r.tolerance == 0.0 and r.weights_equal is True and r.saved is None
    assert snapshot(study_copy) == before
    # one more epoch is a new budget: saved under replays/, no exactness check
    [longer] = replay_trials(study_copy, [0], overrides={"epochs": same["epochs"] + 1}, device="cpu")
    assert longer.overrides == {"epochs": same["epochs"] + 1} and longer.matches is None and longer.saved is not None


def test_exact_replay_with_test_still_reproduces_and_writes_nothing(
    study_copy: Path, snapshot: Callable[[Path], dict[str, bytes]]
) -> None:
    before = snapshot(study_copy)
    [r] = replay_trials(study_copy, [0], test=True, device="cpu")
    assert r.matches and r.tolerance == 0.0 and r.weights_equal is True and r.saved is None
    spec = Candidate.from_dict(json.loads((study_copy / "trials/0/trial.json").read_text())["candidate"]).data
    assert r.test_images == load_dataset(spec, test=True).test_x.shape[0] == 64 and 0.0 <= r.test_acc <= 1.0
    assert snapshot(study_copy) == before


def _as_digits(folder: Path) -> None:
    path = folder / "trials" / "1" / "trial.json"
    record = json.loads(path.read_text())
    record["candidate"]["data"] = {**record["candidate"]["data"], "dataset": "digits", "train_size": None}
    path.write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trial", "1", "--test"], "digits has no test split"),
        (["--trial", "1", "--test", "--epochs", "2", "--train-size", "all"], "digits has no test split"),
        (["--trial", "1", "--train-size", "0"], "Invalid value for '--train-size': '0' is not a positive integer"),
        (["--trial", "1", "--train-size", "lots"], "Invalid value for '--train-size': 'lots' is not a positive"),
        (["--trial", "1", "--val-size", "-1"], "Invalid value for '--val-size': '-1' is not a positive integer"),
        (["--trial", "1", "--val-size", "2.5"], "Invalid value for '--val-size': '2.5' is not a positive integer"),
    ],
)
def test_refused_in_one_line_before_training(
    study_copy: Path, tmp_path: Path, args: list[str], message: str, snapshot: Callable[[Path], dict[str, bytes]]
) -> None:
    if "--test" in args:
        _as_digits(study_copy)
    before = snapshot(tmp_path)
    done = invoke("replay", str(study_copy), *args)
    assert done.exit_code == 2, done.output
    # one line: no "replaying trial" line either, so no training started
    assert done.output.startswith("attnsearch: error:") and done.output.count("\n") == 1
    assert message in done.output, done.output
    assert snapshot(tmp_path) == before and not (study_copy / "replays").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train_size": 0}, "--train-size must be a positive integer or 'all', got 0"),
        ({"val_size": -1}, "--val-size must be a positive integer or 'all', got -1"),
        ({"train_size": "lots"}, "--train-size must be a positive integer or 'all', got 'lots'"),
        ({"train_size": True}, "--train-size must be a positive integer or 'all', got True"),
        ({"val_size": 2.0}, "--val-size must be a positive integer or 'all', got 2.0"),
        ({"image_size": 64}, "unknown override 'image_size'"),
    ],
)
def test_library_refuses_bad_sizes(study_copy: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(AttnsearchError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        replay_trials(study_copy, [1], overrides=overrides, device="cpu")
    assert not (study_copy / "replays").exists()


def test_a_replay_shows_each_epoch_and_the_time_left(study_copy: Path) -> None:
    done = invoke("replay", str(study_copy), "--trial", "1", "--epochs", "3")
    assert done.exit_code == 0, done.output
    lines = [line for line in done.output.splitlines() if line.startswith("replaying trial 1: epoch")]
    expected = [f"replaying trial 1: epoch {e}/3" for e in (1, 2, 3)]
    assert [line.split(",")[0].split(" (")[0] for line in lines] == expected
    assert "val_acc" not in lines[0] and "val_acc" in lines[2] and all("s left)" in line for line in lines)

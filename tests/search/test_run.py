"""`attnsearch run` end to end on CPU: the record on disk, resuming, duplicates, designs, constraints, faults."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import attnsearch as a
from attnsearch.cli import main
from attnsearch.search.store import ResultsStore
from processes import stop_signals_default, wait_for_line


def run(*args: str):
    return CliRunner().invoke(main, ["run", *args, "--no-dashboard"])


def strict_json(text: str) -> object:
    """JSON as the standard has it: NaN, Infinity and -Infinity are not JSON (Python's parser takes them)."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} written: not standard JSON")

    return json.loads(text, parse_constant=refuse)


def records(folder: Path) -> list[dict]:
    """Every trial.json of a study as the file holds it (standard JSON), by trial number."""
    numbers = ResultsStore(folder).trial_numbers()
    return [strict_json((folder / "trials" / str(n) / "trial.json").read_text()) for n in numbers]


def test_tiny_space_end_to_end(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    results = tmp_path / "results"
    done = run(str(tiny_space_file()), "--results", str(results), "--keep-weights", "1")
    assert done.exit_code == 0, done.output
    folder = results / "tiny"
    assert {p.name for p in folder.iterdir()} >= {"space.yaml", "journal.log", "trials", "summary.json"}
    assert yaml.safe_load((folder / "space.yaml").read_text())["name"] == "tiny"
    trials = records(folder)
    assert [t["number"] for t in trials] == [0, 1, 2]
    for t in trials:
        assert t["state"] == "complete" and t["reason"] is None
        assert 0 <= t["metrics"]["val_acc"] <= 1 and t["metrics"]["params"] > 0 and t["metrics"]["flops"] > 0
        assert len(t["history"]) == 2 and t["candidate"]["backbone"]["name"] == "vgg11_bn"
        # no pruner looks at epoch 1 (pruner: none): only the last epoch, the score, is validated
        assert t["schema"] == 1 and "first_val_epoch" not in t["candidate"]["train"]
        assert [h["val_images"] for h in t["history"]] == [0, 64] and t["history"][0]["val_acc"] is None
        assert t["versions"]["torch"] == torch.__version__ and t["worker"]["device"] == "cpu"
        assert set(t["timings"]) >= {"build", "costs", "train", "eval"}
    # the log: one plain line per event, and the leaderboard at the end
    assert done.output.count(" started: ") == 3 and done.output.count(" finished: ") == 3
    assert "Leaderboard" in done.output and "Best module per slot" in done.output
    summary = strict_json((folder / "summary.json").read_text())
    best = max(trials, key=lambda t: t["metrics"]["val_acc"])
    assert summary["best"]["number"] == best["number"]
    # --keep-weights 1: the best trial's weights, a plain state_dict that loads strictly into its model
    kept = sorted(p.parent.name for p in folder.glob("trials/*/model.pt"))
    assert kept == [str(best["number"])]
    candidate = best["candidate"]
    placements = {p["slot"]: {"type": p["module"], **p["params"]} for p in candidate["placements"]}
    model = a.build_model("vgg11_bn", placements, num_classes=10, width=0.125, head="compact", image_size=32)
    state = torch.load(folder / "trials" / str(best["number"]) / "model.pt", weights_only=True)
    model.load_state_dict(state, strict=True)


def test_running_again_continues_the_study(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    path, results = tiny_space_file(), tmp_path / "results"
    assert run(str(path), "--results", str(results), "--trials", "2").exit_code == 0
    first = records(results / "tiny")
    again = run(str(path), "--results", str(results), "--trials", "3")
    assert again.exit_code == 0, again.output
    after = records(results / "tiny")
    assert len(after) == 3 and after[:2] == first  # finished trials kept as they were
    assert "trial 2 " in again.output  # trained, or reused when the sampler proposed a finished candidate again
    assert "trial 0 " not in again.output and "trial 1 " not in again.output  # nothing finished runs again
    # a different space under the same name is refused, nothing touched
    changed = tiny_space_file(train={"epochs": 1})
    refused = run(str(changed), "--results", str(results))
    assert refused.exit_code == 2 and "different space" in refused.output
    assert records(results / "tiny") == after
    # --fresh moves the old study aside and starts again
    fresh = run(str(changed), "--results", str(results), "--fresh", "--trials", "1")
    assert fresh.exit_code == 0, fresh.output
    assert len(records(results / "tiny")) == 1
    assert len(list(results.glob("tiny.old-*"))) == 1


def test_duplicate_candidates_reuse_the_recorded_score(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    path = tiny_space_file(slots={"block3": ["se"]})  # one candidate only
    done = run(str(path), "--results", str(tmp_path / "r"))
    assert done.exit_code == 0, done.output
    first, *others = records(tmp_path / "r" / "tiny")
    assert first["state"] == "complete" and first.get("reused_from") is None
    assert [o["reused_from"] for o in others] == [0, 0]
    assert all(o["metrics"] == first["metrics"] and o["state"] == "complete" for o in others)
    assert done.output.count(" started: ") == 1 and done.output.count(" reused: ") == 2


def test_ablation_runs_baseline_and_each_single_placement(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    path = tiny_space_file(
        slots={"block3": ["none", "se", "eca"], "block5": ["none", "cbam"]},
        search={"sampler": "ablation", "n_trials": 1, "pruner": "none"},
        train={"epochs": 1},
    )
    done = run(str(path), "--results", str(tmp_path / "r"))
    assert done.exit_code == 0, done.output
    placed = sorted(t["placements"] for t in records(tmp_path / "r" / "tiny"))
    assert placed == sorted(["baseline (nothing placed)", "block3=se", "block3=eca", "block5=cbam"])


def test_grid_enumerates_and_refuses_above_the_limit(
    tmp_path: Path, monkeypatch, tiny_space_file: Callable[..., Path]
) -> None:
    path = tiny_space_file(search={"sampler": "grid", "n_trials": 1, "pruner": "none"}, train={"epochs": 1})
    monkeypatch.setattr("attnsearch.space.GRID_LIMIT", 4)
    refused = run(str(path), "--results", str(tmp_path / "r"))
    assert refused.exit_code == 2 and "grid of 6 candidates is above 4; pass --force" in refused.output
    assert not (tmp_path / "r").exists()
    done = run(str(path), "--results", str(tmp_path / "r"), "--force")
    assert done.exit_code == 0, done.output
    placed = {t["placements"] for t in records(tmp_path / "r" / "tiny")}
    assert len(placed) == 6


def test_infeasible_candidates_cost_no_training(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    plain = a.measure_costs(
        a.build_model("vgg11_bn", num_classes=10, width=0.125, head="compact", image_size=32), image_size=32
    )["params"]
    path = tiny_space_file(
        slots={"block3": ["none", "cbam"]},
        search={"sampler": "grid", "n_trials": 1, "pruner": "none", "constraints": {"max_params": plain + 1}},
    )
    done = run(str(path), "--results", str(tmp_path / "r"))
    assert done.exit_code == 0, done.output
    by_placement = {t["placements"]: t for t in records(tmp_path / "r" / "tiny")}
    infeasible = by_placement["block3=cbam"]
    assert infeasible["state"] == "infeasible" and "max_params" in infeasible["reason"]
    assert infeasible["metrics"]["params"] > plain and "train" not in infeasible["timings"]
    assert by_placement["baseline (nothing placed)"]["state"] == "complete"


def test_divergence_fails_the_trial_not_the_study(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    path = tiny_space_file(
        train={"epochs": 1, "lr": [0.05, 1.0e12], "label_smoothing": 0.0},
        slots={"block3": ["none"]},
        search={"sampler": "grid", "n_trials": 1, "pruner": "none"},
    )
    done = run(str(path), "--results", str(tmp_path / "r"))
    assert done.exit_code == 0, done.output
    trials = records(tmp_path / "r" / "tiny")  # standard JSON even where the loss went to infinity or NaN
    states = {t["candidate"]["train"]["lr"]: (t["state"], t["reason"]) for t in trials}
    assert states[1.0e12] == ("failed", "diverged") and states[0.05] == ("complete", None)


def test_pruning_stops_bad_trials_early(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    # three good trials first (grid order: lr outermost), then three that cannot learn (lr ~ 0): after their first
    # epoch they are below the median of the good ones, and the median pruner stops them
    path = tiny_space_file(
        train={"epochs": 3, "lr": [0.003, 1.0e-9], "optimizer": "adamw", "weight_decay": 0.05},
        data={"train_size": 2048, "val_size": 512},
        slots={"block3": ["none", "se", "eca"]},
        search={"sampler": "grid", "n_trials": 1, "pruner": "median"},
    )
    done = run(str(path), "--results", str(tmp_path / "r"))
    assert done.exit_code == 0, done.output
    trials = records(tmp_path / "r" / "tiny")
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned and all(len(t["history"]) < 3 for t in pruned)
    assert all(t["candidate"]["train"]["lr"] == 1.0e-9 for t in pruned)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"slots": {"block7": ["se"]}}, "slots.block7: unknown slot for vgg11_bn"),
        ({"data": {"dataset": "cifar10", "root": "/nonexistent/data"}}, "data: "),
        ({"data": {"dataset": "imagefolder", "root": None}}, "data: "),
    ],
)
def test_bad_space_writes_nothing(
    tmp_path: Path, changes: dict, message: str, tiny_space_file: Callable[..., Path]
) -> None:
    results = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "attnsearch",
            "run",
            str(tiny_space_file(**changes)),
            "--results",
            str(results),
            "--no-dashboard",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"attnsearch: error: {message}") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr and not results.exists()


def _start(path: Path, results: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "attnsearch", "run", str(path), "--results", str(results), "--no-dashboard"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=stop_signals_default,
    )


# a run these tests stop while it trains: a target it cannot reach while a test looks (distinct learning rates, so no
# trial reuses another's score); a test stops it once trial 1 trains, and judges whichever trial was running then
UNENDING = {
    "train": {"epochs": 3, "lr": {"low": 0.02, "high": 0.08}},
    "data": {"train_size": 256},
    "search": {"n_trials": 1000, "sampler": "random", "pruner": "none"},
}


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    path = tiny_space_file(**UNENDING)
    results = tmp_path / "results"
    process = _start(path, results)
    wait_for_line(process, "trial 1 epoch: epoch 1")  # trial 0 finished, trial 1 (or a later one by now) running
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    before = records(results / "tiny")
    done = [t for t in before if t["state"] != "running"]
    assert len(done) >= 1 and all(t["state"] == "complete" for t in done)
    # the trial it was training (none only where the kill fell between one trial's end and the next one's start)
    (killed,) = [t["number"] for t in before if t["state"] == "running"] or [None]
    argv = [sys.executable, "-m", "attnsearch", "run", str(path), "--results", str(results), "--no-dashboard"]
    again = subprocess.run(  # the target: the trials finished before, and one more (the killed one's candidate)
        [*argv, "--trials", str(len(done) + 1)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    trials = records(results / "tiny")
    assert trials[: len(done)] == done  # nothing finished was lost
    finished = [t for t in trials if t["state"] in ("complete", "pruned")]
    assert len(finished) == len(done) + 1  # the study reaches its target
    if killed is not None:
        assert trials[killed]["state"] == "failed" and trials[killed]["reason"] == "killed"
        retried = [t for t in trials if t.get("retry_of") == killed]
        assert len(retried) == 1 and retried[0]["params"] == trials[killed]["params"]


@pytest.mark.slow
def test_ctrl_c_records_the_running_trial_as_interrupted(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    path = tiny_space_file(**UNENDING)
    results = tmp_path / "results"
    process = _start(path, results)
    wait_for_line(process, "trial 1 epoch: epoch 1")
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 130, out
    found = re.search(r"attnsearch: interrupted: trial (\d+) recorded as failed \(interrupted\)", out)
    assert found is not None and "Traceback" not in out, out
    stopped = int(found.group(1))  # trial 1, or a later one where trial 1 ended before the signal came
    trials = records(results / "tiny")
    assert stopped >= 1 and all(t["state"] == "complete" for t in trials[:stopped])
    assert trials[stopped]["state"] == "failed" and trials[stopped]["reason"] == "interrupted"
    argv = [sys.executable, "-m", "attnsearch", "run", str(path), "--results", str(results), "--no-dashboard"]
    again = subprocess.run(
        [*argv, "--trials", str(stopped + 1)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert sum(t["state"] == "complete" for t in records(results / "tiny")) == stopped + 1
    assert os.path.exists(results / "tiny" / "summary.json")


def test_repeats_average_seeds_and_any_optuna_storage_works(
    tmp_path: Path, tiny_space_file: Callable[..., Path]
) -> None:
    path = tiny_space_file(
        slots={"block3": ["none", "se"]},
        train={"epochs": 1},
        search={"sampler": "grid", "n_trials": 1, "pruner": "none", "repeats": 2},
    )
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    done = run(str(path), "--results", str(tmp_path / "r"), "--storage", url)
    assert done.exit_code == 0, done.output
    assert (tmp_path / "shared.db").exists() and not (tmp_path / "r" / "tiny" / "journal.log").exists()
    for t in records(tmp_path / "r" / "tiny"):
        seeds = t["repeats"]
        assert [r["seed"] for r in seeds] == [0, 1]
        mean = (seeds[0]["val_acc"] + seeds[1]["val_acc"]) / 2
        assert t["metrics"]["val_acc"] == pytest.approx(mean)
        assert t["metrics"]["val_acc_std"] == pytest.approx(abs(seeds[0]["val_acc"] - seeds[1]["val_acc"]) / 2**0.5)
    summary = json.loads((tmp_path / "r" / "tiny" / "summary.json").read_text())
    assert summary["states"] == {"complete": 2}


def test_self_attention_on_a_large_map_is_judged_by_its_cost(
    tmp_path: Path, tiny_space_file: Callable[..., Path]
) -> None:
    # conv1_1 at 224x224: 50,176 positions, ~10 GB for one N x N matrix in fp32; counted, never run
    path = tiny_space_file(
        slots={"conv1_1": ["self_attention"]},
        data={"image_size": 224, "train_size": 32, "val_size": 16},
        search={"sampler": "random", "n_trials": 1, "pruner": "none", "constraints": {"max_flops": 1.0e10}},
    )
    started = time.monotonic()
    done = run(str(path), "--results", str(tmp_path / "r"))
    assert done.exit_code == 0, done.output
    (trial,) = records(tmp_path / "r" / "tiny")
    assert trial["state"] == "infeasible" and trial["reason"].startswith("flops ")
    assert trial["metrics"]["flops"] > 2 * 50_176**2 * 8  # the quadratic attention term is in the count
    assert time.monotonic() - started < 60


def test_two_objectives_train_and_give_a_pareto_front(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    objectives = [{"metric": "val_acc", "direction": "maximize"}, {"metric": "params", "direction": "minimize"}]
    path = tiny_space_file(search={"sampler": "nsga2", "n_trials": 2, "pruner": "none", "objectives": objectives})
    done = run(str(path), "--results", str(tmp_path / "r"))
    assert done.exit_code == 0, done.output
    trials = records(tmp_path / "r" / "tiny")
    # Optuna's Trial.report raises in a multi-objective study: the last epoch's score must not be reported to it
    assert [t["state"] for t in trials] == ["complete", "complete"], [t["reason"] for t in trials]
    summary = json.loads((tmp_path / "r" / "tiny" / "summary.json").read_text())
    assert summary["pareto"] and all(len(row["values"]) == 2 for row in summary["pareto"])


def test_a_record_it_cannot_read_refuses_the_run_before_anything_is_written(
    finished_study: Path, tmp_path: Path, snapshot: Callable[[Path], dict[str, bytes]]
) -> None:
    import shutil

    results = tmp_path / "results"
    folder = Path(shutil.copytree(finished_study, results / "tiny"))
    path = folder / "trials" / "2" / "trial.json"
    record = json.loads(path.read_text())
    record["candidate"]["train"]["epochs"] = "3"  # hand-edited: a string where a number belongs
    path.write_text(json.dumps(record))
    space = folder / "space.yaml"
    before = snapshot(folder)
    done = run(str(space), "--results", str(results))
    assert done.exit_code == 2 and done.output.count("\n") == 1, done.output
    assert "trials/2/trial.json: candidate.train.epochs: must be a valid integer" in done.output
    assert snapshot(folder) == before  # not a line appended to the journal, not a file rewritten


def test_a_storage_it_cannot_open_is_one_line_and_writes_nothing(
    tmp_path: Path, tiny_space_file: Callable[..., Path]
) -> None:
    results = tmp_path / "results"
    for url in ("nonsense://nowhere", f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'x.db'}"):
        done = run(str(tiny_space_file()), "--results", str(results), "--storage", url)
        assert done.exit_code == 2 and done.output.count("\n") == 1, done.output
        assert done.output.startswith(f"attnsearch: error: --storage {url}: cannot open it")
        assert not results.exists()


def test_trials_cannot_cap_a_grid_or_an_ablation(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    for sampler, size in (("grid", 6), ("ablation", 4)):
        path = tiny_space_file(search={"sampler": sampler, "n_trials": 3, "pruner": "none"})
        done = run(str(path), "--results", str(tmp_path / sampler), "--trials", "2")
        assert done.exit_code == 2, done.output
        assert done.output.strip().splitlines()[-1] == (
            f"attnsearch: error: --trials 2: sampler {sampler} trains its whole design ({size} candidates); "
            "use sampler tpe or random to cap the trials"
        )
        assert not (tmp_path / sampler).exists()  # refused before any folder is written

"""kill -9 of the driver at random moments, round after round: nothing finished is lost, no record is corrupt."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

CHANGES = {"train": {"epochs": 1, "lr": [0.05, 0.02, 0.01]}, "search": {"n_trials": 8}}  # 18 candidates, 8 trials


def read_all(folder: Path) -> dict[int, dict]:
    """Every trial record; json.loads raises on a torn file, which is the failure this suite looks for."""
    return {int(p.parent.name): json.loads(p.read_text()) for p in sorted(folder.glob("trials/*/trial.json"))}


def test_random_kills_then_resume(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    path = tiny_space_file(**CHANGES)
    command = [sys.executable, "-m", "attnsearch", "run", str(path), "--results", str(tmp_path), "--no-dashboard"]
    folder = tmp_path / "tiny"
    finished: dict[int, dict] = {}
    rng = random.Random(7)
    for _ in range(4):
        driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # wait for the run to start training, then kill at a random moment: mid-trial or while records are written
        while "started" not in (driver.stdout.readline() or "started"):
            pass
        time.sleep(rng.uniform(0.0, 2.5))
        driver.kill()
        driver.wait(timeout=30)
        records = read_all(folder)
        for number, record in finished.items():
            assert records[number] == record, f"finished trial {number} changed after a kill"
        finished.update({n: r for n, r in records.items() if r["state"] in ("complete", "pruned", "infeasible")})
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    records = read_all(folder)
    for number, record in finished.items():
        assert records[number] == record
    outcomes = [r for r in records.values() if r["state"] in ("complete", "pruned")]
    assert len(outcomes) == CHANGES["search"]["n_trials"]  # the study reaches n_trials
    assert all(r["state"] != "running" for r in records.values())
    json.loads((folder / "summary.json").read_text())

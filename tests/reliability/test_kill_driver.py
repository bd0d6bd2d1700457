"""kill -9 of the driver at random moments, round after round: nothing finished is lost, no record is corrupt."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SPACE = {
    "name": "killed",
    "backbone": {"name": "vgg11_bn", "width": 0.125, "head": "compact"},
    "slots": {"block3": ["none", "se", "eca", "cbam"], "block5": ["none", "se"]},
    "data": {"dataset": "shapes", "image_size": 32, "train_size": 128, "val_size": 64},
    "train": {"epochs": 1, "batch_size": 32, "lr": [0.05, 0.02, 0.01]},
    "search": {"sampler": "random", "n_trials": 8, "pruner": "none"},
    "execution": {"threads": 1},
}


def read_all(folder: Path) -> dict[int, dict]:
    """Every trial record; json.loads raises on a torn file, which is the failure this suite looks for."""
    return {int(p.parent.name): json.loads(p.read_text()) for p in sorted(folder.glob("trials/*/trial.json"))}


def test_random_kills_then_resume(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    command = [sys.executable, "-m", "attnsearch", "run", str(path), "--results", str(tmp_path), "--no-dashboard"]
    folder = tmp_path / "killed"
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
    assert len(outcomes) == SPACE["search"]["n_trials"]  # the study reaches n_trials
    assert all(r["state"] != "running" for r in records.values())
    json.loads((folder / "summary.json").read_text())

"""Ray workers load the run's plug-ins before they build a candidate (issue 17): ``attnsearch run --plugin`` with
``execution.executor: ray``, in a process of its own, so that no worker could have the plug-in by inheritance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from plugin_files import gate, write

pytestmark = pytest.mark.slow

SPACE = {
    "name": "p1-ray",
    "backbone": {"name": "vgg11_bn", "width": 0.125, "head": "compact"},
    "slots": {"block3": ["p1_ray_gate"], "block5": ["none", "se"]},
    "data": {"dataset": "shapes", "image_size": 32, "train_size": 64, "val_size": 32},
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.05},
    "search": {"sampler": "grid", "pruner": "none"},
    "execution": {"executor": "ray", "threads": 1, "cpus_per_trial": 1},
}


def test_ray_workers_load_the_plugins_of_the_run(tmp_path: Path) -> None:
    plugin = write(tmp_path, "p1_ray_gate", gate("p1_ray_gate"))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    command = [sys.executable, "-m", "attnsearch", "run", "space.yaml", "--plugin", str(plugin), "--no-dashboard"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output
    records = [json.loads(p.read_text()) for p in tmp_path.glob("results/p1-ray/trials/*/trial.json")]
    assert sorted(r["state"] for r in records) == ["complete", "complete"]
    for record in records:
        assert record["candidate"]["placements"][0]["module"] == "p1_ray_gate"
        assert record["worker"]["actor"] and record["worker"]["pid"] != driver.pid  # built and trained in a worker

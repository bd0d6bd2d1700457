"""Every seed space (search_spaces/seeds/*.yaml: the blog posts' architectures as fixed baselines) runs to completion.

Each file is run as written but at a tiny size: the `shapes` dataset at 32 px instead of its real data (which lives on
other machines), a width of 0.125, one epoch over 64 images. Its backbone, stem, placements, module parameters and
training recipe (schedule, optimizer, augmentations) stay the file's own, so a seed whose recipe or placements
cannot be built or trained fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from attnsearch.cli import main
from attnsearch.yamlfile import read_yaml

SEEDS = sorted(Path("search_spaces/seeds").glob("*.yaml"))
TINY_DATA = {"dataset": "shapes", "image_size": 32, "train_size": 64, "val_size": 32}


def tiny_copy(path: Path, folder: Path) -> tuple[Path, dict]:
    """The seed space at ``path`` with its data, width and budget made tiny; everything else as written."""
    space = read_yaml(path)
    space["backbone"] = {**space["backbone"], "width": 0.125, "pretrained": False}
    space["data"] = dict(TINY_DATA)
    space["train"] = {**space.get("train", {}), "epochs": 1, "batch_size": 16}
    space["train"].pop("steps", None)
    space["execution"] = {"threads": 1}
    out = folder / path.name
    out.write_text(json.dumps(space))  # JSON is YAML
    return out, space


def test_there_is_a_seed_space_per_architecture() -> None:
    assert len(SEEDS) >= 4
    names = [read_yaml(p)["name"] for p in SEEDS]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("path", SEEDS, ids=[p.stem for p in SEEDS])
def test_seed_space_runs_to_completion_at_a_tiny_size(path: Path, tmp_path: Path) -> None:
    file, space = tiny_copy(path, tmp_path)
    results = tmp_path / "results"
    done = CliRunner().invoke(main, ["run", str(file), "--results", str(results), "--no-dashboard"])
    assert done.exit_code == 0, done.output
    records = sorted((results / space["name"]).glob("trials/*/trial.json"))
    assert len(records) == space["search"]["n_trials"] == 1
    record = json.loads(records[0].read_text())
    assert record["state"] == "complete", record.get("reason")
    assert 0 <= record["metrics"]["val_acc"] <= 1 and record["metrics"]["params"] > 0
    candidate = record["candidate"]
    assert candidate["backbone"]["name"] == space["backbone"]["name"]
    # the fixed baseline trained is the file's: every slot holds its one listed module
    placed = {p["slot"]: p["module"] for p in candidate["placements"]}
    listed = {slot: choices[0] for slot, choices in space["slots"].items()}
    if "all" in listed:  # `all: [m]`: m after every block
        assert placed and set(placed.values()) == {listed["all"]}
    else:
        assert placed == {slot: key for slot, key in listed.items() if key != "none"}

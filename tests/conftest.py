"""Fixtures that several test modules share: one thread, folder snapshots, the tiny space, its data, its study."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from attnsearch.data import Dataset, load_dataset
from attnsearch.search.runner import run_search
from attnsearch.space import parse_space

import tiny  # tests/tiny.py


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module of tiny models: on a small shared machine, intra-op threads wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# every file with its bytes and every folder (None): an added empty folder is a change too
def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, bytes]]:
    """Every file under a folder with its bytes: compare two of them to prove nothing was touched."""
    return _files


@pytest.fixture
def tiny_space() -> Callable[..., dict[str, Any]]:
    """``make(**changes)``: the tiny space (tests/tiny.py) as a fresh dict, each change merged into its section
    when both are dicts (``slots`` and ``modules`` are replaced), else set."""
    return tiny.space


@pytest.fixture
def tiny_space_file(tmp_path: Path) -> Callable[..., Path]:
    """``write(**changes)``: the tiny space with those changes as YAML in ``tmp_path/<name>.yaml``; its path."""

    def write(**changes: Any) -> Path:
        data = tiny.space(**changes)
        path = tmp_path / f"{data['name']}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def tiny_dataset() -> Dataset:
    """The tiny space's dataset, generated once."""
    return load_dataset(parse_space(tiny.space()).data_spec())


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny space searched once as a grid (block3 none/se/cbam x block5 none/eca: 6 trials of 1 epoch, every
    model.pt kept); its results folder. Read-only: a test that writes into a study folder takes ``study_copy``."""
    space = parse_space(tiny.space(train={"epochs": 1}, search={"sampler": "grid", "pruner": "none"}))
    results = tmp_path_factory.mktemp("finished")
    run_search(space, results=results, keep_weights=6, on_event=None)
    folder = results / space.name
    made = _tree(folder)
    yield folder
    assert _tree(folder) == made, "a test wrote into finished_study: tests that write take study_copy"


@pytest.fixture
def study_copy(finished_study: Path, tmp_path: Path) -> Path:
    """A copy of finished_study under tmp_path (same folder name) for a test to write into or damage."""
    return Path(shutil.copytree(finished_study, tmp_path / finished_study.name))

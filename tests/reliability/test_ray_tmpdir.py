"""A deep TMPDIR (an HPC job folder) under the Ray executor: Ray's temp folder falls back to a short one, or one line.

Ray puts its Unix sockets about 60 characters below its temp folder and a socket's path holds at most 107 bytes, so
a TMPDIR of 74 characters made ``ray.init`` fail with a traceback (``AF_UNIX path length cannot exceed 107 bytes``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from attnsearch.errors import AttnsearchError
from attnsearch.search.store import ResultsStore

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]  # where attnsearch is
CHANGES = {  # one trial of one epoch on one Ray actor
    "slots": {"block3": ["se"]},
    "train": {"epochs": 1},
    "search": {"sampler": "grid"},
    "execution": {"executor": "ray", "cpus_per_trial": 1, "threads": 1},
}


def deep(root: Path, length: int) -> Path:
    """An existing folder under ``root`` whose path is ``length`` characters long."""
    folder = root / ("d" * (length - len(str(root)) - 1))
    folder.mkdir(parents=True)
    assert len(str(folder)) == length
    return folder


def attnsearch(args: list[str], env: dict[str, str], code: str | None = None) -> subprocess.CompletedProcess:
    """``attnsearch ARGS`` in a fresh process under ``env``; ``code`` runs first (a patch a test needs)."""
    prelude = f"{code}\n" if code else ""
    program = f"{prelude}import sys\nfrom attnsearch.cli import main\nsys.argv[0] = 'attnsearch'\nmain()"
    return subprocess.run(
        [sys.executable, "-c", program, *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, **env},
    )


def test_a_deep_ray_tmpdir_is_named_and_a_short_folder_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # variant: TMPDIR of 150 characters and Ray's own RAY_TMPDIR of 120: the folder is chosen before Ray starts
    from attnsearch.search.ray_executor import ray_temp_dir

    monkeypatch.setenv("TMPDIR", str(deep(tmp_path / "t", 150)))
    monkeypatch.setenv("RAY_TMPDIR", str(deep(tmp_path / "r", 120)))
    folder, note = ray_temp_dir()
    assert folder == f"/tmp/attnsearch-ray-{os.getuid()}" and os.path.isdir(folder)
    assert note is not None and note.startswith(f"RAY_TMPDIR ({os.environ['RAY_TMPDIR']}) is too long for Ray's")


def test_a_deep_tmpdir_gives_ray_a_short_temp_folder_and_says_so(
    tmp_path: Path, tiny_space_file: Callable[..., Path]
) -> None:
    # the input: a TMPDIR of 74 characters, a real run on a Ray it starts
    tmpdir, ray_tmpdir = 74, None
    env = {"TMPDIR": str(deep(tmp_path / "t", tmpdir))}
    space = tiny_space_file(**CHANGES)
    run = attnsearch(["run", str(space), "--results", str(tmp_path / "out"), "--no-dashboard"], env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    variable = "RAY_TMPDIR" if ray_tmpdir else "TMPDIR"
    # a note of the run (on the dashboard's events, or a plain line on stdout), nothing on stderr
    assert run.stderr == ""
    notes = [line for line in run.stdout.splitlines() if "too long for Ray's socket paths" in line]
    assert len(notes) == 1, run.stdout
    assert f"{variable} ({env[variable]}) is too long for Ray's socket paths" in notes[0]
    assert f"Ray's temp folder is /tmp/attnsearch-ray-{os.getuid()}" in notes[0]
    (trial,) = ResultsStore(tmp_path / "out" / "tiny").read_records()
    assert trial.state == "complete" and trial.worker.node  # trained on a Ray actor


def test_a_deep_tmpdir_and_no_short_folder_is_one_line_and_exit_2(
    tmp_path: Path, tiny_space_file: Callable[..., Path]
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file: no folder can be made under it")
    env = {"TMPDIR": str(deep(tmp_path / "t", 90))}
    patch = f"import attnsearch.search.ray_executor as r; r._SHORT_PLACES = ({str(blocked)!r},)"
    results = tmp_path / "out"
    run = attnsearch(["run", str(tiny_space_file(**CHANGES)), "--results", str(results), "--no-dashboard"], env, patch)
    assert run.returncode == 2, run.stdout + run.stderr
    (line,) = run.stderr.splitlines()
    assert line.startswith(f"attnsearch: error: TMPDIR ({env['TMPDIR']}) is too long for Ray's socket paths")
    assert "set RAY_TMPDIR to a writable folder" in line
    assert not results.exists()  # refused before the results folder is made


def test_a_short_tmpdir_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from attnsearch.search.ray_executor import ray_temp_dir

    short = Path(tempfile.mkdtemp(dir="/tmp"))  # /tmp/tmpXXXXXXXX
    try:
        monkeypatch.setenv("TMPDIR", str(short))
        monkeypatch.delenv("RAY_TMPDIR", raising=False)
        monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile caches TMPDIR: read it again
        assert ray_temp_dir() == (str(short / f"attnsearch-ray-{os.getuid()}"), None)
        assert (short / f"attnsearch-ray-{os.getuid()}").is_dir()
    finally:
        shutil.rmtree(short)


def test_a_folder_of_another_user_or_a_link_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import attnsearch.search.ray_executor as ray_executor

    short = Path("/tmp") / f"attnsearch-h-{os.getpid()}"
    short.mkdir()
    try:
        target = tmp_path / "elsewhere"
        target.mkdir()
        (short / f"attnsearch-ray-{os.getuid()}").symlink_to(target)  # planted: a link to someone's folder
        monkeypatch.setenv("RAY_TMPDIR", str(short))
        monkeypatch.setattr(ray_executor, "_SHORT_PLACES", (str(tmp_path / "file"),))
        (tmp_path / "file").write_text("")
        with pytest.raises(AttnsearchError, match=r"^RAY_TMPDIR \(/tmp/attnsearch-h-\d+\) has no usable folder"):
            ray_executor.ray_temp_dir()
        assert list(target.iterdir()) == []
    finally:
        (short / f"attnsearch-ray-{os.getuid()}").unlink()
        short.rmdir()

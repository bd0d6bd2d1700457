"""Results that cannot be written: a read-only mount, a folder the user may not write, a disk that fills up.

Every command answers with one ``attnsearch: error:`` line naming the path and the system's reason, exit 2, and
leaves no half-written file (nor a stray temp file) behind. Where it can, it says so before any training.

The faults are made for real where this machine allows it: a read-only tmpfs (EROFS) and a small tmpfs that fills
up (ENOSPC) when the tests run as root (they do in CI); a folder without write permission (EACCES) for a process
without root's powers (``setpriv`` drops them when the tests run as root). Where a mechanism is missing, the fault
is injected into the process instead (``tempfile.mkstemp`` and ``os.mkdir`` raise the same OSError): the test
still runs, never skips. ``ATTNSEARCH_TEST_INJECT=1`` forces the injection, to check that path too.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from attnsearch.cli import main
from attnsearch.search.store import ResultsStore, StoreError

pytestmark = [pytest.mark.reliability, pytest.mark.usefixtures("one_thread")]

REPO = Path(__file__).resolve().parents[2]
INJECT = os.environ.get("ATTNSEARCH_TEST_INJECT") == "1"


@dataclass(frozen=True)
class Place:
    """A folder whose writes fail, the words the system uses for the failure, and how it was made."""

    folder: Path
    reason: str  # os.strerror of the errno a write gets
    how: str  # "tmpfs", "chmod" or "injected"


class Places:
    """Makes folders that refuse writes; unmounts what it mounted at the end of the test."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp, self.monkeypatch = tmp_path, monkeypatch
        self.mounted: list[Path] = []
        self.injected: list[tuple[Path, int, str]] = []  # (folder, errno, part of a file name; "" for any)

    def read_only(self, name: str = "ro", content: Path | None = None) -> Place:
        """A read-only folder holding a copy of ``content`` (a study folder) when given."""
        folder = self.tmp / name
        if self._mount(folder, 64 << 20):
            self._copy(content, folder)
            self._remount(folder, "ro")
            return Place(folder, os.strerror(errno.EROFS), "tmpfs")
        folder.mkdir()
        self._copy(content, folder)
        if os.geteuid() != 0 and not INJECT:  # not root: permissions hold
            for path in [folder, *folder.rglob("*")]:
                path.chmod(0o555 if path.is_dir() else 0o444)
            return Place(folder, os.strerror(errno.EACCES), "chmod")
        self._inject(folder, errno.EROFS)
        return Place(folder, os.strerror(errno.EROFS), "injected")

    def full(self, name: str = "full", content: Path | None = None, free: int = 256 << 10, big: str = "") -> Place:
        """A folder (holding a copy of ``content``) with about ``free`` bytes left: files larger than that do not fit.
        Injected, the write of a file whose name holds ``big`` fails (any file when ``big`` is empty)."""
        folder = self.tmp / name
        if self._mount(folder, 64 << 20):
            self._copy(content, folder)
            stat = os.statvfs(folder)
            used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
            self._remount(folder, f"size={used + free}")
            return Place(folder, os.strerror(errno.ENOSPC), "tmpfs")
        folder.mkdir()
        self._copy(content, folder)
        self._inject(folder, errno.ENOSPC, big)
        return Place(folder, os.strerror(errno.ENOSPC), "injected")

    def close(self) -> None:
        for folder in reversed(self.mounted):
            if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(folder)], capture_output=True)

    # -- the mechanisms ------------------------------------------------------------------------------------------

    def _mount(self, folder: Path, size: int) -> bool:
        if INJECT or os.geteuid() != 0 or shutil.which("mount") is None:
            return False
        folder.mkdir(parents=True, exist_ok=True)
        options = f"size={size},mode=0755"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:  # a container without the right to mount
            folder.rmdir()
            return False
        self.mounted.append(folder)
        return True

    @staticmethod
    def _remount(folder: Path, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True, capture_output=True)

    @staticmethod
    def _copy(content: Path | None, folder: Path) -> None:
        if content is not None:
            shutil.copytree(content, folder / content.name)

    def _inject(self, folder: Path, code: int, big: str = "") -> None:
        if not self.injected:
            real_mkstemp, real_mkdir = tempfile.mkstemp, os.mkdir

            def fault(path: object, name: str = "") -> OSError | None:
                where = Path(os.path.abspath(os.fspath(path)))  # type: ignore[arg-type]
                for top, number, part in self.injected:
                    if where.is_relative_to(os.path.abspath(top)) and (not part or part in name):
                        return OSError(number, os.strerror(number), str(where))
                return None

            def mkstemp(suffix: str | None = None, prefix: str | None = None, dir: object = None, text: bool = False):
                err = fault(dir if dir is not None else tempfile.gettempdir(), prefix or "")
                if err is not None:
                    raise err
                return real_mkstemp(suffix, prefix, dir, text)

            def mkdir(path: object, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
                err = None if os.path.lexists(path) else fault(path)  # type: ignore[arg-type]  # EEXIST comes first
                if err is not None and err.errno != errno.ENOSPC:  # a full disk still has room for a folder
                    raise err
                real_mkdir(path, mode, dir_fd=dir_fd)

            self.monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
            self.monkeypatch.setattr(os, "mkdir", mkdir)
        self.injected.append((folder, code, big))


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Places]:
    made = Places(tmp_path, monkeypatch)
    try:
        yield made
    finally:
        made.close()


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args])


def one_error_line(result: Result, progress: str = "") -> str:
    """The one line a refused command prints; fails unless it is one ``attnsearch: error:`` line and exit 2 (after
    lines of progress that start with ``progress``, where given)."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.strip().splitlines() if not (progress and line.startswith(progress))]
    assert len(lines) == 1 and lines[0].startswith("attnsearch: error: "), result.stderr
    assert result.stderr.strip().endswith(lines[0]) and "Traceback" not in result.output
    return lines[0]


def stray_files(folder: Path) -> list[str]:
    """Temp files the atomic writes would leave if they failed to clean up."""
    return sorted(str(p) for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp"))


def tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


# ------------------------------------------------------------------------------------------------ run


def test_run_on_a_read_only_results_folder_refuses_before_training(
    places: Places, tiny_space_file: Callable[..., Path]
) -> None:
    place = places.read_only()
    result = invoke("run", tiny_space_file(), "--results", place.folder / "results", "--no-dashboard")
    line = one_error_line(result)
    assert str(place.folder / "results") in line and place.reason in line, (place.how, line)
    assert " started: " not in result.stdout  # refused before the first trial
    assert list(place.folder.iterdir()) == []


def test_continuing_a_study_on_read_only_media_refuses_before_training(
    places: Places, finished_study: Path, tiny_space_file: Callable[..., Path]
) -> None:
    # the same space run again: the study exists and is read, but nothing can be added to it
    place = places.read_only(content=finished_study)
    before = tree(place.folder)
    path = tiny_space_file(train={"epochs": 1}, search={"sampler": "grid", "pruner": "none"})
    result = invoke("run", path, "--results", place.folder, "--no-dashboard")
    line = one_error_line(result)
    assert str(place.folder / "tiny") in line and place.reason in line, (place.how, line)
    assert " started: " not in result.stdout
    assert tree(place.folder) == before


@pytest.mark.slow
def test_run_in_a_folder_it_may_not_write_refuses_in_a_real_process(
    tmp_path: Path, tiny_space_file: Callable[..., Path], places: Places
) -> None:
    # EACCES for real: root's power to write anywhere dropped (setpriv), or a user who is not root
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    command = [sys.executable, "-m", "attnsearch", "run", str(tiny_space_file()), "--results", str(folder / "r")]
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv is not None and not INJECT:
        command = [setpriv, "--bounding-set=-all", "--inh-caps=-all", *command]
    elif os.geteuid() == 0:  # no way to drop root's powers here: the same refusal, injected in this process
        places._inject(folder, errno.EACCES)
        result = invoke(*command[3:])
        line = one_error_line(result)
        assert str(folder / "r") in line and os.strerror(errno.EACCES) in line
        return
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnsearch: error: "), done.stderr
    assert str(folder / "r") in lines[0] and os.strerror(errno.EACCES) in lines[0]
    assert " started: " not in done.stdout and list(folder.iterdir()) == []


def test_a_disk_that_fills_while_weights_are_saved(places: Places, tiny_space_file: Callable[..., Path]) -> None:
    # room for the space, the journal and the records, not for a model.pt (about 600 kB for the tiny model)
    place = places.full(free=256 << 10, big="model.pt")
    results = place.folder / "results"
    result = invoke("run", tiny_space_file(), "--results", results, "--trials", "1", "--keep-weights", "1")
    line = one_error_line(result)
    weights = results / "tiny" / "trials" / "0" / "model.pt"
    assert str(weights) in line and place.reason in line, (place.how, line)
    assert " started: " in result.stdout  # the trial itself ran and was recorded
    assert json.loads((weights.parent / "trial.json").read_text())["state"] == "complete"
    assert not weights.exists() and stray_files(place.folder) == []


def test_a_summary_that_cannot_be_written(
    tiny_space_file: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the last write of a run (summary.json) fails, a quota reached: injected, the other writes go through
    real = tempfile.mkstemp

    def mkstemp(suffix: str | None = None, prefix: str | None = None, dir: object = None, text: bool = False):
        if prefix is not None and prefix.startswith(".summary.json"):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        return real(suffix, prefix, dir, text)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    result = invoke("run", tiny_space_file(), "--results", tmp_path / "r", "--trials", "1", "--no-dashboard")
    line = one_error_line(result)
    assert str(tmp_path / "r" / "tiny" / "summary.json") in line and os.strerror(errno.EDQUOT) in line
    assert not (tmp_path / "r" / "tiny" / "summary.json").exists() and stray_files(tmp_path / "r") == []


def test_a_failed_write_leaves_the_old_file_whole(places: Places, finished_study: Path) -> None:
    # a summary.json too large for what is left: the old one stays byte for byte, no temp file remains
    place = places.full(content=finished_study, free=8 << 10, big="summary.json")
    store = ResultsStore(place.folder / finished_study.name)
    old = (store.root / "summary.json").read_bytes()
    with pytest.raises(StoreError, match=r"summary\.json") as caught:
        store.write_summary({"notes": "x" * (1 << 20)})
    assert place.reason in str(caught.value)
    assert (store.root / "summary.json").read_bytes() == old and stray_files(place.folder) == []


# ------------------------------------------------------------------------------------------------ replay


def test_replay_with_a_new_recipe_on_a_read_only_study_refuses_before_training(
    places: Places, finished_study: Path
) -> None:
    place = places.read_only(content=finished_study)
    study = place.folder / finished_study.name
    before = tree(place.folder)
    result = invoke("replay", study, "--trial", "0", "--epochs", "1", "--lr", "0.002")
    line = one_error_line(result)
    assert str(study / "replays") in line and place.reason in line, (place.how, line)
    assert "replaying trial" not in result.stderr  # no training ran
    assert tree(place.folder) == before


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_a_replay_whose_save_fails_still_shows_its_result(places: Places, finished_study: Path, as_json: bool) -> None:
    # the disk fills while the replay trains: its model.pt no longer fits when it is saved
    place = places.full(content=finished_study, free=128 << 10, big="model.pt")
    study = place.folder / finished_study.name
    before = tree(study)
    # a new recipe (the search's lr was 0.05), saved under replays/ (--epochs 1 would be the recorded budget)
    result = invoke("replay", study, "--trial", "1", "--trial", "2", "--lr", "0.002", *(["--json"] if as_json else []))
    line = one_error_line(result, progress="replaying trial ")
    assert "trial 1" in line and "not saved" in line and place.reason in line, (place.how, line)
    assert "trial 2 not replayed" in line  # nothing is trained that could not be kept
    started = [
        line for line in result.stderr.splitlines() if line.startswith("replaying trial ") and ": epoch" not in line
    ]
    assert started == ["replaying trial 1: block5=eca"]  # trial 2 never started
    if as_json:
        shown = json.loads(result.stdout)
        assert [t["trial"] for t in shown["trials"]] == [1] and shown["trials"][0]["saved"] is None
        assert shown["trials"][0]["replayed"]["val_acc"] is not None
    else:
        assert "Trial 1:" in result.stdout and "val_acc" in result.stdout and "replay saved" not in result.stdout
    assert tree(study) == before and stray_files(place.folder) == []


# ------------------------------------------------------------------------------------------------ export, report


def unwritable_output(
    places: Places, tmp_path: Path, where: str, name: str, *, free: int, big: str
) -> tuple[Path, str]:
    """An output path ``name`` that cannot be written, and the system's reason: in a read-only folder, under a file
    (ENOTDIR), or in a folder with ``free`` bytes left where a file named with ``big`` does not fit."""
    if where == "read-only":
        place = places.read_only()
    elif where == "under a file":
        (tmp_path / "notes.txt").write_text("a file, not a folder")
        return tmp_path / "notes.txt" / name, os.strerror(errno.ENOTDIR)
    else:
        place = places.full(free=free, big=big)
    return place.folder / name, place.reason


@pytest.mark.parametrize("where", ["read-only", "under a file", "full"])
def test_export_into_a_place_it_cannot_write(places: Places, finished_study: Path, tmp_path: Path, where: str) -> None:
    # full: the code fits, its weights do not: neither is left
    out, reason = unwritable_output(places, tmp_path, where, "model.py", free=64 << 10, big=".pt")
    before = tree(tmp_path)
    result = invoke("export", finished_study, "--trial", "1", "--weights", "-o", out)
    line = one_error_line(result)
    assert reason in line and str(out.parent) in line, line
    assert tree(tmp_path) == before


@pytest.mark.parametrize("where", ["read-only", "under a file", "full"])
def test_report_into_a_place_it_cannot_write(places: Places, finished_study: Path, tmp_path: Path, where: str) -> None:
    # full: room for the probe and the small files, not for report.html with its plots
    out, reason = unwritable_output(places, tmp_path, where, "report", free=32 << 10, big="report.html")
    before = tree(tmp_path)
    result = invoke("report", finished_study, "--out", out)
    line = one_error_line(result)
    assert reason in line and str(out) in line, line
    assert tree(tmp_path) == before


@pytest.mark.slow
def test_a_journal_that_cannot_grow_leaves_no_part_of_a_record(
    tmp_path: Path, tiny_space_file: Callable[..., Path]
) -> None:
    # a real limit on file size (RLIMIT_FSIZE, as a quota or a scheduler's limit sets; EFBIG) reached while Optuna's
    # journal, the largest file of a run without weights, is appended: one line naming it, no part of a record left
    # in it, and the study goes on once the limit is gone
    import resource

    path = tiny_space_file(train={"epochs": 1})
    results = tmp_path / "r"
    command = [sys.executable, "-m", "attnsearch", "run", str(path), "--results", str(results), "--no-dashboard"]
    first = subprocess.run([*command, "--trials", "2"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert first.returncode == 0, first.stderr
    journal = results / "tiny" / "journal.log"
    limit = journal.stat().st_size + 1500  # room for part of the next trial's records, not all of them

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [*command, "--trials", "4", "--keep-weights", "0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        preexec_fn=limited,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnsearch: error: "), done.stderr
    assert str(journal) in lines[0] and os.strerror(errno.EFBIG) in lines[0], lines[0]
    assert journal.read_bytes().endswith(b"\n") and not list(journal.parent.glob("journal.log.partial-*"))
    again = subprocess.run([*command, "--trials", "4"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    states = [json.loads(p.read_text())["state"] for p in sorted((results / "tiny" / "trials").glob("*/trial.json"))]
    assert sum(state in ("complete", "pruned") for state in states) == 4, states

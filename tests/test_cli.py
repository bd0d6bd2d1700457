"""The command line: tables, JSON, one-line errors, bugs told apart from bad input, and a help path without torch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import attnsearch as a
from attnsearch.cli import main
from attnsearch.errors import AttnsearchError


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner(env=env).invoke(main, list(args))


def test_modules_table_and_json() -> None:
    table = invoke("modules")
    assert table.exit_code == 0
    assert "Squeeze-and-Excitation" in table.output and "reduction=16" in table.output
    listed = json.loads(invoke("modules", "--json").output)
    assert [m["key"] for m in listed] == a.list_modules()
    by_key = {m["key"]: m for m in listed}
    assert by_key["cbam"]["params"] == {"reduction": 16, "kernel_size": 7}
    assert by_key["eca"]["arxiv"] == "1910.03151"


def test_slots_table_and_json() -> None:
    table = invoke("slots", "vgg16_bn", "--image-size", "32")
    assert table.exit_code == 0 and "conv5_3" in table.output and "2 x 2" in table.output
    listed = json.loads(invoke("slots", "densenet_bc100", "--image-size", "32", "--width", "0.5", "--json").output)
    first = {"name": "denseblock1", "channels": 12 + 16 * 6, "height": 32, "width": 32, "block_level": True}
    assert listed[0] == {**first, "origin": "built-in"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnsearch", *args], capture_output=True, text=True, timeout=120)


def test_errors_are_one_line_and_exit_2() -> None:
    for args, expected in [
        (["slots", "vgg17"], "unknown backbone 'vgg17'; valid: vgg11"),
        (["slots", "vgg16", "--image-size", "8"], "image_size 8 is too small"),
        (["slots", "vgg16", "--width", "-1"], "--width"),
        (["nonsense"], "No such command"),
    ]:
        done = run_cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith("attnsearch: error:") and expected in done.stderr
        assert done.stdout == ""


def test_help_does_not_import_torch() -> None:
    code = "import sys; from attnsearch.cli import main; main(['--help'])"
    probe = f"{code}\n"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, runpy\ntry:\n    " + probe.strip() + "\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Usage:" in done.stdout and done.stdout.strip().endswith("NO-TORCH")


# ------------------------------------------------------------------------------------------------ exit codes


NO_DEBUG: dict[str, str | None] = {"ATTNSEARCH_DEBUG": None}  # as a user runs it, whatever this shell has set


def one_line(result: Result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["slots", "vgg17"], "unknown backbone 'vgg17'; valid: vgg11"),  # an AttnsearchError from the library
        (["slots", "vgg16", "--width", "-1"], "Invalid value for '--width'"),  # click's own checks
        (["slots"], "Missing argument 'BACKBONE'"),
        (["nonsense"], "No such command 'nonsense'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], expected: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    line = one_line(result)
    assert line.startswith("attnsearch: error: ") and expected in line
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["run", "x.yaml", "--device", "gpu"],
        ["replay", "results/none", "--trial", "0", "--device", "gpu"],
        ["bench", "memory", "--device", "auto"],  # a benchmark measures the device it is told: no auto
        ["bench", "trainer", "--device", "cuda:one"],
        ["bench", "overhead", "--device", "tpu"],
    ],
)
def test_device_is_checked_before_anything_runs(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    valid = "cpu, cuda or cuda:N" if args[0] == "bench" else "auto, cpu, cuda or cuda:N"
    assert one_line(result) == f"attnsearch: error: Invalid value for --device: must be {valid}"


def boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("boom\n  on two lines")


@pytest.fixture
def broken_build_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_space_file: Callable[..., Path]) -> Path:
    """build_model raises a RuntimeError (a bug, not bad input); temporary files go to tmp_path; returns a space."""
    import attnsearch.model
    import attnsearch.search.survey

    monkeypatch.setattr(attnsearch.model, "build_model", boom)
    monkeypatch.setattr(attnsearch.search.survey, "build_model", boom)  # validate's survey imported it by name
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return tiny_space_file()


def test_a_bug_is_exit_1_with_a_summary_and_the_traceback_in_a_file(broken_build_model: Path, tmp_path: Path) -> None:
    result = invoke("validate", str(broken_build_model), env=NO_DEBUG)
    assert result.exit_code == 1
    line = one_line(result)
    found = re.fullmatch(
        r"attnsearch: internal error: RuntimeError: boom on two lines "
        r"\(a bug in attnsearch, not in your input; traceback in (\S+)\)",
        line,
    )
    assert found, line
    path = Path(found[1])
    assert path.parent == tmp_path / "tmp" and path.name.startswith("attnsearch-traceback-")
    trace = path.read_text()
    assert trace.startswith("Traceback (most recent call last):") and "in boom" in trace
    assert trace.endswith("RuntimeError: boom\n  on two lines\n")
    assert result.stdout == ""


def test_a_bug_prints_its_traceback_with_attnsearch_debug(broken_build_model: Path, tmp_path: Path) -> None:
    result = invoke("validate", str(broken_build_model), env={"ATTNSEARCH_DEBUG": "1"})
    assert result.exit_code == 1
    assert result.stderr.startswith("Traceback (most recent call last):") and "RuntimeError: boom" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "attnsearch: internal error: RuntimeError: boom on two lines "
        "(a bug in attnsearch, not in your input; traceback above)"
    )
    assert list((tmp_path / "tmp").iterdir()) == []  # printed, not written


def test_a_bug_prints_its_traceback_when_no_file_can_be_written(
    broken_build_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    result = invoke("validate", str(broken_build_model), env=NO_DEBUG)
    assert result.exit_code == 1
    assert "Traceback (most recent call last):" in result.stderr
    assert result.stderr.splitlines()[-1].endswith("(a bug in attnsearch, not in your input; traceback above)")


def test_only_attnsearch_errors_count_as_bad_input(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import attnsearch.model

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def raising(error: BaseException):
        def list_slots(*args: object, **kwargs: object) -> None:
            raise error

        return list_slots

    monkeypatch.setattr(attnsearch.model, "list_slots", raising(AttnsearchError("slots: no such thing")))
    result = invoke("slots", "vgg16")
    assert result.exit_code == 2 and result.stderr == "attnsearch: error: slots: no such thing\n"
    monkeypatch.setattr(attnsearch.model, "list_slots", raising(ValueError("a bug's ValueError")))
    result = invoke("slots", "vgg16", env=NO_DEBUG)
    assert result.exit_code == 1 and one_line(result).startswith("attnsearch: internal error: ValueError: a bug's")
    monkeypatch.setattr(attnsearch.model, "list_slots", raising(KeyboardInterrupt()))
    result = invoke("slots", "vgg16")
    assert result.exit_code == 130 and result.stderr.strip().endswith("attnsearch: interrupted")

"""The command line: tables, JSON, one-line errors, and a help path that does not import torch."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

import attnsearch as a
from attnsearch.cli import main


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


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
    assert listed[0] == {"name": "denseblock1", "channels": 12 + 16 * 6, "height": 32, "width": 32, "block_level": True}


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

"""An installed package's entry point (group ``attnsearch.modules``) is a plug-in without ``--plugin`` (issue 17).

The package is installed with ``pip install -e`` into a virtual environment of the test's own that sees this
Python's packages (``--system-site-packages``): the shared environment never holds it, even for a moment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_files import gate, write

pytestmark = pytest.mark.slow

PYPROJECT = """[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "p1-epgates"
version = "0.1"

[project.entry-points."attnsearch.modules"]
p1_epgate = "p1_epgates"

[tool.setuptools]
packages = ["p1_epgates"]
"""

SPACE = """name: p1-entry-point
backbone: {name: vgg11_bn, width: 0.125}
slots: {block3: [none, p1_epgate]}
data: {image_size: 32}
"""


def pip(python: Path, *args: str) -> None:
    quiet = ["--disable-pip-version-check", "-q"]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), *quiet, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def attnsearch(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-m", "attnsearch", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_an_installed_entry_point_is_found_without_plugin(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "p1_epgates").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    write(project / "p1_epgates", "__init__", gate("p1_epgate"))
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", tmp_path / "venv"], check=True
    )
    python = tmp_path / "venv" / "bin" / "python"
    pip(python, "install", "--no-build-isolation", "--no-deps", "--no-index", "-e", str(project))
    try:
        listed = attnsearch(python, "modules", "--json", cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        origins = {m["key"]: m["origin"] for m in json.loads(listed.stdout)}
        assert origins["p1_epgate"] == "p1_epgates (entry point p1-epgates)" and origins["se"] == "built-in"
        (tmp_path / "space.yaml").write_text(SPACE)
        valid = attnsearch(python, "validate", "space.yaml", "--json", cwd=tmp_path)
        assert valid.returncode == 0, valid.stderr
        assert json.loads(valid.stdout)["slots"]["block3"] == ["none", "p1_epgate"]
    finally:
        pip(python, "uninstall", "-y", "p1-epgates")
    gone = attnsearch(python, "validate", "space.yaml", cwd=tmp_path)
    assert gone.returncode == 2 and "unknown attention module 'p1_epgate'" in gone.stderr

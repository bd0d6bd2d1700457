"""A corpus of broken space files: each one is refused with one clear line and exit code 2, and nothing is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from attnsearch.cli import main

pytestmark = pytest.mark.reliability

GOOD = """name: corpus
backbone: {name: vgg11_bn, width: 0.125, head: compact}
slots:
  block3: [none, se]
data: {dataset: shapes, image_size: 32, train_size: 64, val_size: 32}
train: {epochs: 1, batch_size: 32, lr: 0.05}
search: {sampler: random, n_trials: 1, pruner: none}
"""


def swap(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


# (file content, what the one line must say)
CORPUS: dict[str, tuple[str | bytes, str]] = {
    "unknown top key": (GOOD + "extras: 1\n", "extras: unknown key"),
    "unknown train key": (swap("epochs: 1,", "epochs: 1, momentum: 0.9,"), "train.momentum: unknown key"),
    "unknown backbone key": (swap("head: compact", "head: compact, depth: 16"), "backbone.depth: unknown key"),
    "missing name": (GOOD.replace("name: corpus\n", ""), "name: required key is missing"),
    "missing slots": (GOOD.replace("slots:\n  block3: [none, se]\n", ""), "slots: required key is missing"),
    "epochs as text": (swap("epochs: 1", "epochs: one"), "train.epochs: must be a valid integer"),
    "negative epochs": (swap("epochs: 1", "epochs: -3"), "train.epochs: must be greater than or equal to 1"),
    "zero batch": (swap("batch_size: 32", "batch_size: 0"), "train.batch_size"),
    "lr as text": (swap("lr: 0.05", "lr: fast"), "train.lr: must be a valid number"),
    "lr range reversed": (swap("lr: 0.05", "lr: {low: 1, high: 0.1}"), "train.lr: low (1) must be below high"),
    "lr range incomplete": (swap("lr: 0.05", "lr: {low: 0.1}"), "train.lr.high: required key is missing"),
    "width as list of text": (swap("width: 0.125", "width: [small]"), "backbone.width"),
    "width zero": (swap("width: 0.125", "width: 0"), "backbone.width: must be greater than 0"),
    "empty slot list": (swap("[none, se]", "[]"), "slots.block3: must not be empty"),
    "slots not a mapping": (swap("slots:\n  block3: [none, se]", "slots: [block3]"), "slots: must be a valid dict"),
    "unknown slot": (swap("block3:", "block9:"), "slots.block9: unknown slot for vgg11_bn"),
    "unknown module": (swap("[none, se]", "[none, sqex]"), "slots.block3[1]: unknown attention module 'sqex'"),
    "unknown backbone": (swap("name: vgg11_bn", "name: resnet101"), "backbone.name: unknown backbone 'resnet101'"),
    "unknown head": (swap("head: compact", "head: huge"), "backbone.head"),
    "unknown dataset": (swap("dataset: shapes", "dataset: imagenet"), "data.dataset: unknown dataset 'imagenet'"),
    "image too small": (swap("image_size: 32", "image_size: 16"), "data.image_size: vgg11_bn: image_size 16"),
    "bad module parameter": (GOOD + "modules: {se: {ratio: 4}}\n", "modules.se.ratio: unknown parameter"),
    "bad module value": (GOOD + "modules: {cbam: {kernel_size: 5}}\n", "modules.cbam.kernel_size"),
    "bad sampler": (swap("sampler: random", "sampler: bayes"), "search.sampler: unknown sampler 'bayes'; valid: "),
    "pruning two objectives": (
        swap(
            "pruner: none",
            "pruner: median, objectives: [{metric: val_acc, direction: maximize}, "
            "{metric: params, direction: minimize}]",
        ),
        "search.pruner: pruning needs a single objective",
    ),
    "bad device": (GOOD + "execution: {device: gpu0}\n", "execution.device: must be auto, cpu, cuda or cuda:N"),
    "name with a path": (swap("name: corpus", "name: ../../etc"), "name: must be a folder name"),
    "duplicate key": (GOOD + "name: again\n", "duplicate key 'name'"),
    "tabs": (swap("  block3", "\tblock3"), "a tab character"),
    "unclosed bracket": (swap("[none, se]", "[none, se"), "line "),
    "python object tag": (
        swap("name: corpus", "name: !!python/object/apply:os.system ['touch PWNED']"),
        "could not determine a constructor",
    ),
    "python name tag": (swap("name: corpus", "name: !!python/name:os.system"), "could not determine a constructor"),
    "billion laughs": (
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nname: corpus\n",
        "aliases (*name) are not allowed",
    ),
    "not utf-8": (GOOD.encode() + b"# caf\xe9\n", "not UTF-8 text"),
    "ten megabytes": (GOOD + ("# padding " + "x" * 90 + "\n") * 100_000, "a space file may have at most"),
    "a list, not a mapping": ("- name: corpus\n", "(top level): a space file is a mapping"),
    "empty file": ("", "(top level): a space file is a mapping of sections, got NoneType"),
    "data root missing": (swap("dataset: shapes", "dataset: cifar10, root: /nonexistent/cifar"), "data: "),
}


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_each_bad_space_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, case: str) -> None:
    content, expected = CORPUS[case]
    path = tmp_path / "space.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    results = tmp_path / "results"
    for command in (["run", str(path), "--results", str(results), "--no-dashboard"], ["validate", str(path)]):
        outcome = CliRunner().invoke(main, command)
        assert outcome.exit_code == 2, (case, outcome.output)
        lines = outcome.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("attnsearch: error: "), (case, outcome.stderr)
        assert expected in lines[0], (case, lines[0])
        assert outcome.stdout == ""
    assert not results.exists()
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()


def test_no_traceback_in_a_real_process(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(CORPUS["python object tag"][0])
    done = subprocess.run(
        [sys.executable, "-m", "attnsearch", "run", str(path), "--results", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists() and not (tmp_path / "PWNED").exists()

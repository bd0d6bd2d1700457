"""``attnsearch bench fidelity`` end to end on a tiny Fashion-MNIST written on the spot: the JSON's shape and
strictness, its figures recomputed by hand from its own per-seed scores, the seeds-needed rule against a
hand-worked case, resuming after an interruption (Ctrl-C included), and the one-line refusals."""

from __future__ import annotations

import gzip
import json
import math
import os
import signal
import struct
import subprocess
import sys
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import stats

import attnsearch.train
from attnsearch.bench.fidelity import FIDELITY_CACHE, QUICK, FidelityConfig, bench_fidelity
from attnsearch.bench.fidelity_stats import paired_power, seeds_needed
from attnsearch.cli import main
from attnsearch.errors import AttnsearchError
from attnsearch.search.worker import build_candidate
from attnsearch.stats import accuracy_se

import processes  # tests/processes.py

# 4 placements (none and se after blocks 3 and 4) x 2 budgets x 2 seeds = 16 trainings of one or two steps
TINY = [
    "--quick",
    "--width",
    "0.125",
    "--train-size",
    "64",
    "--long-train-size",
    "128",
    "--val-size",
    "64",
    "--threads",
    "1",
]
TINY_CONFIG = {"width": 0.125, "train_size": 64, "long_train_size": 128, "val_size": 64, "threads": 1}
TRAININGS = 16


def _idx(array: np.ndarray) -> bytes:
    # LeCun's IDX: two zero bytes, type 0x08 (unsigned byte), rank, each size big-endian, the bytes
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_fashion(folder: Path, n_train: int = 400, n_test: int = 20) -> Path:
    """The four gzipped idx files of a Fashion-MNIST that can be learned a little in one step: class c is a
    brighter band of rows 2c..2c+5 over noise."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 120, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c : 2 * c + 6] += 120
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels)))
    return folder


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fashion(tmp_path_factory.mktemp("fashion"))


@pytest.fixture(scope="module")
def finished(fashion: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """The tiny benchmark run once through the command line: its saved JSON and what it printed."""
    out = tmp_path_factory.mktemp("out")
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(main, ["bench", "fidelity", *TINY, "--root", str(fashion), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "fidelity_quick.json").read_text()

    def refuse(constant: str) -> None:
        raise AssertionError(f"not standard JSON: {constant}")

    return json.loads(text, parse_constant=refuse), result.output


def _means(data: dict[str, Any], budget: str) -> list[float]:
    return [float(np.mean(p[budget]["per_seed"])) for p in data["placements"]]


def _spearman_by_hand(x: list[float], y: list[float]) -> float:
    rx, ry = stats.rankdata(x), stats.rankdata(y)  # average ranks for ties
    return float(np.corrcoef(rx, ry)[0, 1])


def _kendall_by_hand(x: list[float], y: list[float]) -> float:
    # tau-b: (concordant - discordant) / sqrt((pairs - ties in x) (pairs - ties in y))
    concordant = discordant = ties_x = ties_y = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        ties_x += dx == 0
        ties_y += dy == 0
        concordant += dx * dy > 0
        discordant += dx * dy < 0
    pairs = len(x) * (len(x) - 1) / 2
    return float((concordant - discordant) / math.sqrt((pairs - ties_x) * (pairs - ties_y)))


def _same(recorded: float | None, expected: float) -> bool:
    # NaN is written as null in the JSON: an undefined correlation (a constant list) must be null there too
    return recorded is None if math.isnan(expected) else recorded == pytest.approx(expected, abs=1e-9)


def test_json_is_strict_and_complete(finished: tuple[dict[str, Any], str]) -> None:
    data, printed = finished
    assert data["benchmark"] == "fidelity_quick"
    machine = data["machine"]
    assert machine["torch"] == torch.__version__ and machine["cores"] >= 1 and machine["cpu"]
    config = data["config"]
    assert config["device"] == "cpu" and config["threads"] >= 1 and config["seeds"] == [0, 1]
    assert config["budgets"]["brief"] == {"epochs": 1, "train_images": 64, "image_epochs": 64}
    assert config["budgets"]["long"] == {"epochs": 2, "train_images": 128, "image_epochs": 256}
    assert config["long_over_brief"] == 4.0 and config["val_images"] == 64
    assert config["split"]["validation"] == "held out from train"
    labels = [p["placement"] for p in data["placements"]]
    assert labels == ["none", "block4=se", "block3=se", "block3=se block4=se"]
    for p in data["placements"]:
        for budget in ("brief", "long"):
            entry = p[budget]
            assert len(entry["per_seed"]) == 2 and all(0.0 <= a <= 1.0 for a in entry["per_seed"])
            assert entry["val_acc"] == pytest.approx(sum(entry["per_seed"]) / 2)
            assert all(s > 0 for s in entry["seconds"])
    timing = data["timing"]
    assert timing["trained_now"] == TRAININGS and timing["from_cache"] == 0
    for part in ("load_seconds", "this_run_train_seconds", "analysis_seconds", "total_seconds"):
        assert timing[part] >= 0
    assert timing["train_seconds"]["long"] > 0 and timing["train_seconds"]["brief"] > 0
    # every figure is printed with its noise
    assert "brief vs long ranks (4 seed-means): Spearman" in printed
    assert "noise ceiling, brief: seed 0 vs seed 1" in printed and "noise ceiling, long: seed 0 vs seed 1" in printed
    assert "seeds needed, long (paired t-test, 5% two-sided, 80% power)" in printed


def test_correlations_are_scipys_on_the_recorded_scores(finished: tuple[dict[str, Any], str]) -> None:
    data, _ = finished
    figures = data["figures"]
    brief, long = _means(data, "brief"), _means(data, "long")
    fidelity = figures["fidelity"]
    assert _same(fidelity["spearman"]["statistic"], _spearman_by_hand(brief, long))
    assert _same(fidelity["kendall"]["statistic"], _kendall_by_hand(brief, long))
    if fidelity["spearman"]["p_value"] is not None:
        assert fidelity["spearman"]["p_value"] == pytest.approx(stats.spearmanr(brief, long).pvalue)
        low, high = fidelity["spearman"]["interval"]
        assert -1.0 <= low <= high <= 1.0
    best = lambda scores: data["placements"][int(np.argmax(scores))]["placement"]  # noqa: E731
    assert fidelity["top1"]["brief_top"] == [best(brief)] and fidelity["top1"]["long_top"] == [best(long)]
    top3 = lambda scores: {data["placements"][i]["placement"] for i in np.argsort(scores)[::-1][:3]}  # noqa: E731
    assert fidelity["top3"]["overlap"] == len(top3(brief) & top3(long))
    assert fidelity["top3"]["chance"] == pytest.approx(9 / 4)
    for budget in ("brief", "long"):
        lead, scores = figures["leader"][budget], _means(data, budget)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        assert [lead["best"], lead["runner_up"]] == [data["placements"][i]["placement"] for i in order[:2]]
        assert lead["difference_points"] == pytest.approx(100 * (scores[order[0]] - scores[order[1]]))
        # never narrower than the two scores' binomial noise on the 64 validation images
        a, b = [data["placements"][i][budget]["per_seed"] for i in order[:2]]
        noise = 100 * math.sqrt(np.mean([accuracy_se(a[s], 64) ** 2 + accuracy_se(b[s], 64) ** 2 for s in (0, 1)]))
        low, high = lead["interval_points"]
        assert high - low >= 2 * stats.norm.ppf(0.975) * noise / math.sqrt(2) - 1e-9
        assert lead["separated"] == (low > 0)
    for budget in ("brief", "long"):
        seed0 = [p[budget]["per_seed"][0] for p in data["placements"]]
        seed1 = [p[budget]["per_seed"][1] for p in data["placements"]]
        (ceiling,) = figures["noise_ceiling"][budget]
        assert ceiling["seeds"] == [0, 1]
        assert _same(ceiling["spearman"]["statistic"], _spearman_by_hand(seed0, seed1))
        assert _same(ceiling["kendall"]["statistic"], _kendall_by_hand(seed0, seed1))


def test_seeds_needed_follow_the_measured_paired_noise(finished: tuple[dict[str, Any], str]) -> None:
    data, _ = finished
    for budget in ("brief", "long"):
        scores = np.array([[100 * a for a in p[budget]["per_seed"]] for p in data["placements"]])  # points
        # the two-way layout's residual mean square, a route other than the benchmark's mean over pairs
        residual = scores - scores.mean(1, keepdims=True) - scores.mean(0, keepdims=True) + scores.mean()
        df = (scores.shape[0] - 1) * (scores.shape[1] - 1)
        sd = math.sqrt(2 * (residual**2).sum() / df)
        needed = data["figures"]["seeds_needed"][budget]
        assert needed["df"] == df == 3 and needed["sd_points"] == pytest.approx(sd)
        for effect in needed["effects"]:
            if sd == 0:  # no spread measured: nothing to size the seeds from
                assert effect["seeds"] is None
                continue
            n = 2  # the first n whose paired t-test has 80% power, walked up one seed at a time
            while _power(n, effect["effect_points"] / sd) < 0.8:
                n += 1
            assert effect["seeds"] == n
            low, high = effect["range"]
            assert low <= n <= high


def _power(n: int, standardised: float) -> float:
    critical = stats.t.ppf(0.975, n - 1)
    shift = standardised * math.sqrt(n)
    return stats.nct.sf(critical, n - 1, shift) + stats.nct.cdf(-critical, n - 1, shift)


def test_seeds_needed_hand_worked_case() -> None:
    # sd of a paired difference 1.0 point, effect 1.0 point: 10 seeds (9 give 74.8%, 10 give 80.3%)
    assert seeds_needed(1.0, 1.0) == 10
    assert _power(9, 1.0) < 0.8 <= _power(10, 1.0)
    assert paired_power(10, 1.0, 1.0) == pytest.approx(_power(10, 1.0))
    assert seeds_needed(0.5, 1.0) == 34 and _power(33, 0.5) < 0.8 <= _power(34, 0.5)
    # the normal approximation would say 8: too few for a t-test
    assert math.ceil(((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / 1.0) ** 2) == 8
    assert seeds_needed(1.0, 2.0) == seeds_needed(0.5, 1.0)  # only effect / sd matters


def test_an_interrupted_run_resumes_without_training_again(
    fashion: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = attnsearch.train.train_model

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(attnsearch.train, "train_model", counting)
    config = FidelityConfig(**{**vars(QUICK), **TINY_CONFIG, "root": str(fashion)})

    def stop_after_five(progress: Any) -> None:
        if progress.done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bench_fidelity(config, out=tmp_path, on_progress=stop_after_five)
    assert len(calls) == 5
    assert len(json.loads((tmp_path / FIDELITY_CACHE).read_text())["runs"]) == 5
    resumed = bench_fidelity(config, out=tmp_path)
    assert len(calls) == TRAININGS
    assert resumed.timing["trained_now"] == TRAININGS - 5 and resumed.timing["from_cache"] == 5
    again = bench_fidelity(config, out=tmp_path)
    assert len(calls) == TRAININGS  # nothing trained the third time
    assert again.placements == resumed.placements and again.figures == resumed.figures
    # another budget is another training: the cache is keyed by what decides a score
    bench_fidelity(FidelityConfig(**{**vars(config), "long_epochs": 3}), out=tmp_path)
    assert len(calls) == TRAININGS + 8


def test_ctrl_c_stops_cleanly_and_keeps_the_trainings_done(fashion: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "attnsearch", "bench", "fidelity", *TINY, "--root", str(fashion)]
    process = subprocess.Popen(
        [*command, "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        preexec_fn=processes.stop_signals_default,
    )
    processes.wait_for_line(process, "[2/16]", timeout=240)
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 130, rest
    lines = [line for line in rest.splitlines() if line.startswith("fidelity: stopped")]
    assert len(lines) == 1 and f"saved in {tmp_path / FIDELITY_CACHE}" in lines[0], rest
    assert "Traceback" not in rest
    kept = json.loads((tmp_path / FIDELITY_CACHE).read_text())["runs"]
    assert 2 <= len(kept) < TRAININGS
    assert not (tmp_path / "fidelity_quick.json").exists()


def test_missing_dataset_is_one_line_and_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "fidelity", *TINY, "--root", str(tmp_path), "--out", str(tmp_path)])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("attnsearch: error: ") and "train-images-idx3-ubyte" in line
    assert "apt-get install dataset-fashion-mnist" in line and result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"long_train_size": 96}, "at least 4 times the brief one"),
        ({"modules": ("none",)}, "4 or more placements"),
        ({"slots": ("block9", "block4")}, "unknown slot 'block9'"),
        ({"modules": ("none", "sse")}, "sse"),
    ],
)
def test_a_grid_it_cannot_judge_is_refused(changes: dict[str, Any], message: str) -> None:
    config = FidelityConfig(**{**vars(QUICK), **TINY_CONFIG, **changes})
    with pytest.raises(AttnsearchError, match=message):
        config.check()


def test_a_long_budget_capped_by_the_data_is_refused(fashion: Path, tmp_path: Path) -> None:
    # 400 training images, about 320 after the validation split: asking for 2000 (20 times the brief budget's
    # 100 for 1 epoch each) gets about 320, about 3.2 times
    changes = {"root": str(fashion), "train_size": 100, "long_train_size": 2000, "long_epochs": 1}
    config = FidelityConfig(**{**vars(QUICK), **TINY_CONFIG, **changes})
    config.check()  # as asked for, it is 20 times
    with pytest.raises(AttnsearchError, match=r"only 3\.\d\d times the brief one with the 3\d\d training images"):
        bench_fidelity(config, out=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing trained


def test_a_seed_gives_every_placement_the_same_backbone(fashion: Path) -> None:
    # what makes the differences between placements paired: the placed modules are built after the backbone
    config = FidelityConfig(**{**vars(QUICK), **TINY_CONFIG, "root": str(fashion)})
    from attnsearch.data import load_dataset

    dataset = load_dataset(config.data("brief"))
    bare, placed = (build_candidate(config.candidate(p, "brief", 1), dataset, 1) for p in config.grid()[::3])
    shared = bare.state_dict()
    assert all(torch.equal(placed.state_dict()[name], tensor) for name, tensor in shared.items())
    other = build_candidate(config.candidate(config.grid()[0], "brief", 2), dataset, 2)
    assert not torch.equal(other.features[0].weight, bare.features[0].weight)

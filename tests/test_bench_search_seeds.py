"""bench search against a seed-mean truth: the grid under several training seeds (cached, resumable), the regret
of a search's pick measured on the seed-mean, and the noise of that truth (hand-worked numbers, scipy's own)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from scipy import stats

from attnsearch.bench.search import GridPoint, SearchGrid, SearchTrace, SeedTruth, TraceTrial, bench_search
from attnsearch.bench.search_grid import GridProgress, evaluate_grid, evaluate_grids, grid_key, training_seed_space
from attnsearch.bench.search_truth import seed_noise
from attnsearch.cli import main

# ------------------------------------------------------------------------------------------------ the grids


class Interrupted(Exception):
    pass


def test_each_seed_is_cached_and_an_interrupted_training_resumes(
    tmp_path: Path, tiny_space: Callable[..., dict]
) -> None:
    space = tiny_space(slots={"block3": ["none", "se"]}, train={"epochs": 1}, data={"train_size": 64, "val_size": 32})
    cache = tmp_path / "search_grid.json"
    seen: list[GridProgress] = []

    def stop_after_three(step: GridProgress) -> None:
        seen.append(step)
        if len(seen) == 3:
            raise Interrupted  # as a Ctrl-C between two candidates

    with pytest.raises(Interrupted):
        evaluate_grids(space, 2, cache=cache, threads=1, on_progress=stop_after_three)
    assert [(s.seed, s.done, s.total) for s in seen] == [(0, 1, 2), (0, 2, 2), (1, 1, 2)]
    # the ETA: the mean time of the candidates trained so far x the 4 - n still to train
    for n, step in enumerate(seen, start=1):
        mean = statistics.fmean(s.point.seconds for s in seen[:n])
        assert step.eta_seconds == pytest.approx((4 - n) * mean)
    stored = json.loads(cache.read_text(encoding="utf-8"))
    first, second = grid_key(space), grid_key(training_seed_space(space, 1))
    assert first != second and set(stored) == {first, second}
    assert stored[first]["complete"] and len(stored[first]["points"]) == 2
    assert not stored[second]["complete"] and len(stored[second]["points"]) == 1  # what finished is kept

    resumed: list[GridProgress] = []
    grids = evaluate_grids(space, 2, cache=cache, threads=1, on_progress=resumed.append)
    # only the one candidate left is trained: seed 1's second, and nothing is left after it
    assert [(s.seed, s.done, s.point.params) for s in resumed] == [(1, 2, {"block3": "se"})]
    assert resumed[0].eta_seconds == 0
    assert [cached for _, cached in grids] == [True, False]
    assert [grid.space["train"].get("seed") for grid, _ in grids] == [None, 1]  # seed 0 is the space as written
    assert grids[1][0].space["data"] == space["data"]  # the same data: only the training seed moves
    # a resumed grid is the grid an uninterrupted training gives (same seed, same CPU: bit-identical)
    fresh, _ = evaluate_grid(training_seed_space(space, 1), cache=None, threads=1)
    assert [p.curve for p in grids[1][0].points] == [p.curve for p in fresh.points]
    assert json.loads(cache.read_text(encoding="utf-8"))[second]["complete"]

    again: list[GridProgress] = []
    grids = evaluate_grids(space, 2, cache=cache, threads=1, on_progress=again.append)
    assert again == [] and [cached for _, cached in grids] == [True, True]  # a second run trains nothing


def test_seed_zero_is_the_space_as_written() -> None:
    space = {"name": "x", "train": {"epochs": 2, "seed": 5}, "data": {"seed": 3}}
    assert training_seed_space(space, 0) is space  # the cache key of the first grid ever trained is kept
    assert training_seed_space(space, 2) == {"name": "x", "train": {"epochs": 2, "seed": 7}, "data": {"seed": 3}}
    with pytest.raises(ValueError, match="at least one training seed"):
        evaluate_grids(space, 0, cache=None)


# ------------------------------------------------------------------------------------------------ seed-mean regret

C1, C2, C3 = {"s": "c1"}, {"s": "c2"}, {"s": "c3"}
TRUTH = {"c1": 0.80, "c2": 0.50, "c3": 0.60}


def truth(params: dict[str, Any]) -> float:
    return TRUTH[params["s"]]


def test_the_pick_is_the_best_score_seen_and_its_regret_is_measured_on_the_truth() -> None:
    trace = SearchTrace(
        [
            TraceTrial(C2, "complete", 2, 0.60, 2),
            TraceTrial(C1, "complete", 2, 0.70, 4),
            TraceTrial(C3, "pruned", 1, None, 5),
            TraceTrial(C3, "complete", 2, 0.75, 7),  # seen highest, but 20 points below the truth's best
            TraceTrial(C1, "complete", 2, 0.75, 9),  # equal to the pick: the earlier one stays
        ]
    )
    assert trace.pick_within(1) is None and trace.regret_on(truth, 0.8, 1) == math.inf
    assert trace.pick_within(3) == C2 and trace.regret_on(truth, 0.8, 3) == pytest.approx(30.0)
    assert trace.pick_within(5) == C1 and trace.regret_on(truth, 0.8, 5) == 0.0
    assert trace.pick_within(9) == C3 and trace.regret_on(truth, 0.8, 9) == pytest.approx(20.0)
    # the regret on the draw seen is the same function with the seen scores as truth
    assert trace.regret(0.8, 9) == pytest.approx(5.0)
    # within 1 point of 0.8: reached at 4 (c1), lost at 7 (c3): not there at the end
    assert trace.compute_to_stay(truth, 0.79) == math.inf
    # within 25 points: c1 at 4, and c3 (0.60) keeps it there
    assert trace.compute_to_stay(truth, 0.55) == 4.0


@pytest.fixture
def two_draws(tiny_space: Callable[..., dict]) -> list[SearchGrid]:
    """4 candidates, 2 epochs, two training seeds. Seed A's best is (se, eca), seed B's (se, none); the seed-means
    are (none, none) 0.50, (none, eca) 0.50, (se, none) 0.65 and (se, eca) 0.70: A's best is the truth's best, B's
    pick is 5 points below it. Every curve keeps its order at each epoch, so no pruner stops the seen best."""
    space = tiny_space(train={"epochs": 2})  # slots block3 none/se/cbam, block5 none/eca
    space["slots"] = {"block3": ["none", "se"], "block5": ["none", "eca"]}
    finals = {
        ("none", "none"): (0.50, 0.50),
        ("none", "eca"): (0.50, 0.50),
        ("se", "none"): (0.50, 0.80),
        ("se", "eca"): (0.90, 0.50),
    }

    def grid(draw: int) -> SearchGrid:
        points = [
            GridPoint({"block3": a, "block5": b}, (f[draw] - 0.1, f[draw]), f"{a}/{b}") for (a, b), f in finals.items()
        ]
        return SearchGrid(space, points)

    return [grid(0), grid(1)]


def test_bench_regret_is_measured_on_the_seed_mean(two_draws: list[SearchGrid]) -> None:
    bench = bench_search(grids=two_draws, seeds=4, budgets=(1.0,))
    assert bench.grid["training_seeds"] == 2 and bench.grid["best_candidate"] == "se/eca"
    assert bench.grid["best_val_acc"] == pytest.approx(0.70) and bench.grid["within_target"] == 1
    for m in bench.methods:
        assert m.training_seeds == [0, 1, 0, 1]  # replay r saw seed r mod 2
        # by hand: on A the search picks (se, eca), regret 0; on B it picks (se, none), 0.70 - 0.65 = 5 points
        assert m.per_seed_regret["100%"] == pytest.approx([0.0, 5.0, 0.0, 5.0])
        assert m.regret["100%"] == pytest.approx(2.5)
        mean = m.regret_mean["100%"]
        low, high = stats.t.interval(0.95, 3, loc=2.5, scale=statistics.stdev([0, 5, 0, 5]) / 2)
        assert mean["mean"] == pytest.approx(2.5) and (mean["low"], mean["high"]) == pytest.approx((low, high))
        # every replay alike: the same regret as random's, and no zero-width interval made of it
        equal = {"mean": 0, "low": None, "high": None}
        assert m.regret_vs_random["100%"] == (None if m.method == "random" else equal)
        # within 0.5 points of 0.70 only (se, eca): the replays on A get there, those on B never do
        assert m.reached == 2 and [math.isfinite(c) for c in m.per_seed_compute_to_target] == [1, 0, 1, 0]
        assert m.compute_to_target == math.inf
        # against the best of the draw it saw, every replay found it
        assert m.regret_seen["100%"] == 0.0 and math.isfinite(m.compute_to_target_seen)
    assert bench.truth["best_per_seed"][1]["regret_points"] == pytest.approx(5.0)
    assert [c["candidate"] for c in bench.truth["candidates"]][:2] == ["se/eca", "se/none"]
    json.dumps(bench.to_dict())


def test_one_training_seed_gives_the_draw_seen_figures(two_draws: list[SearchGrid]) -> None:
    bench = bench_search(grids=two_draws[:1], seeds=3)
    for m in bench.methods:
        assert m.regret == m.regret_seen and m.compute_to_target == m.compute_to_target_seen
    assert bench.truth["sd_points"] is None and bench.truth["pairs"] == []


def test_grids_of_different_candidates_are_refused(two_draws: list[SearchGrid]) -> None:
    other = SearchGrid(two_draws[1].space, two_draws[1].points[:3])
    with pytest.raises(ValueError, match="different candidates"):
        bench_search(grids=[two_draws[0], other], seeds=1)


# ------------------------------------------------------------------------------------------------ the truth's noise

# 5 candidates under 3 seeds; seed 2 has two equal tops (c0 and c2)
FINALS = (
    (0.90, 0.80, 0.70, 0.60, 0.50),
    (0.70, 0.90, 0.60, 0.80, 0.50),
    (0.90, 0.50, 0.90, 0.60, 0.70),
)
NAMES = ("c0", "c1", "c2", "c3", "c4")


@pytest.fixture
def noise() -> dict[str, Any]:
    return seed_noise(SeedTruth(tuple({"s": n} for n in NAMES), NAMES, FINALS))


def test_how_often_one_seeds_best_is_anothers(noise: dict[str, Any]) -> None:
    pairs = {tuple(p["seeds"]): p for p in noise["pairs"]}
    assert list(pairs) == [(0, 1), (0, 2), (1, 2)]
    # best: c0 under 0, c1 under 1, c0 and c2 (equal) under 2: only seeds 0 and 2 share a best
    assert [pairs[k]["same_best"] for k in pairs] == [False, True, False]
    assert noise["same_best"] == 1 and noise["pairs_total"] == 3
    # 0's best c0 is 3rd under 1 (0.9 and 0.8 above its 0.7), 1's best c1 2nd under 0; 2's tops: c0 1st under 0
    assert pairs[0, 1]["best_rank"] == [3, 2] and pairs[0, 2]["best_rank"] == [1, 1]
    assert pairs[1, 2]["best_rank"] == [5, 3]  # c1 is last under 2; of 2's tops, c0 (0.7) is 3rd under 1
    # top 3: {c0, c1, c2}, {c1, c3, c0}, {c0, c2, c4}
    assert [pairs[k]["top3_overlap"] for k in pairs] == [2, 2, 1]
    assert noise["top3_overlap_mean"] == pytest.approx(5 / 3)
    # seed-means: c0 0.833, c1 and c2 0.733: seed 1's pick loses 10 points, seed 2's (c0 or c2) 5 on average
    best = noise["best_per_seed"]
    assert [b["regret_points"] for b in best] == pytest.approx([0.0, 10.0, 5.0])
    assert [b["is_seed_mean_best"] for b in best] == [True, False, True]
    assert best[2]["candidates"] == ["c0", "c2"]


def test_the_noise_of_a_seed_mean(noise: dict[str, Any]) -> None:
    sds = [statistics.stdev(scores) * 100 for scores in zip(*FINALS, strict=True)]
    assert noise["sd_points"]["max"] == pytest.approx(20.8167, abs=1e-4) and noise["sd_points"]["max_candidate"] == "c1"
    assert noise["sd_points"]["mean"] == pytest.approx(statistics.fmean(sds))
    assert noise["se_of_mean_points"] == pytest.approx(statistics.fmean(sds) / math.sqrt(3))
    assert noise["pairs"][0]["mean_abs_difference_points"] == pytest.approx(12.0)  # |.2|+|.1|+|.1|+|.2|+0 over 5


def test_a_seed_that_moves_every_candidate_alike_is_taken_off_the_centred_sd() -> None:
    finals = ((0.60, 0.70, 0.80), (0.70, 0.80, 0.90))  # seed 1: every candidate 10 points higher
    noise = seed_noise(SeedTruth(({"s": 1}, {"s": 2}, {"s": 3}), ("a", "b", "c"), finals))
    assert noise["grid_mean_points"] == pytest.approx([70.0, 80.0])
    assert noise["sd_points"]["mean"] == pytest.approx(10 / math.sqrt(2))  # the SD of two values 10 points apart
    assert noise["centred_sd_points"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert noise["same_best"] == 1 and noise["pairs"][0]["kendall"] == pytest.approx(1.0)


def test_correlations_between_seeds_are_scipys(noise: dict[str, Any]) -> None:
    # by hand for seeds 0 and 1: 7 concordant and 3 discordant pairs, tau = 0.4; rank differences 2,1,1,2,0, rho = 0.5
    assert noise["pairs"][0]["kendall"] == pytest.approx(0.4) and noise["pairs"][0]["spearman"] == pytest.approx(0.5)
    for pair in noise["pairs"]:
        a, b = (FINALS[s] for s in pair["seeds"])
        tau, rho = stats.kendalltau(a, b), stats.spearmanr(a, b)
        assert (pair["kendall"], pair["kendall_p"]) == pytest.approx((tau.statistic, tau.pvalue))
        assert (pair["spearman"], pair["spearman_p"]) == pytest.approx((rho.statistic, rho.pvalue))
    assert noise["kendall_mean"] == pytest.approx(statistics.fmean(p["kendall"] for p in noise["pairs"]))


def test_the_command_refuses_no_grid_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["bench", "search", "--quick", "--grid-seeds", "0"])
    assert result.exit_code == 2 and "--grid-seeds" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "results").exists()  # refused before anything was trained


def test_the_candidate_effect_is_a_two_way_anova_with_the_seeds_as_blocks() -> None:
    from attnsearch.bench.search_truth import candidate_effect

    # worked by hand: grand mean 4.22/6; candidate means .71, .795, .605; seed means .70, .70667
    # SS_candidates = 2 (0.0066667^2 + 0.0916667^2 + 0.0983333^2) = 0.0362333, SS_seeds = 3 (2 x 0.0033333^2)
    # = 0.0000667, SS_total = 0.0365333, so SS_error = 0.0002333 and F = (0.0362333 / 2) / (0.0002333 / 2) = 155.29
    effect = candidate_effect([[0.70, 0.80, 0.60], [0.72, 0.79, 0.61]])
    assert effect["df_candidates"] == 2 and effect["df_error"] == 2
    assert effect["f"] == pytest.approx(0.0362333 / 0.0002333, rel=1e-3)
    assert effect["p"] == pytest.approx(2 / (2 + 2 * effect["f"]), rel=1e-9)  # F(2, 2)'s tail: 1 / (1 + F)
    # equal candidate means, all the spread noise: F = 0, p = 1
    flat = candidate_effect([[0.5, 0.6], [0.6, 0.5]])
    assert flat["f"] == pytest.approx(0.0, abs=1e-9) and flat["p"] == pytest.approx(1.0)
    # a seed that lifts every candidate alike is a block, not noise: it leaves F unchanged
    lifted = candidate_effect([[0.70, 0.80, 0.60], [0.82, 0.89, 0.71]])
    assert lifted["f"] == pytest.approx(effect["f"], rel=1e-9)
    # candidate + seed effects with nothing left over: no noise to test against
    assert candidate_effect([[0.5, 0.6], [0.6, 0.7]]) is None

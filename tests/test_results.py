"""StudyResults: the one ranking, front, per-slot mean, effect and count of a study, on hand-made records."""

from __future__ import annotations

import math
import statistics

import pytest

from attnsearch.candidate import BackboneSpec, Candidate, PlacementSpec, TrainRecipe
from attnsearch.record import Metrics, RepeatRecord, TrialRecord
from attnsearch.results import StudyResults
from attnsearch.stats import welch_interval

SLOTS = {"block3": ("none", "se", "cbam"), "block5": ("none", "eca")}
T975_1 = 12.706204736174705  # t(0.975, 1)


def record(
    number: int,
    block3: str = "none",
    block5: str = "none",
    score: float | None = None,
    *,
    state: str = "complete",
    reason: str | None = None,
    lr: float = 0.05,
    params: int = 1000,
    reused_from: int | None = None,
    val_images: int | None = None,
) -> TrialRecord:
    placements = tuple(PlacementSpec(s, m) for s, m in (("block3", block3), ("block5", block5)) if m != "none")
    candidate = Candidate(BackboneSpec("vgg11_bn"), placements, TrainRecipe(lr=lr))
    metrics = Metrics(val_acc=score, params=params, val_images=val_images)
    return TrialRecord(number, state, reason, candidate, metrics=metrics, reused_from=reused_from)  # type: ignore[arg-type]


def results(*records: TrialRecord, objectives=(("val_acc", "maximize"),), target: int = 10) -> StudyResults:
    return StudyResults({r.number: r for r in records}, objectives=objectives, slots={"vgg11_bn": SLOTS}, target=target)


def test_ranking_best_first_ties_by_number_duplicates_and_unscored_left_out() -> None:
    study = results(
        record(0, score=0.50),
        record(1, "se", score=0.75),
        record(2, "cbam", score=0.75),  # ties with 1: the lower number first
        record(3, "se", score=0.75, reused_from=1),  # a duplicate that reused trial 1's score
        record(4, "cbam", score=0.10, state="pruned", reason="pruned"),
        record(5, block5="eca", state="failed", reason="diverged"),
        record(6, block5="eca", state="running"),
    )
    assert [r.number for r in study.ranked()] == [1, 2, 0]
    assert study.best().number == 1 and study.score(study.records[4]) is None
    assert study.counts() == {"complete": 4, "pruned": 1, "failed": 1, "infeasible": 0, "running": 1, "done": 6}
    assert study.done == 6 and study.reused == 1
    minimize = results(record(0, score=0.5), record(1, score=0.2), objectives=(("val_acc", "minimize"),))
    assert [r.number for r in minimize.ranked()] == [1, 0]


def test_placements_per_slot_their_means_and_the_best_module() -> None:
    study = results(
        record(0, score=0.50),
        record(1, "se", "eca", score=0.80),
        record(2, "se", score=0.60),
        record(3, "cbam", score=0.40, state="pruned"),  # not complete: in no mean
    )
    assert study.placed(study.records[2]) == {"block3": "se", "block5": "none"}
    scores = study.slot_scores()
    assert scores["block3"]["se"].mean == pytest.approx(0.70) and scores["block3"]["se"].count == 2
    assert scores["block3"]["none"].mean == 0.50 and "cbam" not in scores["block3"]
    assert list(scores["block3"]) == ["se", "none"]  # in the order of each module's best trial
    assert scores["block5"]["none"].mean == pytest.approx(0.55) and scores["block5"]["eca"].count == 1
    # one trial with eca and no recorded noise: its score's noise is unknown, so nothing is called best there
    assert scores["block5"]["eca"].se is None and scores["block5"]["eca"].interval is None
    verdicts = study.verdicts()
    assert (verdicts["block3"].leader, verdicts["block3"].runner_up) == ("se", "none")
    assert verdicts["block5"].leader == "eca" and verdicts["block5"].low is None and verdicts["block5"].tie
    assert study.best_modules() == {}
    assert study.slot_modules() == {"block3": ["none", "se", "cbam"], "block5": ["none", "eca"]}


def test_the_pareto_front_over_two_objectives() -> None:
    objectives = (("val_acc", "maximize"), ("params", "minimize"))
    study = results(
        record(0, score=0.50, params=1000),
        record(1, "se", score=0.75, params=1000),  # dominates 0
        record(2, "cbam", score=0.60, params=500),  # fewer parameters: on the front too
        record(3, "cbam", score=0.60, params=500, reused_from=2),  # a duplicate: never listed twice
        record(4, "se", "eca", score=0.60, params=800),  # dominated by 2
        objectives=objectives,
    )
    assert [r.number for r in study.pareto()] == [1, 2]
    assert study.values(study.records[2]) == (0.60, 500.0)
    summary = study.summary(kept=[1])
    assert [row["number"] for row in summary["pareto"]] == [1, 2]
    assert summary["best"]["number"] == 1 and summary["best"]["weights"] and not summary["leaderboard"][1]["weights"]
    assert summary["states"] == {"complete": 5} and summary["objectives"][1] == {
        "metric": "params",
        "direction": "minimize",
    }


def test_with_record_returns_new_results() -> None:
    before = results(record(0, score=0.5))
    after = before.with_record(record(1, "se", score=0.9))
    assert [r.number for r in before.ranked()] == [0] and [r.number for r in after.ranked()] == [1, 0]


# ------------------------------------------------------------------------------------------------ effects


def test_effects_are_paired_where_trials_differ_only_at_the_slot() -> None:
    study = results(
        record(0, "none", "none", 0.70),
        record(1, "se", "none", 0.72),  # block3: pairs with 0, +0.02
        record(2, "none", "eca", 0.71, lr=0.2),
        record(3, "se", "eca", 0.74, lr=0.2),  # block3: pairs with 2, +0.03
        record(4, "none", "none", 0.60, lr=0.1),
        record(5, "cbam", "eca", 0.90, lr=0.1),  # differs from 4 at both slots: no pair anywhere
        record(6, "none", "eca", 0.66),  # block5: pairs with 0, the only block5 pair
    )
    effects = {(e.slot, e.module): e for e in study.effects()}
    se = effects["block3", "se"]
    assert se.method == "paired" and se.n == 2 and se.basis == "paired, 2 pairs"
    half = T975_1 * statistics.stdev([0.02, 0.03]) / math.sqrt(2)
    assert (se.difference, se.low, se.high) == pytest.approx((0.025, 0.025 - half, 0.025 + half))
    assert se.tie  # two pairs: t(1) = 12.7, the interval is wide
    cbam = effects["block3", "cbam"]  # one trial with cbam: too few for an interval
    assert cbam.method == "too few" and cbam.low is None and cbam.tie
    assert cbam.difference == pytest.approx(0.90 - statistics.fmean([0.70, 0.71, 0.60, 0.66]))
    eca = effects["block5", "eca"]  # one pair only: unpaired, Welch over all trials
    assert eca.method == "unpaired" and eca.basis == "unpaired (Welch), 4 vs 3 trials"
    difference, low, high = welch_interval([0.71, 0.74, 0.90, 0.66], [0.70, 0.72, 0.60])
    assert (eca.difference, eca.low, eca.high) == pytest.approx((difference, low, high))
    assert eca.tie == (low <= 0 <= high)


def test_an_interval_without_zero_is_not_a_tie() -> None:
    pairs = [("none", "none"), ("se", "none"), ("none", "eca"), ("se", "eca"), ("none", "cbam"), ("se", "cbam")]
    scores = [0.70, 0.75, 0.60, 0.66, 0.50, 0.55]  # se adds 0.05, 0.06, 0.05 in its three pairs
    study = results(*(record(i, a, b, s) for i, ((a, b), s) in enumerate(zip(pairs, scores, strict=True))))
    effect = next(e for e in study.effects() if (e.slot, e.module) == ("block3", "se"))
    assert effect.method == "paired" and effect.n == 3 and effect.low > 0 and not effect.tie


# ------------------------------------------------------------------------------------------------ noise and verdicts


def test_a_score_records_its_binomial_noise() -> None:
    """The Wilson score interval by hand (Wilson 1927): centre (p + z^2/2n) / (1 + z^2/n), half-width
    z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n); the recorded standard error is the half-width over z."""
    z, p, n = 1.959963984540054, 0.776, 1000
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    trial = record(0, score=p, val_images=n)
    assert trial.score_se("val_acc") == pytest.approx(half / z, rel=1e-9)
    assert trial.score_se("val_acc") == pytest.approx(0.01318, abs=1e-5)  # the normal approximation's 1.3 points
    assert trial.score_se("params") is None and record(1, score=p).score_se("val_acc") is None
    with_seeds = TrialRecord(
        2,
        "complete",
        metrics=Metrics(val_acc=p, val_images=n, val_acc_std=0.02),
        repeats=tuple(RepeatRecord(s, "complete", 0.77, None, None, None, None, 3) for s in range(4)),
    )
    # binomial and seed-to-seed noise of a mean over 4 seeds, added in variance
    assert with_seeds.score_se("val_acc") == pytest.approx(math.sqrt((half / z) ** 2 + 0.02**2 / 4))


def test_a_lead_within_the_noise_is_a_tie_and_a_large_one_is_separated() -> None:
    # 1000 validation images: each score has a standard error of about 1.3 points
    close = results(record(0, score=0.776, val_images=1000), record(1, "se", score=0.778, val_images=1000))
    verdict = close.verdicts()["block3"]
    assert (verdict.leader, verdict.runner_up) == ("se", "none") and verdict.tie and close.best_modules() == {}
    se = math.sqrt(
        record(0, score=0.776, val_images=1000).score_se("val_acc") ** 2
        + record(1, score=0.778, val_images=1000).score_se("val_acc") ** 2
    )
    assert (verdict.difference, verdict.low, verdict.high) == pytest.approx(
        (0.002, 0.002 - 1.959963984540054 * se, 0.002 + 1.959963984540054 * se)
    )
    far = results(record(0, score=0.70, val_images=1000), record(1, "se", score=0.80, val_images=1000))
    assert far.verdicts()["block3"].separated and far.best_modules() == {"block3": "se"}
    summary = far.summary()["slots"]["block3"]
    assert summary["best"] == "se" and summary["separated"] and summary["interval"][0] > 0
    assert close.summary()["slots"]["block3"]["best"] is None


def test_cell_noise_is_never_below_the_scores_own() -> None:
    # two trials that agree to 0.0002 by chance: the spread says 0.0001, the binomial noise says 0.0093
    study = results(record(0, "se", score=0.7, val_images=1000), record(1, "se", "eca", score=0.7002, val_images=1000))
    cell = study.slot_scores()["block3"]["se"]
    own = record(0, score=0.7, val_images=1000).score_se("val_acc")
    assert cell.se == pytest.approx(math.sqrt(2 * own**2) / 2, rel=1e-3) and math.isinf(cell.df)


def test_differences_at_a_slot_without_none_are_against_the_slot_mean() -> None:
    study = StudyResults(
        {i: record(i, m, score=s, val_images=500) for i, (m, s) in enumerate([("se", 0.6), ("cbam", 0.8)])},
        slots={"vgg11_bn": {"block3": ("se", "cbam")}},
    )
    found = study.differences()["block3"]
    assert found["cbam"].reference == "mean" and found["cbam"].difference == pytest.approx(0.1)
    assert found["se"].difference == pytest.approx(-0.1) and found["cbam"].low > 0 and found["se"].high < 0
    assert study.effects() == []  # effects are against none only

"""How ``attnsearch bench fidelity`` prints its figures: the lines after the table, every correlation with its
p-value and bootstrap interval, every difference with its interval, every count with what chance alone gives."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["METHOD", "correlation_text", "describe_figures", "label", "placement_table", "ranks"]


METHOD = {  # how the figures were drawn, saved with them
    "pairing": "a seed fixes the backbone's initial weights, the batch order and the augmentation for every placement",
    "validation": "every training is scored on the same images, held out of Fashion-MNIST's training split",
    "correlation": "Spearman and Kendall (tau-b) of seed-means, scipy.stats; p-value two-sided against no "
    "association; 95% percentile bootstrap over placements (2000 resamples)",
    "seeds_needed": "smallest n with power >= 80% for a two-sided paired t-test at 5%, noncentral t (scipy.stats.nct)"
    "; sd of a paired difference pooled over every pair of placements, (P-1)(S-1) df, chi-square interval",
}


def label(placement: dict[str, str]) -> str:
    """A placement written out, ``none`` slots left out: ``block4=se``, ``none`` for the bare backbone.

    Example:
        >>> label({"block3": "none", "block4": "se"}), label({"block3": "none", "block4": "none"})
        ('block4=se', 'none')
    """
    return " ".join(f"{slot}={module}" for slot, module in placement.items() if module != "none") or "none"


def ranks(scores: list[float]) -> list[int]:
    """Rank 1 for the highest score (an earlier placement first among equal scores).

    Example:
        >>> ranks([0.7, 0.9, 0.8])
        [3, 1, 2]
    """
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    out = [0] * len(scores)
    for rank, i in enumerate(order, 1):
        out[i] = rank
    return out


def placement_table(config: dict[str, Any], placements: list[dict[str, Any]]) -> tuple[str, list[str], list[list[str]]]:
    """Title, columns and rows of ``bench fidelity``'s table: each placement's seed-mean and per-seed scores and
    its rank at each budget."""
    rank = {b: ranks([p[b]["val_acc"] for p in placements]) for b in ("brief", "long")}
    rows = [
        [
            p["placement"],
            *(
                cell
                for b in ("brief", "long")
                for cell in (
                    f"{p[b]['val_acc']:.2%}",
                    " ".join(f"{a:.1%}" for a in p[b]["per_seed"]),
                    str(rank[b][i]),
                )
            ),
        ]
        for i, p in enumerate(placements)
    ]
    title = (
        f"Fidelity: {len(rows)} placements on {config['backbone']} x{config['width']}, Fashion-MNIST "
        f"{config['image_size']}px; val_acc on {config['val_images']} held-out images, mean of "
        f"{len(config['seeds'])} seeds"
    )
    return title, ["placement", "brief", "per seed", "rank", "long", "per seed", "rank"], rows


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def correlation_text(agreement: dict[str, Any]) -> str:
    """``Spearman 0.62 (p = 0.031, 95% bootstrap [0.10, 0.90]), Kendall ...``; undefined where a list is constant.

    Example:
        >>> correlation_text({"n": 5, "spearman": {"statistic": 0.9, "p_value": 0.037, "interval": [0.1, 1.0]},
        ...                   "kendall": {"statistic": float("nan"), "p_value": float("nan"), "interval": None}})
        'Spearman 0.90 (p = 0.037, 95% bootstrap [0.10, 1.00]), Kendall undefined (constant scores)'
    """
    parts = []
    for name in ("spearman", "kendall"):
        a = agreement[name]
        if a["statistic"] is None or math.isnan(a["statistic"]):
            parts.append(f"{name.title()} undefined (constant scores)")
            continue
        interval = a["interval"]
        around = f", 95% bootstrap [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""
        parts.append(f"{name.title()} {a['statistic']:.2f} (p = {_number(a['p_value'], 3)}{around})")
    return ", ".join(parts)


def _epochs(n: int) -> str:
    return "1 epoch" if n == 1 else f"{n} epochs"


def _seeds(n: int | None) -> str:
    return "over a million" if n is None else str(n)


def describe_figures(config: dict[str, Any], figures: dict[str, Any], timing: dict[str, Any]) -> list[str]:
    """The lines printed after ``bench fidelity``'s table, from its config, figures and timing."""
    budgets = config["budgets"]
    brief, long = budgets["brief"], budgets["long"]
    f = figures["fidelity"]
    n = f["n"]
    lines = [
        f"brief: {_epochs(brief['epochs'])} x {brief['train_images']} images; long: {_epochs(long['epochs'])} x "
        f"{long['train_images']} images ({config['long_over_brief']:.1f}x); seeds {config['seeds']} shared by every "
        f"placement; mean over the grid {figures['grid_mean']['brief']:.2%} brief, {figures['grid_mean']['long']:.2%} "
        "long",
        f"brief vs long ranks ({n} seed-means): {correlation_text(f)}",
    ]
    top1, top3 = f["top1"], f["top3"]
    same = "the same" if top1["overlap"] else "not the same"
    lines.append(
        f"top-1: brief's best {top1['brief_top'][0]}, long's best {top1['long_top'][0]}: {same} "
        f"(chance alone: {top1['chance']:.0%}); top-3 overlap {top3['overlap']} of {len(top3['long_top'])} "
        f"(chance alone: {top3['chance']:.2f})"
    )
    for budget in ("brief", "long"):
        for pair in figures["noise_ceiling"][budget]:
            a, b = pair["seeds"]
            lines.append(f"noise ceiling, {budget}: seed {a} vs seed {b}: {correlation_text(pair)}")
    for budget in ("brief", "long"):
        lead = figures["leader"][budget]
        low, high = lead["interval_points"]
        interval = "no interval" if low is None or math.isnan(low) else f"[{low:+.2f}, {high:+.2f}]"
        verdict = "separated" if lead["separated"] else "not separated"
        lines.append(
            f"leader, {budget}: {lead['best']} ahead of {lead['runner_up']} by {lead['difference_points']:+.2f} pt "
            f"{interval} over {len(config['seeds'])} seeds: {verdict}"
        )
    for budget in ("brief", "long"):
        need = figures["seeds_needed"][budget]
        if not need["sd_points"]:  # zero (or null): nothing to size the seeds from
            lines.append(f"seeds needed, {budget}: no spread between seeds measured; too few seeds to say")
            continue
        low, high = need["sd_interval_points"]
        effects = "; ".join(
            f"{e['effect_points']:g} pt: {_seeds(e['seeds'])} seeds [{_seeds(e['range'][0])}, {_seeds(e['range'][1])}]"
            for e in need["effects"]
        )
        lines.append(
            f"seeds needed, {budget} (paired t-test, 5% two-sided, 80% power): sd of a paired difference "
            f"{_number(need['sd_points'])} pt [{_number(low)}, {_number(high)}] ({need['df']} df); {effects}"
        )
    t = timing
    lines.append(
        f"time: load {t['load_seconds']:.0f} s; trainings {t['seconds_per_training']['brief']:.0f} s brief, "
        f"{t['seconds_per_training']['long']:.0f} s long on average; this run trained {t['trained_now']} "
        f"({t['this_run_train_seconds']:.0f} s), read {t['from_cache']} from the cache"
    )
    return lines

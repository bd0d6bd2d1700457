"""Finished trials as export and replay read them: the study's objectives, the ranking, one complete trial, weights.

Everything here reads a results folder through :class:`ResultsStore` and works on any copy of it, with or without
the Optuna journal. Every problem is a one-line :class:`StoreError`.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

from ..candidate import Candidate
from ..yamlfile import YamlError, read_yaml
from .store import SUMMARY, ResultsStore, StoreError

__all__ = [
    "open_results",
    "pareto_trials",
    "ranked_trials",
    "read_finished_trial",
    "read_state_dict",
    "study_objectives",
    "trial_score",
]

DIRECTIONS = ("maximize", "minimize")
DEFAULT_OBJECTIVES = (("val_acc", "maximize"),)  # a space file's default


def open_results(root: Path | str) -> ResultsStore:
    """The study folder at ``root``; a StoreError when it is missing or holds no trial record."""
    store = ResultsStore(root)
    if not store.root.is_dir():
        raise StoreError(f"{store.root}: no such results folder")
    if not store.trial_numbers():
        raise StoreError(f"{store.root}: no trial records (expected trials/<n>/trial.json)")
    return store


def study_objectives(store: ResultsStore) -> list[tuple[str, str]]:
    """``(metric, direction)`` of each objective: from summary.json, else space.yaml, else val_acc maximized.

    Example:
        >>> study_objectives(ResultsStore("no/such/folder"))
        [('val_acc', 'maximize')]
    """
    found: Any = None
    summary = store.root / SUMMARY
    if summary.exists():
        try:
            found = json.loads(summary.read_text(encoding="utf-8")).get("objectives")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
            raise StoreError(f"{summary}: not a readable summary ({err})") from None
    if found is None and store.space_path.exists():
        try:
            found = ((read_yaml(store.space_path) or {}).get("search") or {}).get("objectives")
        except (YamlError, AttributeError) as err:
            raise StoreError(f"{store.space_path}: not a readable space file ({err})") from None
    if found is None:
        return list(DEFAULT_OBJECTIVES)
    objectives = []
    for item in found if isinstance(found, list) else [None]:
        metric = item.get("metric") if isinstance(item, dict) else None
        direction = item.get("direction") if isinstance(item, dict) else None
        if not isinstance(metric, str) or not metric.isidentifier() or direction not in DIRECTIONS:
            raise StoreError(f"{store.root}: the study's objectives are not readable ({item!r:.80})")
        objectives.append((metric, direction))
    return objectives or list(DEFAULT_OBJECTIVES)


def trial_score(record: dict[str, Any], metric: str) -> float | None:
    """The recorded value of ``metric`` (a mean over repeats), None when missing or not a finite number."""
    metrics = record.get("metrics")
    value = metrics.get(metric) if isinstance(metrics, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def ranked_trials(store: ResultsStore, objectives: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Complete trials scored on the first objective, best first (ties: lower number first).

    Trials that reused another trial's score are left out, as in the leaderboard.
    """
    metric, direction = objectives[0]
    scored = [
        (score, record)
        for record in store.trials()
        if record.get("state") == "complete"
        and record.get("reused_from") is None
        and (score := trial_score(record, metric)) is not None
    ]
    sign = -1.0 if direction == "maximize" else 1.0
    return [record for _, record in sorted(scored, key=lambda pair: (sign * pair[0], pair[1]["number"]))]


def pareto_trials(records: list[dict[str, Any]], objectives: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The records no other record dominates on every objective, in the order given."""

    def signed(record: dict[str, Any]) -> list[float] | None:
        values = [trial_score(record, metric) for metric, _ in objectives]
        if None in values:
            return None
        # all maximized: a point dominates another when it is at least as good everywhere and not equal
        return [v if d == "maximize" else -v for v, (_, d) in zip(values, objectives, strict=True) if v is not None]

    points = [(record, p) for record in records if (p := signed(record)) is not None]

    def dominated(p: list[float]) -> bool:
        return any(all(a >= b for a, b in zip(q, p, strict=True)) and q != p for _, q in points)

    return [record for record, p in points if not dominated(p)]


def read_finished_trial(store: ResultsStore, number: int) -> tuple[dict[str, Any], Candidate]:
    """Trial ``number``'s record and its :class:`~attnsearch.candidate.Candidate`; a StoreError unless complete."""
    record = store.read_trial(number)
    path = store.trial_dir(number) / "trial.json"
    if record.get("state") != "complete":
        why = f" ({record['reason']})" if isinstance(record.get("reason"), str) else ""
        raise StoreError(f"trial {number} is {record.get('state')!s:.20}{why:.80}, not complete")
    try:
        candidate = Candidate.from_dict(record["candidate"])
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise StoreError(f"{path}: no usable candidate ({type(err).__name__}: {err})") from None
    return record, candidate


def read_state_dict(path: Path) -> dict[str, Any]:
    """A plain state_dict (name -> tensor), loaded with ``weights_only=True``: a pickle running code is refused."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StoreError(f"{path}: no such weights file") from None
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StoreError(f"{path}: not a weights file that loads safely ({first[:160]})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise StoreError(f"{path}: not a state_dict (a mapping of names to tensors)")
    return state

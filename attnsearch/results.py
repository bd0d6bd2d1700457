"""StudyResults: the one read model of a study. Every view asks it; no other module ranks, fronts or averages.

Built from a study's :class:`~attnsearch.record.TrialRecord` s (and, when there is one, its Optuna study, which
only adds how far running trials have got and what Optuna's importances need), it answers:

- :meth:`StudyResults.ranked`: complete trials best first by the first objective (ties: the lower trial number);
  duplicates that reused another trial's score are left out, everywhere;
- :meth:`~StudyResults.pareto`: the ranked trials no other one dominates on every objective;
- :meth:`~StudyResults.slot_scores` and :meth:`~StudyResults.best_modules`: the mean score of each module at each
  slot over the ranked trials, and the best one there;
- :meth:`~StudyResults.effects`: each module against ``none`` at its slot, with a 95% interval (paired where trials
  differ only at that slot, Welch's otherwise; see :mod:`attnsearch.stats`);
- :meth:`~StudyResults.counts`, :attr:`~StudyResults.done`, :attr:`~StudyResults.target`: where the study stands
  (the rule of what counts towards ``n_trials`` is :func:`attnsearch.record.counts_towards_target`);
- :meth:`~StudyResults.summary`: ``summary.json``;
- :meth:`~StudyResults.confirmation`: the confirmation race's verdict, from its own records (``confirm_records``,
  never counted, ranked or averaged with the search's; see :mod:`attnsearch.confirmation`).

``summary.json``, the run's closing tables, the live dashboard, ``watch``, ``report``, ``export`` and ``replay`` all
read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .record import TrialRecord
from . import slot_stats
from .slot_stats import Effect, SlotScore, SlotVerdict

if TYPE_CHECKING:
    import optuna

    from .confirmation import Confirmation

    from .search.store import ResultsStore
    from .space import SearchSpace

__all__ = ["DEFAULT_OBJECTIVES", "Effect", "SlotScore", "SlotVerdict", "StudyResults"]

DEFAULT_OBJECTIVES = (("val_acc", "maximize"),)  # a space file's default


@dataclass(frozen=True)
class StudyResults:
    """What a study found, from its trial records. Immutable: :meth:`with_record` returns the next one.

    Example:
        >>> from attnsearch.candidate import BackboneSpec, Candidate, PlacementSpec
        >>> from attnsearch.record import Metrics, TrialRecord
        >>> def trial(n, module, acc):
        ...     placed = (PlacementSpec("block3", module),) if module != "none" else ()
        ...     candidate = Candidate(BackboneSpec("vgg11", 0.25), placed)
        ...     return TrialRecord(n, "complete", candidate=candidate, metrics=Metrics(val_acc=acc, val_images=1000))
        >>> results = StudyResults({0: trial(0, "none", 0.70), 1: trial(1, "se", 0.75), 2: trial(2, "none", 0.72)},
        ...                        slots={"vgg11": {"block3": ("none", "se")}}, target=3)
        >>> [r.number for r in results.ranked()], results.best_modules(), results.done
        ([1, 2, 0], {'block3': 'se'}, 3)
        >>> cell = results.slot_scores()["block3"]["none"]
        >>> cell.mean, cell.count, round(cell.se, 4)
        (0.71, 2, 0.0101)
        >>> verdict = results.verdicts()["block3"]
        >>> verdict.leader, round(verdict.difference, 2), [round(x, 3) for x in (verdict.low, verdict.high)]
        ('se', 0.04, [0.007, 0.073])
    """

    records: Mapping[int, TrialRecord] = field(default_factory=dict)  # number -> record, running ones included
    objectives: tuple[tuple[str, str], ...] = DEFAULT_OBJECTIVES  # (metric, maximize | minimize)
    slots: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)  # backbone -> slot -> modules
    target: int = 0  # trials the study is to finish
    name: str = ""
    space: SearchSpace | None = field(default=None, repr=False, compare=False)
    study: optuna.Study | None = field(default=None, repr=False, compare=False)  # Optuna's, when read with it
    # the confirmation race's trials (phase confirm), number -> record: apart from ``records``, so that nothing of
    # the search (done, ranked, slot scores, effects) ever counts them
    confirm_records: Mapping[int, TrialRecord] = field(default_factory=dict)

    # -- building ------------------------------------------------------------------------------------------------

    @classmethod
    def from_space(
        cls,
        space: SearchSpace,
        records: Iterable[TrialRecord] = (),
        *,
        target: int | None = None,
        study: optuna.Study | None = None,
        confirm_records: Iterable[TrialRecord] = (),
    ) -> StudyResults:
        """The results of ``space``'s study so far; ``target`` defaults to the space's (:meth:`SearchSpace.target`).
        ``confirm_records``: the confirmation race's trials, if any."""
        return cls(
            records={r.number: r for r in records},
            objectives=tuple((o.metric, o.direction) for o in space.config.search.objectives),
            slots={b: {s: tuple(ms) for s, ms in slots.items()} for b, slots in space.slots.items()},
            target=space.target() if target is None else target,
            name=space.name,
            space=space,
            study=study,
            confirm_records={r.number: r for r in confirm_records},
        )

    @classmethod
    def from_store(cls, store: ResultsStore | Path | str, *, study: optuna.Study | None = None) -> StudyResults:
        """The results of the study in a results folder (any copy of it): its records and its ``space.yaml``.

        A folder without ``space.yaml`` is still read, with the objectives of its ``summary.json`` (else
        ``val_acc``, maximized) and no slots. Raises StoreError (one line) for a folder that is not a study.
        """
        from .search.store import ResultsStore

        store = store if isinstance(store, ResultsStore) else ResultsStore(store)
        records = store.read_records()
        confirmed = store.read_confirm_records()
        space = store.read_space()
        if space is not None:
            return cls.from_space(space, records, study=study, confirm_records=confirmed)
        return cls(
            records={r.number: r for r in records},
            objectives=store.read_summary_objectives() or DEFAULT_OBJECTIVES,
            target=len(records),
            name=store.root.name,
            study=study,
            confirm_records={r.number: r for r in confirmed},
        )

    @classmethod
    def from_study(
        cls,
        space: SearchSpace,
        study: optuna.Study,
        records: Iterable[TrialRecord] = (),
        *,
        target: int | None = None,
    ) -> StudyResults:
        """The results of ``space``'s study as its Optuna study holds them: every trial of every driver that shares
        it (``run --storage``), each read back from what the runner keeps in its user attributes (the finished
        record whole; see :mod:`attnsearch.search.shared`). ``records``: a results folder's own, used where the
        study says less (trials run by an older attnsearch). Waiting trials, and duplicates skipped because another
        driver was training their candidate, are no trials of the study. Raises AttnsearchError (one line) for a
        kept record that is not one.
        """
        from .search.shared import study_records

        found = study_records(study.get_trials(deepcopy=False), records)
        return cls.from_space(space, found, target=target, study=study)

    def with_record(self, record: TrialRecord) -> StudyResults:
        """These results with ``record`` added (or replacing the record of its trial)."""
        return replace(self, records={**self.records, record.number: record})

    # -- trials --------------------------------------------------------------------------------------------------

    def values(self, record: TrialRecord) -> tuple[float, ...] | None:
        """The objective values of a complete trial; None otherwise, or when one of them is missing."""
        if record.state != "complete":
            return None
        values = tuple(record.score(metric) for metric, _ in self.objectives)
        return None if None in values else values  # type: ignore[return-value]

    def score(self, record: TrialRecord) -> float | None:
        """The first objective's value of a complete trial, else None."""
        values = self.values(record)
        return values[0] if values else None

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` beats ``b`` on the first objective."""
        return a > b if self.objectives[0][1] == "maximize" else a < b

    @cached_property
    def _ranked(self) -> tuple[TrialRecord, ...]:
        sign = -1.0 if self.objectives[0][1] == "maximize" else 1.0
        scored = [
            (score, r) for r in self.records.values() if r.reused_from is None and (score := self.score(r)) is not None
        ]
        return tuple(r for _, r in sorted(scored, key=lambda pair: (sign * pair[0], pair[1].number)))

    def ranked(self) -> list[TrialRecord]:
        """Complete trials best first by the first objective (ties: lower number first); reused duplicates left out."""
        return list(self._ranked)

    def best(self) -> TrialRecord | None:
        """The best complete trial by the first objective, None before one completes."""
        return self._ranked[0] if self._ranked else None

    def pareto(self) -> list[TrialRecord]:
        """The ranked trials no other ranked trial dominates (at least as good on every objective and not equal),
        in the ranking's order."""
        signs = [1.0 if direction == "maximize" else -1.0 for _, direction in self.objectives]
        points = [(r, [s * v for s, v in zip(signs, self.values(r) or (), strict=True)]) for r in self._ranked]

        def dominated(p: list[float]) -> bool:
            return any(all(a >= b for a, b in zip(q, p, strict=True)) and q != p for _, q in points)

        return [r for r, p in points if not dominated(p)]

    def finished(self) -> list[TrialRecord]:
        """Every trial that is over (complete, pruned, failed, infeasible), by number."""
        return [r for _, r in sorted(self.records.items()) if r.state != "running"]

    def running(self) -> list[TrialRecord]:
        """The trials recorded as running, by number."""
        return [r for _, r in sorted(self.records.items()) if r.state == "running"]

    # -- where it stands -----------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Trials per state (complete, running, pruned, failed, infeasible), and ``done``: those that count
        towards the target."""
        counts = {"complete": 0, "pruned": 0, "failed": 0, "infeasible": 0, "running": 0}
        for record in self.records.values():
            counts[record.state] += 1
        counts["done"] = self.done
        return counts

    def states(self) -> dict[str, int]:
        """Trials per state, the states in the order they first occur by trial number (``summary.json``'s)."""
        states: dict[str, int] = {}
        for _, record in sorted(self.records.items()):
            states[record.state] = states.get(record.state, 0) + 1
        return states

    @property
    def done(self) -> int:
        """Trials that count towards the target (see :func:`attnsearch.record.counts_towards_target`)."""
        return sum(r.counts_towards_target for r in self.records.values())

    @property
    def reused(self) -> int:
        """Trials that reused a duplicate's score instead of training."""
        return sum(r.reused_from is not None for r in self.records.values())

    # -- placements ----------------------------------------------------------------------------------------------

    def slot_modules(self) -> dict[str, list[str]]:
        """Slot -> modules tried there, over every backbone, in the space's order."""
        merged: dict[str, list[str]] = {}
        for slots in self.slots.values():
            for slot, modules in slots.items():
                known = merged.setdefault(slot, [])
                known.extend(m for m in modules if m not in known)
        return merged

    def placed(self, record: TrialRecord) -> dict[str, str]:
        """Slot -> module of a trial: every slot of its backbone, 'none' where nothing is placed."""
        if record.candidate is None:
            return {}
        placed = {p.slot: p.module for p in record.candidate.placements}
        slots = self.slots.get(record.candidate.backbone.name) or {}
        return {slot: placed.get(slot, "none") for slot in slots} | placed

    def score_se(self, record: TrialRecord) -> float | None:
        """The standard error of a trial's first-objective score (:meth:`TrialRecord.score_se`), None if unknown."""
        return record.score_se(self.objectives[0][0])

    @cached_property
    def _slot_scores(self) -> dict[str, dict[str, SlotScore]]:
        scores: dict[str, dict[str, list[TrialRecord]]] = {}
        for record in self._ranked:
            assert record.candidate is not None  # a complete trial has one
            placed = {p.slot: p.module for p in record.candidate.placements}
            for slot in self.slots.get(record.candidate.backbone.name, {}):
                scores.setdefault(slot, {}).setdefault(placed.get(slot, "none"), []).append(record)
        return {slot: {m: self._cell(rs) for m, rs in modules.items()} for slot, modules in scores.items()}

    def _cell(self, records: list[TrialRecord]) -> SlotScore:
        return slot_stats.slot_score([self.score(r) or 0.0 for r in records], [self.score_se(r) for r in records])

    def slot_scores(self) -> dict[str, dict[str, SlotScore]]:
        """Slot -> module -> mean first-objective score, count and standard error over the ranked trials; the
        modules of a slot in the order of their best trial."""
        return {slot: dict(modules) for slot, modules in self._slot_scores.items()}

    @cached_property
    def _verdicts(self) -> dict[str, SlotVerdict]:
        maximize = self.objectives[0][1] == "maximize"
        return {
            slot: slot_stats.slot_verdict(slot, cells, maximize=maximize) for slot, cells in self._slot_scores.items()
        }

    def verdicts(self) -> dict[str, SlotVerdict]:
        """Slot -> the leading module, the runner-up, the difference between them with its 95% interval, and
        whether the interval excludes zero (only then is the leader called the slot's best module)."""
        return dict(self._verdicts)

    def best_modules(self) -> dict[str, str]:
        """Slot -> its best module, for the slots where the leader is separated from the runner-up (see
        :meth:`verdicts`); a slot where no module separated at this budget is left out."""
        return {slot: v.leader for slot, v in self._verdicts.items() if v.separated}

    def effects(self) -> list[Effect]:
        """The effect of every module tried at every slot against ``none`` there (slots without ``none`` have
        none): paired where two or more pairs of ranked trials differ only at that slot, Welch's interval over all
        ranked trials otherwise (two or more on each side, or trials whose scores carry their noise), else no
        interval ("too few"). Intervals are never narrower than the noise the scores are known to carry."""
        return [e for modules in self._differences.values() for e in modules.values() if e.reference == "none"]

    def differences(self) -> dict[str, dict[str, Effect]]:
        """Slot -> module -> its effect against ``none`` at the slot (as :meth:`effects`), or, at a slot where
        ``none`` was not tried (or has no complete trial), against the mean of the slot's module means
        (``reference`` says which; the interval then counts each module's noise, unpaired). The reference itself
        has no entry."""
        return {slot: dict(modules) for slot, modules in self._differences.items()}

    @cached_property
    def _differences(self) -> dict[str, dict[str, Effect]]:
        found: dict[str, dict[str, Effect]] = {}
        for slot, modules in self.slot_modules().items():
            cells = self._slot_scores.get(slot, {})
            if "none" not in cells:  # none not tried, or no complete trial with it: against the slot's mean
                found[slot] = slot_stats.against_mean(slot, cells)
                continue
            scored = [(*slot_stats.split_at(r, slot), self.score(r) or 0.0, self.score_se(r)) for r in self._ranked]
            found[slot] = {m: slot_stats.effect_against_none(slot, m, scored) for m in modules if m != "none"}
        return found

    # -- summary.json --------------------------------------------------------------------------------------------

    def summary(self, *, top: int = 10, kept: Iterable[int] = ()) -> dict[str, Any]:
        """``summary.json``: the best trial (and the Pareto set with two or more objectives), the leaderboard, the
        trials per state, and the mean score of each (slot, module). ``kept``: the trials whose weights are kept.
        """
        weights = set(kept)

        def row(record: TrialRecord) -> dict[str, Any]:
            metrics = record.metrics
            return {
                "number": record.number,
                "values": list(self.values(record) or ()),
                "placements": record.label,
                "val_acc": metrics.val_acc,
                "val_acc_std": metrics.val_acc_std,
                "val_acc_se": metrics.val_acc_se,
                "val_images": metrics.val_images,
                "params": metrics.params,
                "flops": metrics.flops,
                "train_seconds": metrics.train_seconds,
                "weights": record.number in weights,
            }

        best, verdicts = self.best(), self._verdicts
        summary: dict[str, Any] = {
            "name": self.name,
            "objectives": [{"metric": metric, "direction": direction} for metric, direction in self.objectives],
            "states": self.states(),
            "leaderboard": [row(r) for r in self._ranked[:top]],
            "best": row(best) if best is not None else None,
            "slots": {
                slot: {
                    "modules": {m: c.to_dict() for m, c in modules.items()},
                    "best": verdicts[slot].leader if verdicts[slot].separated else None,
                    "leader": verdicts[slot].leader,
                    "runner_up": verdicts[slot].runner_up,
                    "difference": verdicts[slot].difference,
                    "interval": None if verdicts[slot].low is None else [verdicts[slot].low, verdicts[slot].high],
                    "separated": verdicts[slot].separated,
                }
                for slot, modules in self._slot_scores.items()
            },
        }
        if len(self.objectives) > 1:
            summary["pareto"] = [row(r) for r in self.pareto()]
        if self.confirm_records:
            summary["confirmation"] = self.confirmation().to_dict()
        return summary

    # -- the confirmation race (phase confirm) ----------------------------------------------------------------------

    def with_confirm_record(self, record: TrialRecord) -> StudyResults:
        """These results with confirmation trial ``record`` added (or replacing the record of its number)."""
        return replace(self, confirm_records={**self.confirm_records, record.number: record})

    def confirmation(self, *, entrants: list[str] | None = None) -> Confirmation:
        """The confirmation race's state and verdict from :attr:`confirm_records`, on the first objective
        (:func:`attnsearch.confirmation.judge`). ``entrants``: the contenders' keys in the order they enter; by
        default those the search's ranking gives (:func:`attnsearch.entrants.race_keys`) when the space is known,
        else those the records hold. Its text: :func:`attnsearch.confirmation.describe_confirmation`.

        Example:
            >>> StudyResults().confirmation().contenders
            ()
        """
        from .confirmation import judge
        from .entrants import race_keys

        confirm = self.space.config.search.confirm if self.space is not None else None
        if entrants is None and confirm is not None and self.space is not None:
            entrants = race_keys(self.space, self) or None
        metric, direction = self.objectives[0]
        return judge(
            self.confirm_records.values(),
            metric=metric,
            direction=direction,
            seeds=confirm.seeds if confirm is not None else None,
            entrants=entrants,
        )

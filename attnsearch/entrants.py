"""Who races in the confirmation race, at what budget, with which seeds: derived from the search's records alone.

:mod:`attnsearch.search.confirm` runs the race with these; :meth:`attnsearch.results.StudyResults.confirmation`
uses them to know the contenders of a race read back (a search continued after a race may have other leaders:
records of a contender that no longer enters are left out of the verdict). Light: no torch, no Optuna.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .candidate import Candidate, DataSpec

if TYPE_CHECKING:
    from .results import StudyResults
    from .space import SearchSpace
    from .spacefile import ConfirmSection

__all__ = ["Entrant", "confirm_candidate", "confirm_data", "confirm_seeds", "race_keys", "select_entrants"]


@dataclass(frozen=True)
class Entrant:
    """A contender of the race as the search gave it: its candidate (the search's budget and seed) and the search
    trial it comes from (None: a baseline the search never tried)."""

    candidate: Candidate
    search_trial: int | None

    @property
    def baseline(self) -> bool:
        return not self.candidate.placements


def select_entrants(results: StudyResults, top: int) -> list[Entrant]:
    """The ``top`` best distinct candidates of the search's ranking, then the baseline (the best one's backbone,
    recipe and data with nothing placed) unless it is among them; empty before a trial completes.

    Example:
        >>> from attnsearch.candidate import BackboneSpec, PlacementSpec
        >>> from attnsearch.record import Metrics, TrialRecord
        >>> from attnsearch.results import StudyResults
        >>> def trial(n, module, acc, seed=0):
        ...     placed = (PlacementSpec("block3", module),) if module else ()
        ...     candidate = Candidate(BackboneSpec("vgg11", 0.25), placed, seed=seed)
        ...     return TrialRecord(n, "complete", candidate=candidate, metrics=Metrics(val_acc=acc))
        >>> results = StudyResults({0: trial(0, "se", 0.8), 1: trial(1, "se", 0.79, seed=1), 2: trial(2, "eca", 0.7),
        ...                         3: trial(3, None, 0.6)})
        >>> [(e.candidate.describe(), e.search_trial) for e in select_entrants(results, 2)]
        [('block3=se', 0), ('block3=eca', 2), ('baseline (nothing placed)', 3)]
    """
    entrants: list[Entrant] = []
    seen: dict[str, int] = {}  # candidate key -> its best trial
    for record in results.ranked():
        assert record.candidate is not None  # a ranked trial is complete
        seen.setdefault(record.candidate.key(), record.number)
        if len(entrants) < top and all(e.candidate.key() != record.candidate.key() for e in entrants):
            entrants.append(Entrant(record.candidate, record.number))
    if not entrants:
        return []
    bare = replace(entrants[0].candidate, placements=())
    if all(e.candidate.key() != bare.key() for e in entrants):
        entrants.append(Entrant(bare, seen.get(bare.key())))
    return entrants


def confirm_seeds(name: str, rounds: int, avoid: Iterable[int] = ()) -> list[int]:
    """The seed of each round (``rounds`` of them): from a hash of the study's ``name`` and the round, below
    2**31, never one of ``avoid`` (the search's seeds) nor repeated.

    Example:
        >>> seeds = confirm_seeds("tiny", 3)
        >>> len(set(seeds)), seeds == confirm_seeds("tiny", 3), seeds[0] in confirm_seeds("tiny", 5, avoid=[seeds[0]])
        (3, True, False)
    """
    taken, seeds = set(avoid), []
    for r in range(1, rounds + 1):
        attempt = 0
        while True:
            text = f"attnsearch confirm {name} round {r}" + (f" again {attempt}" if attempt else "")
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF
            if seed not in taken:
                break
            attempt += 1
        taken.add(seed)
        seeds.append(seed)
    return seeds


def confirm_data(space: SearchSpace) -> DataSpec:
    """The race's data: the space's, with ``search.confirm.train_size`` when it sets one (``all``: no cap)."""
    data, confirm = space.data_spec(), space.config.search.confirm
    if confirm is None or confirm.train_size is None:
        return data
    return replace(data, train_size=None if confirm.train_size == "all" else confirm.train_size)


def confirm_candidate(candidate: Candidate, confirm: ConfirmSection, seed: int, data: DataSpec) -> Candidate:
    """What a contender trains in the round of ``seed``: its candidate at the race's budget (``confirm.epochs``
    when set) and ``data``, with that seed."""
    train = candidate.train if confirm.epochs is None else replace(candidate.train, epochs=confirm.epochs)
    return replace(candidate, train=train, data=data, seed=seed)


def race_keys(space: SearchSpace, results: StudyResults) -> list[str]:
    """The contenders' keys (:meth:`Candidate.key` of what each trains in the race, the seed aside), in the order
    they enter: the race's names for them; empty when the space has no race or the search no complete trial."""
    confirm = space.config.search.confirm
    if confirm is None:
        return []
    data = confirm_data(space)
    return [confirm_candidate(e.candidate, confirm, 0, data).key() for e in select_entrants(results, confirm.top)]

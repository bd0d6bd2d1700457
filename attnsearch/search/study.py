"""The Optuna study a run asks and tells: its sampler, its pruner, its storage, and how an epoch is judged.

The sampler and the pruner are made from the space's ``search`` section (``attnsearch bench search`` replays
searches with the same ones). The study lives in the results folder's journal (:mod:`attnsearch.search.journal`:
its lock and its damage) unless a storage URL is given; a study opened again continues, its sampler's seed offset
by the trials so far.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna

from ..space import SearchSpace
from .journal import StudyJournal, check_journal
from .store import ResultsStore, StoreError

__all__ = ["judge_epoch", "make_pruner", "make_sampler", "open_study"]


def make_sampler(space: SearchSpace, offset: int = 0) -> optuna.samplers.BaseSampler:
    search = space.config.search
    seed = offset + (search.seed if search.seed is not None else space.config.train.seed)
    if search.sampler == "tpe":
        # multivariate + group: module parameters exist only when their module is chosen (conditional)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, n_startup_trials=min(10, max(2, search.n_trials // 4))
            )
    if search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)  # random, and grid/ablation (whose trials are all enqueued)


def judge_epoch(trial: optuna.Trial, epoch: int, value: float | None, *, single_objective: bool) -> bool:
    """Report a trial's epoch to its pruner and ask whether to stop it; an epoch without a score (``None``, not
    validated) is neither reported nor judged. Optuna reports and prunes single-objective studies only (``report``
    raises NotImplementedError in a multi-objective one)."""
    if value is None or not single_objective:
        return False
    trial.report(value, epoch)
    return trial.should_prune()


def make_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    search = space.config.search
    if search.pruner == "median":
        # trials validate from the first epoch the pruner may judge (SearchSpace.first_val_epoch)
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=space.pruner_warmup)
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=space.config.train.epochs)
    return optuna.pruners.NopPruner()


def _storage(store: ResultsStore, url: str | None, note: Callable[[str], None] | None) -> optuna.storages.BaseStorage:
    if url:
        try:
            return optuna.storages.get_storage(url)
        except Exception as err:  # a URL Optuna cannot open (its scheme, driver, server or file): the user's to fix
            reason = " ".join(str(err).split())[:200] or type(err).__name__
            raise StoreError(f"--storage {url}: cannot open it ({type(err).__name__}: {reason})") from None
    from optuna.storages import JournalStorage

    check_journal(store.journal_path)  # a damaged journal is refused before anything is written to it
    return JournalStorage(StudyJournal(store.journal_path, note=note))


def open_study(
    space: SearchSpace,
    store: ResultsStore,
    storage: str | None = None,
    *,
    note: Callable[[str], None] | None = None,
) -> optuna.Study:
    """The study of ``space``, created or continued: in the storage at URL ``storage``, else in the folder's journal
    (:class:`~attnsearch.search.journal.StudyJournal` on its absolute path). ``note`` hears what was done to the
    journal on the way (a stale lock removed or waited for, a record cut short set aside).

    Raises StoreError (one line) for a storage URL Optuna cannot open, or a journal with a line that is not a
    record (:func:`~attnsearch.search.journal.check_journal`; the file is left as it is).
    """
    study = optuna.create_study(
        storage=_storage(store, storage, note),
        study_name=space.name,
        pruner=make_pruner(space),
        directions=space.directions,
        load_if_exists=True,
    )
    # a resumed study must not replay the random stream its first run drew: offset the seed by the trials so far
    study.sampler = make_sampler(space, offset=len(study.get_trials(deepcopy=False)))
    return study

"""The ask/tell loop: the only code that talks to the Optuna study.

Ask a trial, turn it into a Candidate, hand it to the worker, tell the outcome, record it. Pruning decisions are
made here from the epoch scores the worker reports. Duplicate candidates reuse their recorded score. A run that
is started again continues the same study; a trial that was running when a process died is failed and retried.
"""

from __future__ import annotations

import functools
import signal
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ..candidate import Candidate
from ..space import SearchSpace
from .store import RETRY_REASONS, ResultsStore, StoreError, timestamp
from .executor import Executor, Job, LocalExecutor, TrialSettings
from ..device import resolve_device
from .worker import Constraints, TrialOutcome

__all__ = [
    "ATTR",
    "Event",
    "RunInterrupted",
    "RunResult",
    "counts_towards_target",
    "judge_epoch",
    "make_pruner",
    "make_sampler",
    "open_study",
    "run_search",
    "summarize",
    "tell_trial",
    "trial_record",
]

ATTR = "attnsearch"  # user attribute holding our state of a trial


class RunInterrupted(Exception):
    """Ctrl-C: the running trial was recorded as failed (interrupted); nothing finished was lost."""


@dataclass(frozen=True)
class Event:
    """Something a person watching the run should hear about."""

    # run (data: space, target, finished, folder, images) | started (candidate, worker) | epoch (epoch, epochs, value)
    # | finished, pruned, failed, infeasible (metrics, reason) | reused | best | resumed | note
    kind: str
    trial: int | None = None
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    study_name: str
    folder: Path
    summary: dict[str, Any]
    ran: int  # trials this run finished


# ------------------------------------------------------------------------------------------------ the study


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


def _storage(store: ResultsStore, url: str | None) -> optuna.storages.BaseStorage | str:
    if url:
        return url
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(store.journal_path)))


def open_study(space: SearchSpace, store: ResultsStore, storage: str | None = None) -> optuna.Study:
    study = optuna.create_study(
        storage=_storage(store, storage),
        study_name=space.name,
        pruner=make_pruner(space),
        directions=space.directions,
        load_if_exists=True,
    )
    # a resumed study must not replay the random stream its first run drew: offset the seed by the trials so far
    study.sampler = make_sampler(space, offset=len(study.get_trials(deepcopy=False)))
    return study


# ------------------------------------------------------------------------------------------------ records


@functools.cache
def _versions() -> dict[str, str]:
    import platform

    import torch
    import torchvision

    from .. import __version__

    return {
        "attnsearch": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "optuna": optuna.__version__,
    }


def trial_record(
    number: int,
    candidate: Candidate | None,
    params: dict[str, Any],
    state: str,
    reason: str | None,
    outcome: TrialOutcome | None = None,
    **extra: Any,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "number": number,
        "state": state,
        "reason": reason,
        "placements": candidate.describe() if candidate else None,
        "candidate": candidate.to_dict() if candidate else None,
        "params": params,
    }
    if outcome is not None:
        record.update({k: v for k, v in outcome.record().items() if k not in ("state", "reason")})
    record.update(extra)
    return record


def _objective_values(space: SearchSpace, metrics: dict[str, Any]) -> list[float] | None:
    values = []
    for objective in space.config.search.objectives:
        value = metrics.get(objective.metric)
        if value is None:
            return None
        values.append(float(value))
    return values


# ------------------------------------------------------------------------------------------------ the loop


@contextmanager
def _ctrl_c(stop: threading.Event, on_stop: Callable[[], None]) -> Iterator[None]:
    """First Ctrl-C asks the running trials to stop at their next step; a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        on_stop()

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def counts_towards_target(trial: optuna.trial.FrozenTrial) -> bool:
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get(ATTR, {}).get("reason") not in RETRY_REASONS


def _recover(study: optuna.Study, store: ResultsStore, emit: Callable[[Event], None]) -> None:
    """Trials left RUNNING by a process that died: failed as 'killed', their candidates queued again once."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = dict(trial.user_attrs.get(ATTR, {}))
        study._storage.set_trial_user_attr(trial._trial_id, ATTR, {**attrs, "state": "failed", "reason": "killed"})
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        candidate = Candidate.from_dict(attrs["candidate"]) if attrs.get("candidate") else None
        store.write_trial(trial_record(trial.number, candidate, trial.params, "failed", "killed"))
        if attrs.get("retry_of") is None:
            study.enqueue_trial(trial.params, user_attrs={ATTR: {"retry_of": trial.number}})
            emit(Event("resumed", trial.number, "was running when the last run stopped: failed (killed), queued again"))


def run_search(
    space: SearchSpace,
    *,
    results: Path | str = "results",
    storage: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str | None = None,
    fresh: bool = False,
    keep_weights: int = 0,
    force: bool = False,
    space_text: bytes | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> RunResult:
    """Run (or continue) the study of ``space``; see ``attnsearch run --help`` for the options."""
    from ..data import load_dataset

    emit = on_event or (lambda event: None)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own events say what happens
    search = space.config.search
    store = ResultsStore(Path(results) / space.name)
    text = space_text if space_text is not None else _dump_space(space)
    design = _design(space, force)
    target = len(design) if design is not None else (n_trials or search.n_trials)
    execution = space.config.execution
    local = execution.executor == "local"
    # a local run checks its device here, before any folder exists (Ray workers check their own)
    torch_device = resolve_device(device or execution.device) if local else None

    if fresh:
        moved = store.move_aside()
        if moved:
            emit(Event("note", text=f"moved the previous results to {moved}"))
    elif store.space_path.exists():
        _check_same_space(store, space)
    # the local executor loads the data here, before any folder exists: a data error writes nothing
    dataset = load_dataset(space.data_spec()) if local else None
    store.create(text)
    study = open_study(space, store, storage)
    _recover(study, store, emit)
    if design is not None and not study.user_attrs.get("enqueued"):
        for params in design:
            study.enqueue_trial(params)
        study.set_user_attr("enqueued", True)
    settings = TrialSettings(
        constraints=Constraints(**search.constraints.model_dump()),
        repeats=search.repeats,
        threads=execution.threads,
        keep_weights=keep_weights > 0,
    )
    if local:
        executor: Executor = LocalExecutor(dataset, torch_device, settings)
    else:
        from .ray_executor import RayExecutor

        executor = RayExecutor(
            space.data_spec(),
            settings,
            device=device or execution.device,
            address=execution.address,
            cpus_per_trial=execution.cpus_per_trial,
            gpus_per_trial=execution.gpus_per_trial,
            max_concurrent=execution.max_concurrent,
        )
    try:
        ran = _loop(space, study, store, executor, target, timeout, keep_weights, emit)
    finally:
        executor.close()
    summary = summarize(space, study, store)
    store.write_summary(summary)
    return RunResult(space.name, store.root, summary, ran)


@dataclass
class _Running:
    trial: optuna.Trial
    candidate: Candidate
    started: str
    worker: dict[str, Any] = field(default_factory=dict)


def _loop(
    space: SearchSpace,
    study: optuna.Study,
    store: ResultsStore,
    executor: Executor,
    target: int,
    timeout: float | None,
    keep_weights: int,
    emit: Callable[[Event], None],
) -> int:
    """Ask while there is room, wait for outcomes, tell them; returns the trials this run finished."""
    already = sum(counts_towards_target(t) for t in study.get_trials(deepcopy=False))
    emit(
        Event(
            "run",
            text=f"{space.name}: {already} of {target} trials finished, {executor.capacity} at a time",
            data={
                "space": space,
                "target": target,
                "finished": already,
                "folder": store.root,
                "capacity": executor.capacity,
            },
        )
    )
    stop = threading.Event()
    begun = time.monotonic()
    cache = _reuse_cache(study)
    running: dict[int, _Running] = {}
    ran = 0
    interrupted: int | None = None

    def on_report(number: int, epoch: int, value: float | None, worker: dict[str, Any]) -> bool:
        entry = running[number]
        if worker != entry.worker:
            entry.worker = dict(worker)
        epochs = entry.candidate.train.epochs
        text = f"epoch {epoch}/{epochs}"
        if value is not None:  # None: an epoch no pruner looks at, not validated
            text += f": val_acc {value:.2%}"
        if "node" in worker:  # under Ray: where the trial runs
            gpus = ",".join(worker.get("gpus", [])) or "none"
            text += f"  [{worker['host']} pid {worker['pid']}, gpu {gpus}]"
        prune = judge_epoch(entry.trial, epoch, value, single_objective=len(space.directions) == 1)
        emit(Event("epoch", number, text, {"epoch": epoch, "epochs": epochs, "value": value, "worker": entry.worker}))
        return prune

    with _ctrl_c(stop, executor.stop):
        while True:
            finished = sum(counts_towards_target(t) for t in study.get_trials(deepcopy=False))
            timed_out = timeout is not None and time.monotonic() - begun > timeout
            while (
                not stop.is_set()
                and not timed_out
                and len(running) < executor.capacity
                and finished + len(running) < target
            ):
                trial = study.ask()
                candidate = space.suggest(trial)
                key = candidate.key()
                retry_of = trial.user_attrs.get(ATTR, {}).get("retry_of")
                trial.set_user_attr(ATTR, {"candidate": candidate.to_dict(), "key": key, "retry_of": retry_of})
                if key in cache:
                    _reuse(study, store, trial, candidate, cache[key], emit)
                    finished += 1
                    ran += 1
                    continue
                entry = _Running(trial, candidate, timestamp())
                store.write_trial(
                    trial_record(trial.number, candidate, trial.params, "running", None, started=entry.started)
                )
                emit(
                    Event(
                        "started",
                        trial.number,
                        candidate.describe(),
                        {"candidate": candidate, "worker": dict(executor.worker)},
                    )
                )
                executor.submit(Job(trial.number, candidate))
                running[trial.number] = entry
            if timed_out and not running:
                emit(Event("note", text=f"timeout of {timeout:g} s reached"))
            if not running:
                break
            for job, outcome in executor.wait(on_report):
                entry = running.pop(job.number)
                tell_trial(
                    space,
                    study,
                    store,
                    entry.trial,
                    entry.candidate,
                    outcome,
                    keep_weights,
                    emit,
                    started=entry.started,
                )
                if outcome.state in ("complete", "infeasible"):
                    cache[entry.candidate.key()] = job.number
                if (
                    outcome.reason in ("interrupted", "worker_lost")
                    and entry.trial.user_attrs.get(ATTR, {}).get("retry_of") is None
                ):
                    # not the candidate's fault: it is tried again, once
                    study.enqueue_trial(entry.trial.params, user_attrs={ATTR: {"retry_of": job.number}})
                if outcome.reason == "interrupted":
                    interrupted = job.number
                ran += 1
            if stop.is_set() and not running:
                break
    if interrupted is not None or stop.is_set():
        store.write_summary(summarize(space, study, store))
        which = f"trial {interrupted} recorded as failed (interrupted)" if interrupted is not None else "stopped"
        raise RunInterrupted(f"interrupted: {which}")
    return ran


def _design(space: SearchSpace, force: bool) -> list[dict[str, Any]] | None:
    sampler = space.config.search.sampler
    if sampler == "ablation":
        return space.ablation()
    if sampler != "grid":
        return None
    size = space.size()
    from ..space import GRID_LIMIT, SpaceError

    if size > GRID_LIMIT and not force:
        raise SpaceError(f"search.sampler: grid of {size:,} candidates is above {GRID_LIMIT:,}; pass --force to run it")
    return space.grid()


def _dump_space(space: SearchSpace) -> bytes:
    import yaml

    return yaml.safe_dump(space.source, sort_keys=False).encode()


def _check_same_space(store: ResultsStore, space: SearchSpace) -> None:
    from ..yamlfile import YamlError, read_yaml

    try:
        stored = read_yaml(store.space_path)
    except YamlError as err:
        raise StoreError(f"{store.root} holds an unreadable space.yaml ({err}); use --fresh to start over") from None
    if stored != space.source:
        raise StoreError(f"{store.root} holds a study of a different space; use --fresh to start over or change `name`")


def _reuse_cache(study: optuna.Study) -> dict[str, int]:
    """Candidate key -> the trial whose recorded score a duplicate reuses (complete or infeasible trials)."""
    cache: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs.get(ATTR, {})
        if (
            attrs.get("key")
            and attrs.get("reused_from") is None
            and (t.state == TrialState.COMPLETE or attrs.get("state") == "infeasible")
        ):
            cache.setdefault(attrs["key"], t.number)
    return cache


def _reuse(
    study: optuna.Study,
    store: ResultsStore,
    trial: optuna.Trial,
    candidate: Candidate,
    source: int,
    emit: Callable[[Event], None],
) -> None:
    original = store.read_trial(source)
    attrs = {
        **trial.user_attrs.get(ATTR, {}),
        "reused_from": source,
        "state": original["state"],
        "reason": original.get("reason"),
    }
    trial.set_user_attr(ATTR, attrs)
    done = study.trials[source]
    # the outcome is the original's; who this trial is (number, params, retry, times) is its own
    own = ("number", "params", "reused_from", "retry_of", "started", "finished")
    record = {k: v for k, v in original.items() if k not in own}
    record.update(
        {
            "number": trial.number,
            "params": trial.params,
            "reused_from": source,
            "retry_of": attrs.get("retry_of"),
            "finished": timestamp(),
        }
    )
    store.write_trial(record)
    if original["state"] == "complete":
        study.tell(trial, done.values)
    else:
        study.tell(trial, state=TrialState.FAIL)
    emit(Event("reused", trial.number, f"same candidate as trial {source}: its score is reused"))


def tell_trial(
    space: SearchSpace,
    study: optuna.Study,
    store: ResultsStore,
    trial: optuna.Trial,
    candidate: Candidate,
    outcome: TrialOutcome,
    keep_weights: int,
    emit: Callable[[Event], None],
    *,
    started: str,
) -> None:
    attrs = {
        **trial.user_attrs.get(ATTR, {}),
        "state": outcome.state,
        "reason": outcome.reason,
        "metrics": outcome.metrics,
    }
    trial.set_user_attr(ATTR, attrs)
    state, reason = outcome.state, outcome.reason
    values = _objective_values(space, outcome.metrics) if state == "complete" else None
    if state == "complete" and values is None:
        state, reason = "failed", "no score: the run produced no validation result"
    was_best = _best_score(space, study)
    if state == "complete":
        study.tell(trial, values)
    elif state == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)
    store.write_trial(
        trial_record(
            trial.number,
            candidate,
            trial.params,
            state,
            reason,
            outcome,
            retry_of=attrs.get("retry_of"),
            started=started,
            finished=timestamp(),
            versions=_versions(),
            classes=outcome.classes,  # export's default num_classes, and what each output means
        )
    )
    if state == "complete" and keep_weights > 0 and outcome.state_dict is not None:
        _keep_top_weights(space, study, store, trial.number, outcome.state_dict, keep_weights)
    score = outcome.metrics.get("val_acc")
    text = candidate.describe() + (f"  val_acc {score:.2%}" if score is not None else "")
    emit(
        Event(
            "finished" if state == "complete" else state,
            trial.number,
            text if state in ("complete", "pruned") else f"{reason}  ({candidate.describe()})",
            {"metrics": outcome.metrics, "reason": reason},
        )
    )
    if state == "complete" and len(space.directions) == 1 and (was_best is None or _better(space, values[0], was_best)):
        emit(Event("best", trial.number, text))


def _better(space: SearchSpace, a: float, b: float) -> bool:
    return a > b if space.directions[0] == "maximize" else a < b


def _best_score(space: SearchSpace, study: optuna.Study) -> float | None:
    values = [t.values[0] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not values:
        return None
    return max(values) if space.directions[0] == "maximize" else min(values)


def _keep_top_weights(
    space: SearchSpace, study: optuna.Study, store: ResultsStore, number: int, state_dict: dict[str, Any], k: int
) -> None:
    ranked = _ranked(space, study)
    top = {t.number for t in ranked[:k]}
    if number in top:
        store.write_weights(number, state_dict)
    for t in ranked[k:]:
        store.delete_weights(t.number)


def _ranked(space: SearchSpace, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials, best first by the first objective; duplicates that reused a score are left out."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get(ATTR, {}).get("reused_from") is None
    ]
    return sorted(complete, key=lambda t: t.values[0], reverse=space.directions[0] == "maximize")


# ------------------------------------------------------------------------------------------------ the summary


def summarize(space: SearchSpace, study: optuna.Study, store: ResultsStore, *, top: int = 10) -> dict[str, Any]:
    """Best trial (or Pareto set), leaderboard, state counts and the mean score of each (slot, module)."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        state = t.user_attrs.get(ATTR, {}).get("state") or t.state.name.lower()
        counts[state] = counts.get(state, 0) + 1
    ranked = _ranked(space, study)

    def row(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
        attrs = t.user_attrs.get(ATTR, {})
        candidate = Candidate.from_dict(attrs["candidate"])
        metrics = attrs.get("metrics", {})
        return {
            "number": t.number,
            "values": t.values,
            "placements": candidate.describe(),
            "val_acc": metrics.get("val_acc"),
            "val_acc_std": metrics.get("val_acc_std"),
            "params": metrics.get("params"),
            "flops": metrics.get("flops"),
            "train_seconds": metrics.get("train_seconds"),
            "weights": store.weights_path(t.number).exists(),
        }

    summary: dict[str, Any] = {
        "name": space.name,
        "objectives": [o.model_dump() for o in space.config.search.objectives],
        "states": counts,
        "leaderboard": [row(t) for t in ranked[:top]],
        "best": row(ranked[0]) if ranked else None,
        "slots": _slot_scores(space, ranked),
    }
    if len(space.directions) > 1:
        summary["pareto"] = [row(t) for t in study.best_trials]
    return summary


def _slot_scores(space: SearchSpace, ranked: list[optuna.trial.FrozenTrial]) -> dict[str, dict[str, Any]]:
    """Slot -> module -> mean first-objective score and count over completed trials; the best module marked."""
    scores: dict[str, dict[str, list[float]]] = {}
    for t in ranked:
        candidate = Candidate.from_dict(t.user_attrs[ATTR]["candidate"])
        placed = {p.slot: p.module for p in candidate.placements}
        for slot in space.slots.get(candidate.backbone.name, {}):
            scores.setdefault(slot, {}).setdefault(placed.get(slot, "none"), []).append(t.values[0])
    result = {}
    for slot, modules in scores.items():
        means = {m: {"mean": statistics.fmean(v), "count": len(v)} for m, v in modules.items()}
        pick = max if space.directions[0] == "maximize" else min
        best = pick(means, key=lambda m: means[m]["mean"])
        result[slot] = {"modules": means, "best": best}
    return result

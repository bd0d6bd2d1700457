"""Trials on Ray: long-lived actors, each holding the dataset (on its GPU when it has one), one trial at a time.

The driver keeps the Optuna study and the results folder. An actor runs ``run_candidate``; after each epoch it puts
the score on a shared queue and waits for the driver's answer (prune or go on), so pruning works as it does
locally. Weights, metrics and history come back through Ray, so the driver's folder is complete without a shared
filesystem. An actor that dies fails its trial as ``worker_lost`` and is replaced; one that ran out of GPU memory is
retired and replaced, so leaked memory never reaches the next trial. While the run stops (Ctrl-C, SIGTERM, ...:
:mod:`attnsearch.signals`) every trial is asked to stop, and one whose actor dies then (the signal reached it too)
is recorded as ``interrupted``, not replaced.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from ..candidate import Candidate, DataSpec
from ..errors import AttnsearchError
from ..record import WorkerInfo
from .executor import Job, OnReport
from .reaper import MARK
from .settings import TrialSettings
from .worker import TrialOutcome, one_line

__all__ = ["RayExecutor", "ray_temp_dir", "start_ray", "stop_ray"]

DECISION_TIMEOUT = 600.0  # seconds an actor waits for the driver's answer before going on unpruned


_reaper: subprocess.Popen | None = None

# what Ray 2.60 adds under its temp folder for its longest Unix socket (ray/_private/node.py): the session folder
# (its date to the microsecond and the starting process's pid, up to 7 digits), then sockets/plasma_store.N
_SOCKET_TAIL = len("/session_2000-01-01_00-00-00_000000_4194304/sockets/plasma_store.99")
_SHORT_PLACES = ("/tmp", "/var/tmp", "/dev/shm")  # where a short temp folder is looked for when TMPDIR is too deep


def ray_temp_dir() -> tuple[str, str | None]:
    """The temp folder for a Ray this process starts, and a one-line note when it is not under TMPDIR.

    Ray puts its temp folder under ``RAY_TMPDIR``, else ``TMPDIR`` (``get_default_system_temp_dir`` in
    ``ray/_common/utils.py``), and its Unix sockets up to 67 characters below it; a socket's path holds at most 107
    bytes on Linux, 103 on macOS (``validate_socket_filepath``, after ``sun_path`` in ``sys/un.h``). So a deep
    TMPDIR, as HPC job folders are, breaks ``ray.init``. The folder is ``attnsearch-ray-<uid>`` (made with mode
    0700 when missing) under that variable when its sockets fit and it can be made there, else under the first of
    /tmp, /var/tmp and /dev/shm where they fit and it can be made (one of ours: a folder of another user, or a
    link, is never used).

    Raises AttnsearchError, naming the variable, when no such folder can be made.

    Example:
        >>> folder, note = ray_temp_dir()
        >>> os.path.basename(folder) == f"attnsearch-ray-{os.getuid()}"
        True
    """
    variable = "RAY_TMPDIR" if os.environ.get("RAY_TMPDIR") else "TMPDIR"
    base = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    name = f"attnsearch-ray-{os.getuid()}"
    limit = 103 if sys.platform == "darwin" else 107  # bytes in a Unix socket's path
    room = limit - _SOCKET_TAIL - len(name) - 1  # bytes left for the folder the temp folder goes in
    too_long = len(os.path.abspath(base).encode()) > room
    why = f"is too long for Ray's socket paths ({len(base.encode())} bytes; at most {room})" if too_long else ""
    for place in (base, *_SHORT_PLACES):
        folder = os.path.join(os.path.abspath(place), name)
        if len(os.path.dirname(folder).encode()) <= room and _own_folder(folder):
            if place == base:
                return folder, None
            return folder, f"{variable} ({base}) {why or f'has no usable folder {name}'}: Ray's temp folder is {folder}"
    if not too_long:
        why = f"has no usable folder {name}"
    raise AttnsearchError(
        f"{variable} ({base}) {why}, and none could be made under {', '.join(_SHORT_PLACES)} "
        f"(a Unix socket's path holds at most {limit} bytes); set RAY_TMPDIR to a writable folder of at most "
        f"{room} characters"
    )


def _own_folder(folder: str) -> bool:
    """Whether ``folder`` is, or has just been made, a writable folder of this user's and not a link."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and os.access(folder, os.W_OK | os.X_OK)


def _to_stderr(text: str) -> None:
    print(f"attnsearch: note: {text}", file=sys.stderr, flush=True)


def start_ray(
    address: str | None, *, runtime_env: dict[str, Any] | None = None, note: Callable[[str], None] | None = None
) -> bool:
    """Connect to Ray, starting a quiet local instance when ``address`` is None. True when we started it.

    A Ray we start is watched by a reaper process (:mod:`attnsearch.search.reaper`), started first and given a
    mark that every Ray process inherits, so a killed driver leaves no Ray process behind, even one killed while
    Ray starts. ``runtime_env`` is Ray's (environment variables, a setup hook for every worker process, ...).
    ``note`` hears the line saying Ray's temp folder is not under TMPDIR (default: stderr).
    Raises AttnsearchError when Ray's temp folder cannot be placed (:func:`ray_temp_dir`).
    """
    global _reaper
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, single-user cluster: no token warning
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address is None:
        temp_dir, moved = ray_temp_dir()
        if moved:
            (note or _to_stderr)(moved)
        mark = uuid.uuid4().hex
        os.environ[MARK] = mark  # every process started from here on carries it (Ray's too): the reaper finds them
        _reaper = subprocess.Popen(
            [sys.executable, "-m", "attnsearch.search.reaper", str(os.getpid()), mark],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={name: value for name, value in os.environ.items() if name != MARK},
        )
        _init(
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
            _temp_dir=temp_dir,
            configure_logging=True,
            runtime_env=runtime_env,
        )
        return True
    _init(address=address, logging_level="ERROR", log_to_driver=False, runtime_env=runtime_env)
    return False


def _init(**options: Any) -> None:
    """``ray.init(**options)``, keeping this process's SIGTERM handler.

    ``ray.init`` replaces it with one that exits at once with code 15 (``ray/_private/worker.py``), which would
    leave a stop signal (:mod:`attnsearch.signals`) to Ray from then on. The handler found before is put back
    afterwards; a SIGTERM that came during ``ray.init`` is handed to it. With no handler of its own (``SIG_DFL``)
    the process keeps Ray's, which lets ``atexit`` shut Ray down.
    """
    import ray

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    keep = previous not in (None, signal.SIG_DFL)
    try:
        ray.init(**options)
    except SystemExit as leaving:  # Ray's handler took a SIGTERM while Ray was starting
        if keep and callable(previous) and leaving.code == signal.SIGTERM:
            signal.signal(signal.SIGTERM, previous)
            previous(signal.SIGTERM, None)  # the attnsearch command line raises its Stopped here
        raise
    finally:
        if keep:
            signal.signal(signal.SIGTERM, previous)


def _worker_class() -> Any:
    import ray

    @ray.remote(max_concurrency=2)  # one thread trains, the other receives decisions and stop requests
    class TrialWorker:
        def __init__(
            self, data: dict[str, Any], threads: int, device: str, reports: Any, test: bool, plugins=()
        ) -> None:
            import torch

            from ..data import load_dataset
            from ..device import resolve_device
            from ..plugins import load_plugins

            load_plugins(plugins)  # the run's --plugin files and modules, and the entry points: before any key is used

            torch.set_num_threads(threads)  # Ray gives a 1-CPU worker one thread; we give it its CPU share
            self.device = resolve_device(device)
            # resident for every later trial; the test split only for confirmation trials, which score it
            self.dataset = load_dataset(DataSpec(**data), test=test).to(self.device)
            self.reports = reports
            self.answers: dict[int, list[Any]] = {}
            self.stopping = threading.Event()
            context = ray.get_runtime_context()
            self.worker = WorkerInfo(
                host=socket.gethostname(),
                pid=os.getpid(),
                device=str(self.device),
                node=context.get_node_id(),
                gpus=tuple(str(g) for g in ray.get_gpu_ids()),
                actor=context.get_actor_id(),
            )

        def describe(self) -> WorkerInfo:
            return self.worker

        def run(
            self,
            number: int,
            candidate: dict[str, Any],
            settings: TrialSettings,
            init_from: dict[str, Any] | None = None,
            score_test: bool = False,
        ) -> TrialOutcome:
            from .worker import run_candidate

            def report(epoch: int, value: float | None) -> bool:
                answer = [threading.Event(), False]
                if value is not None:  # a decision to wait for (None is progress alone)
                    self.answers[number] = answer
                try:
                    self.reports.put((number, epoch, value, self.worker))
                except Exception:  # the driver's queue is gone (the run is stopping, or its driver died)
                    self.stopping.set()  # the trial stops at its next step, as interrupted, not as its own fault
                    self.answers.pop(number, None)
                    return False
                if value is None:
                    return False
                answer[0].wait(DECISION_TIMEOUT)
                return bool(self.answers.pop(number, answer)[1])

            try:
                trial = Candidate.from_dict(candidate)
                shared = Candidate.from_dict(init_from) if init_from is not None else None
            except ValueError as err:  # a candidate this version cannot read fails its trial, here as anywhere
                return TrialOutcome("failed", one_line(err), worker=self.worker)
            outcome = run_candidate(
                trial,
                self.dataset,
                device=self.device,
                constraints=settings.constraints,
                repeats=settings.repeats,
                threads=settings.threads,
                report=report,
                should_stop=self.stopping.is_set,
                keep_weights=settings.keep_weights,
                first_val_epoch=settings.first_val_epoch,
                init_from=shared,
                score_test=score_test,
            )
            # where it ran (the actor's node, GPUs and id), with the threads the trial used
            outcome.worker = replace(self.worker, threads=outcome.worker.threads)
            outcome.classes = tuple(self.dataset.classes)
            return outcome

        def decide(self, number: int, prune: bool) -> None:
            answer = self.answers.get(number)
            if answer is not None:
                answer[1] = prune
                answer[0].set()

        def stop(self) -> None:
            self.stopping.set()
            for answer in list(self.answers.values()):
                answer[0].set()

    return TrialWorker


class RayExecutor:
    """Trials on Ray actors: ``cpus_per_trial`` and ``gpus_per_trial`` each, as many as the cluster (or
    ``max_concurrent``) allows.

    An actor lost with its trial (its process or its node died) is replaced by one that counts in ``capacity``
    only once it has started: when the node is gone and the cluster has no room left for it, the trials go on
    the actors that remain instead of waiting for one that never starts. The queue that carries the actors'
    reports lives on the driver's node, so losing any other node leaves it.

    Example:
        >>> executor = RayExecutor(space.data_spec(), TrialSettings(), cpus_per_trial=1)  # doctest: +SKIP
    """

    def __init__(
        self,
        data: DataSpec,
        settings: TrialSettings,
        *,
        device: str = "auto",
        address: str | None = None,
        cpus_per_trial: float = 1.0,
        gpus_per_trial: float = 0.0,
        max_concurrent: int | None = None,
        note: Callable[[str], None] | None = None,
        test: bool = False,
    ) -> None:
        import ray
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.started_ray = start_ray(address, note=note)
        self.data = asdict(data)
        self.test = test  # the actors load the test split too (a confirmation race's executor)
        self.cpus, self.gpus = cpus_per_trial, gpus_per_trial
        self.device = "cuda" if gpus_per_trial > 0 else ("cpu" if device == "auto" else device)
        # the threads a trial uses: its CPU share, unless the space fixes them
        self.threads = settings.threads or max(1, int(cpus_per_trial))
        self.settings = settings
        resources = ray.cluster_resources()
        fits = math.floor(resources.get("CPU", 1) / cpus_per_trial + 1e-9)
        if gpus_per_trial > 0:
            fits = min(fits, math.floor(resources.get("GPU", 0) / gpus_per_trial + 1e-9))
            if fits < 1:
                raise AttnsearchError(f"execution.gpus_per_trial: {gpus_per_trial} but the Ray cluster has no GPU")
        limit = max(1, min(fits, max_concurrent or fits))
        self.worker = WorkerInfo()  # an actor is picked at submit time: trials name it in their reports
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.reports = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        self.running: dict[Any, tuple[Job, Any]] = {}  # object ref -> (job, actor)
        self.actors: dict[int, Any] = {}  # trial number -> actor running it
        self.where: dict[int, WorkerInfo] = {}  # trial number -> where it runs, as its reports say
        self.starting: dict[Any, Any] = {}  # replacements not started yet: ref of their describe() -> actor
        self.stopping = False  # stop() was called: every trial is to stop, and a lost actor is not replaced
        self._worker = _worker_class()
        self.idle = [self._new_actor() for _ in range(limit)]

    @property
    def capacity(self) -> int:
        """Trials that can run at once: the actors there are, less replacements that have not started yet."""
        return max(1, len(self.idle) + len(self.running))

    def _new_actor(self) -> Any:
        return self._worker.options(num_cpus=self.cpus, num_gpus=self.gpus).remote(
            self.data, self.threads, self.device, self.reports, self.test, self.settings.plugins
        )

    def submit(self, job: Job) -> None:
        if self.idle:
            actor = self.idle.pop()
        elif self.starting:  # every actor was lost: the trial waits for a replacement to start
            actor = self.starting.pop(next(iter(self.starting)))
        else:
            actor = self._new_actor()
        shared = job.init_from.to_dict() if job.init_from is not None else None
        ref = actor.run.remote(job.number, job.candidate.to_dict(), self.settings, shared, job.score_test)
        self.running[ref] = (job, actor)
        self.actors[job.number] = actor
        if self.stopping:  # submitted after stop() (a signal between the runner's check and this call)
            actor.stop.remote()

    def wait(self, on_report: OnReport) -> list[tuple[Job, TrialOutcome]]:
        """Block until a submitted trial is done, and return the finished ones; or until a replacement actor has
        started (an empty list: ``capacity`` grew, the caller may submit more)."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

        while True:
            self._answer_reports(on_report)
            ready, _ = ray.wait([*self.running, *self.starting], num_returns=1, timeout=0.05)
            if not ready:
                continue
            done = []
            for ref in ready:
                if ref in self.starting:
                    self._started(ref)
                    continue
                job, actor = self.running.pop(ref)
                self.actors.pop(job.number, None)
                where = self.where.pop(job.number, WorkerInfo())
                try:
                    outcome = ray.get(ref)
                except (RayActorError, WorkerCrashedError) as err:
                    error = " ".join(str(err).split())[:300]
                    # lost while the run stops: the stop signal reached the worker too (scancel signals every
                    # process of a job); the trial was interrupted, and the cluster is going, so no replacement
                    reason = "interrupted" if self.stopping else "worker_lost"
                    outcome = TrialOutcome("failed", reason, worker=replace(where, error=error))
                    if not self.stopping:
                        fresh = self._new_actor()  # takes the lost one's place once it has started
                        self.starting[fresh.describe.remote()] = fresh
                    actor = None
                except RayTaskError as err:  # raised in the actor outside the trial's own guard: its trial fails
                    outcome = TrialOutcome("failed", one_line(err.cause if isinstance(err.cause, Exception) else err))
                else:
                    if outcome.reason == "oom" and outcome.worker.gpus:
                        ray.kill(actor)  # leaked GPU memory must not poison later trials
                        actor = self._new_actor()
                if actor is not None:
                    self.idle.append(actor)
                done.append((job, outcome))
            self._answer_reports(on_report)
            for job, _ in done:  # a report that came in after its trial ended
                self.where.pop(job.number, None)
            return done

    def _started(self, ref: Any) -> None:
        """A replacement actor has started (it joins the idle ones) or died starting (it is dropped: its node is
        gone, or the cluster lost it; the actors left carry on)."""
        import ray
        from ray.exceptions import RayActorError, WorkerCrashedError

        actor = self.starting.pop(ref)
        try:
            ray.get(ref)
        except (RayActorError, WorkerCrashedError):
            return
        self.idle.append(actor)

    def _answer_reports(self, on_report: OnReport) -> None:
        while True:
            try:
                number, epoch, value, worker = self.reports.get_nowait()
            except Exception:  # ray.util.queue.Empty
                return
            self.where[number] = worker
            prune = on_report(number, epoch, value, worker)
            actor = self.actors.get(number)
            if actor is not None and value is not None:
                actor.decide.remote(number, prune)

    def stop(self) -> None:
        """Ask every running trial to stop at its next step (it comes back as failed, ``interrupted``), and every
        trial submitted from now on. Called from a signal handler: it only sends messages."""
        self.stopping = True
        for actor in list(self.actors.values()):
            with contextlib.suppress(Exception):  # an actor already gone comes back as lost, hence interrupted
                actor.stop.remote()

    def close(self) -> None:
        """Kill the actors and the report queue, and shut down a Ray this executor started. After a stop signal
        Ray may be half gone (a signal to the process group reaches its head processes too): what cannot be killed
        any more is left to the shutdown."""
        import ray

        actors = [actor for _, actor in self.running.values()] + [*self.idle, *self.starting.values()]
        for actor in [*actors, self.reports.actor]:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        self.running.clear()
        self.idle.clear()
        self.starting.clear()
        if self.started_ray:
            stop_ray()


def stop_ray() -> None:
    """Shut down a Ray this process started, and its reaper."""
    global _reaper
    import ray

    ray.shutdown()
    os.environ.pop(MARK, None)
    if _reaper is not None:
        _reaper.terminate()
        _reaper.wait(timeout=10)
        _reaper = None

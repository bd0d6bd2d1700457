"""Export a trial as standalone PyTorch code: one file that needs only torch, its weights beside it, optionally ONNX.

The code comes from :func:`attnsearch.codegen.generate_code`; this module chooses the trial, checks the code and
writes the files. Before anything is written, the generated code is run to build its model (on the meta device) and
its state_dict keys and shapes must equal attnsearch's, one to one; the weights must fit it too.

A trial with plug-in modules first loads the plug-ins its record names (:mod:`attnsearch.plugin_records`: one
warning line when a source changed since the trial, one error line when it is gone); their code is embedded in the
file or copied beside it (:mod:`attnsearch.codegen_plugin`), and the copies are written with the other files.
"""

from __future__ import annotations

import importlib.util
import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .candidate import Candidate
from .codegen import _reference_model, generate_code
from .codegen_plugin import plugin_files
from .errors import AttnsearchError
from .plugin_records import load_for_trials
from .record import TrialRecord
from .results import StudyResults
from .search.store import ResultsStore, check_writable, write_files

__all__ = ["ExportResult", "Exportable", "TrialChoice", "export_trial", "generate_code", "list_exportable"]

FORMATS = ("onnx",)
ONNX_HINT = 'pip install "attnsearch[onnx]"'


@dataclass(frozen=True)
class ExportResult:
    """What ``export_trial`` wrote.

    Example:
        >>> import tempfile
        >>> result = export_trial("tests/golden/golden", trial=1, out=Path(tempfile.mkdtemp()) / "model.py")
        >>> result.code.name, result.weights, result.num_classes, result.image_size
        ('model.py', None, 10, 32)
    """

    trial: int
    code: Path
    weights: Path | None  # with --weights: the state_dict, next to the code
    onnx: Path | None  # with --format onnx
    num_classes: int
    image_size: int


@dataclass(frozen=True)
class TrialChoice:
    number: int
    placements: str  # written from the parsed candidate
    scores: dict[str, float | None]  # objective metric -> recorded score
    weights: bool  # model.pt is there


@dataclass(frozen=True)
class Exportable:
    """The trials ``best`` chooses from: the leaderboard with one objective, the Pareto trials with several.

    Example:
        >>> found = list_exportable("tests/golden/golden")  # a tiny finished study the tests keep
        >>> found.pareto, [t.number for t in found.trials][:3]
        (False, [1, 0, 5])
    """

    objectives: list[tuple[str, str]]  # (metric, direction)
    pareto: bool
    trials: list[TrialChoice]


# ------------------------------------------------------------------------------------------------ the library


def list_exportable(results_dir: Path | str) -> Exportable:
    """Complete trials best first (one objective), or the Pareto trials (several objectives)."""
    store = ResultsStore.open(results_dir)
    results = StudyResults.from_store(store)
    objectives = list(results.objectives)
    pareto = len(objectives) > 1
    kept = store.kept_weights()
    trials = [
        TrialChoice(r.number, r.label, {metric: r.score(metric) for metric, _ in objectives}, r.number in kept)
        for r in (results.pareto() if pareto else results.ranked())
    ]
    return Exportable(objectives, pareto, trials)


def export_trial(
    results_dir: Path | str,
    *,
    trial: int | str = "best",
    out: Path | str | None = None,
    weights: bool = False,
    num_classes: int | None = None,
    fmt: str | None = None,
) -> ExportResult:
    """Write trial ``trial`` of a study as one Python file (default ``RESULTS_DIR/exports/trial_<n>.py``).

    ``trial`` is a number or ``"best"``: the complete trial with the best first objective. ``weights`` writes the
    trial's ``model.pt`` next to the code (same name, ``.pt``); ``fmt="onnx"`` also writes ``.onnx`` (needs the
    onnx package). Every check runs before anything is written, that the folder can be written included; a problem
    is one AttnsearchError line (a StoreError naming the path and the system's reason when a file cannot be
    written, and then none of the files of this export stays).

    Example:
        >>> result = export_trial("results/tiny", trial=3, out="model.py", weights=True)  # doctest: +SKIP
        >>> import model  # doctest: +SKIP
        >>> net = model.build_model()  # doctest: +SKIP
        >>> net.load_state_dict(torch.load("model.pt", weights_only=True))  # doctest: +SKIP
        <All keys matched successfully>
    """
    if fmt is not None and fmt not in FORMATS:
        raise AttnsearchError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise AttnsearchError(f"--format onnx needs the onnx package: {ONNX_HINT}")
    store = ResultsStore.open(results_dir)
    # the plug-ins the trial was trained with, before its space and its model are read: attnsearch.plugin_records
    load_for_trials(store, [int(trial)] if str(trial).isdigit() else [], every=trial == "best")
    results = StudyResults.from_store(store)
    number = _pick(results, trial)
    record = store.read_finished(number)
    candidate = record.candidate
    assert candidate is not None  # read_finished guarantees it
    trained = len(record.classes) or None
    classes = num_classes if num_classes is not None else trained
    if classes is None:
        raise AttnsearchError(f"trial {number}'s record names no classes: give the number with --num-classes")
    needs_weights = weights or fmt == "onnx"
    if needs_weights and classes != trained:
        raise AttnsearchError(
            f"--num-classes {classes} differs from the {trained} classes trial {number} was trained on: its "
            "weights would not load; leave out --weights/--format or --num-classes"
        )
    code_path = Path(out) if out is not None else store.root / "exports" / f"trial_{number}.py"
    if code_path.suffix != ".py":
        raise AttnsearchError(f"{code_path}: the exported file must end in .py")
    check_writable(code_path.parent)  # before the weights are read and the model built, the ONNX export traced
    state = _trial_weights(store, number, record) if needs_weights else None

    metric = results.objectives[0][0]
    score = record.score(metric)
    code = generate_code(
        candidate,
        num_classes=classes,
        trial=number,
        score=(metric, score) if score is not None else None,
        weights_file=code_path.with_suffix(".pt").name,
    )
    copied = plugin_files(candidate)  # plug-in files the code loads from beside it (attnsearch.codegen_plugin)
    for name in copied or {}:
        if name in (code_path.name, code_path.with_suffix(".pt").name, code_path.with_suffix(".onnx").name):
            raise AttnsearchError(f"{code_path}: a plug-in file beside it is named {name}: export under another name")
    model = _run_generated(code, candidate, classes, real=fmt == "onnx", files=copied)
    if state is not None:
        _check_weights(state, model, number)
    onnx = _onnx_bytes(model, state, candidate.data.image_size) if fmt == "onnx" else None

    files = {code_path.with_name(name): data for name, data in (copied or {}).items()}
    files[code_path] = code.encode("utf-8")
    weights_path = onnx_path = None
    if weights and state is not None:
        weights_path = code_path.with_suffix(".pt")
        buffer = io.BytesIO()
        torch.save(state, buffer)
        files[weights_path] = buffer.getvalue()
    if onnx is not None:
        onnx_path = code_path.with_suffix(".onnx")
        files[onnx_path] = onnx
    write_files(files)
    return ExportResult(number, code_path, weights_path, onnx_path, classes, candidate.data.image_size)


# ------------------------------------------------------------------------------------------------ choosing a trial


def _pick(results: StudyResults, trial: int | str) -> int:
    if isinstance(trial, str) and trial.isdigit():
        trial = int(trial)
    if isinstance(trial, int) and not isinstance(trial, bool) and trial >= 0:
        return trial
    if trial != "best":
        raise AttnsearchError(f"--trial must be a trial number or 'best', got {trial!r:.40}")
    objectives = results.objectives
    if len(objectives) > 1:
        metrics = ", ".join(metric for metric, _ in objectives)
        raise AttnsearchError(
            f"the study has {len(objectives)} objectives ({metrics}): pick one of its Pareto trials with --trial N "
            "(see them with --list)"
        )
    best = results.best()
    if best is None:
        raise AttnsearchError(f"{results.name}: no complete trial with a {objectives[0][0]} score to export")
    return best.number


def _trial_weights(store: ResultsStore, number: int, record: TrialRecord) -> dict[str, torch.Tensor]:
    path = store.weights_path(number)
    if not path.exists():
        reused = record.reused_from
        hint = f" (it reuses trial {reused}'s score: export trial {reused})" if reused is not None else ""
        raise AttnsearchError(
            f"trial {number} has no weights ({path} is missing){hint}: a run keeps them as its trials finish, for "
            f"the K best (run --keep-weights K, default 1); for a finished study, run it again with --fresh "
            f"--keep-weights K (the old folder is moved aside)"
        )
    return store.read_weights(number)


def _check_weights(state: dict[str, torch.Tensor], model: nn.Module, number: int) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        odd = sorted(set(found) ^ set(expected)) or [k for k in found if found[k] != expected[k]]
        raise AttnsearchError(f"trial {number}'s model.pt does not fit its model: e.g. {odd[0]!r:.80}")


# ------------------------------------------------------------------------------------------------ building and checking


def _run_generated(
    code: str, candidate: Candidate, num_classes: int, *, real: bool, files: dict[str, bytes] | None = None
) -> nn.Module:
    """Build the generated model and hold its state_dict keys and shapes against attnsearch's model; ``files``:
    the plug-in files it loads from beside it, put beside it in a temporary folder ({} when it embeds them all; None
    when the candidate uses no plug-in module: then a failure is a bug of ours, else one line)."""
    with tempfile.TemporaryDirectory() as folder:
        for name, data in (files or {}).items():
            (Path(folder) / name).write_bytes(data)
        namespace: dict[str, Any] = {"__name__": "attnsearch_export", "__file__": str(Path(folder) / "model.py")}
        try:
            exec(compile(code, "<attnsearch export>", "exec"), namespace)  # templates, checked values, plug-in files
            with torch.device("meta"):
                generated = namespace["build_model"](num_classes)
        except Exception as err:
            if files is None:  # our templates alone: a bug of ours
                raise
            raise AttnsearchError(
                f"export: the exported code fails with its plug-in: {type(err).__name__}: {err}"
            ) from None
    reference = _reference_model(candidate, num_classes, meta=True)
    ours = {k: tuple(v.shape) for k, v in generated.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    if ours != theirs:
        odd = sorted(set(ours.items()) ^ set(theirs.items()))[0]
        # our templates and our models disagree: a bug in attnsearch, not the user's input
        raise RuntimeError(f"export: the generated model does not match attnsearch's at {odd[0]} {odd[1]}")
    return namespace["build_model"](num_classes) if real else generated


def _onnx_bytes(model: nn.Module, state: dict[str, torch.Tensor] | None, image_size: int) -> bytes:
    if state is not None:
        model.load_state_dict(state, strict=True)
    model.eval()
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        path = Path(folder) / "model.onnx"
        warnings.simplefilter("ignore")  # the TorchScript-based exporter warns about every traced shape check
        # dynamo=False: the TorchScript-based exporter needs only the onnx package (the dynamo one, onnxscript too)
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, image_size, image_size),),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )
        return path.read_bytes()

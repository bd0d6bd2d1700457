"""Small faults a new user meets, each through the real command line: weights kept by default so that ``export
--weights`` works right after ``run``; the exported file names the weights file written beside it; ``replay --top``
on a study with nothing complete says so; a value outside a field's list of values is repeated in the message."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from attnsearch.cli import main
from attnsearch.search.store import ResultsStore

pytestmark = [pytest.mark.reliability, pytest.mark.usefixtures("one_thread")]


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args])


def one_error_line(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnsearch: error: "), result.stderr
    return lines[0].removeprefix("attnsearch: error: ")


def docstring_loads_the_weights(code: Path) -> str:
    """Run the usage lines of the exported file's docstring beside it; the expression it loads the weights from."""
    usage = [line.strip() for line in ast.get_docstring(ast.parse(code.read_text())).splitlines() if "model" in line]
    usage = [line for line in usage if line.startswith("model")]
    assert usage[0] == "model = build_model()" and usage[1].startswith("model.load_state_dict(torch.load(")
    spec = importlib.util.spec_from_file_location("exported", code)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    exec("\n".join(usage), vars(module))  # the lines as a user would paste them, in the folder of the file
    return usage[1].removeprefix("model.load_state_dict(torch.load(").rsplit(", weights_only", 1)[0]


# ------------------------------------------------------------------------------------------------ weights kept


def test_export_weights_right_after_a_plain_run(
    tmp_path: Path, tiny_space_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results"
    assert invoke("run", tiny_space_file(), "--results", results).exit_code == 0  # no --keep-weights
    folder = results / "tiny"
    best = json.loads((folder / "summary.json").read_text())["best"]["number"]
    assert ResultsStore(folder).kept_weights() == {best}  # the best trial's weights, and only them
    out = tmp_path / "export" / "net.py"
    exported = invoke("export", folder, "--weights", "-o", out)
    assert exported.exit_code == 0, exported.output
    assert f"Trial {best}:" in exported.output and out.with_suffix(".pt").is_file()
    monkeypatch.chdir(out.parent)
    assert docstring_loads_the_weights(out) == '"net.pt"'  # and the docstring's lines load them as written


def test_keep_weights_0_keeps_none(tmp_path: Path, tiny_space_file: Callable[..., Path]) -> None:
    results = tmp_path / "results"
    done = invoke("run", tiny_space_file(search={"n_trials": 2}), "--results", results, "--keep-weights", "0")
    assert done.exit_code == 0, done.output
    assert ResultsStore(results / "tiny").kept_weights() == set()
    line = one_error_line(invoke("export", results / "tiny", "--weights", "-o", tmp_path / "m.py"))
    assert "has no weights" in line and "--keep-weights" in line and not (tmp_path / "m.py").exists()


def test_the_help_shows_the_default() -> None:
    options = invoke("run", "--help").output.split("Options:", 1)[1]
    option = options.split("--keep-weights", 1)[1].split("\n  --", 1)[0]
    assert re.search(r"\[default: 1\b", option), option


# ------------------------------------------------------------------------------------------------ the docstring


@pytest.mark.parametrize(
    ("name", "loads"),
    [
        ("model.py", '"model.pt"'),
        ("my nét v2.py", '"my nét v2.pt"'),  # spaces and accents are plain text
        ('say "hi".py', '__file__[:-3] + ".pt"'),  # a quote cannot go into a string literal: found from __file__
    ],
)
def test_the_exported_docstring_names_the_weights_file_written(
    finished_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, loads: str
) -> None:
    out = tmp_path / name
    done = invoke("export", finished_study, "--trial", "1", "--weights", "-o", out)
    assert done.exit_code == 0, done.output
    assert out.with_suffix(".pt").is_file() and "weights.pt" not in out.read_text()
    monkeypatch.chdir(tmp_path)
    assert docstring_loads_the_weights(out) == loads


# ------------------------------------------------------------------------------------------------ replay --top


@pytest.fixture(scope="module")
def nothing_complete(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study whose every trial is infeasible: a parameter limit no candidate meets (nothing trains)."""
    import tiny

    from attnsearch.search.runner import run_search
    from attnsearch.space import parse_space

    space = parse_space(tiny.space(search={"n_trials": 2, "constraints": {"max_params": 10}}))
    results = tmp_path_factory.mktemp("infeasible")
    run_search(space, results=results, on_event=None)
    return results / space.name


@pytest.mark.parametrize("extra", [[], ["--epochs", "3", "--json"]], ids=["plain", "new recipe, json"])
def test_replay_top_on_a_study_with_no_complete_trial(nothing_complete: Path, extra: list[str]) -> None:
    states = {r.state for r in ResultsStore(nothing_complete).read_records()}
    assert states == {"infeasible"}
    line = one_error_line(invoke("replay", nothing_complete, "--top", "2", *extra))
    assert "no complete trial to take the top 2 of" in line and "--top K" not in line
    assert not (nothing_complete / "replays").exists()


def test_replay_with_no_trial_named_still_says_how_to_name_them(nothing_complete: Path) -> None:
    line = one_error_line(invoke("replay", nothing_complete))
    assert line == "nothing to replay: name trials with --trial N or --top K"


# ------------------------------------------------------------------------------------------------ unknown values


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"data": {"dataset": "imagenet22k"}},
            "data.dataset: unknown dataset 'imagenet22k'; valid: shapes, digits, cifar10, cifar100, mnist, "
            "fashion_mnist, imagefolder",
        ),
        ({"search": {"sampler": "bayes"}}, "search.sampler: unknown sampler 'bayes'; valid: tpe, random, grid, nsga2"),
        ({"search": {"pruner": "asha"}}, "search.pruner: unknown pruner 'asha'; valid: median, hyperband, none"),
        ({"backbone": {"head": "mlp"}}, "backbone.head: unknown head 'mlp'; valid: classic, compact"),
        ({"train": {"optimizer": "lion"}}, "train.optimizer: unknown optimizer 'lion'; valid: sgd, adamw"),
        ({"train": {"optimizer": ["sgd", "lamb"]}}, "train.optimizer[1]: unknown optimizer 'lamb'; valid: sgd, adamw"),
        ({"train": {"schedule": "lr"}}, "train.schedule: unknown schedule 'lr'; valid: cosine, onecycle, step"),
        ({"train": {"precision": "fp16"}}, "train.precision: unknown precision 'fp16'; valid: auto, fp32, bf16"),
        ({"train": {"augment": ["flip", "cutout"]}}, "train.augment[1]: unknown augmentation 'cutout'; valid: crop"),
        ({"execution": {"executor": "slurm"}}, "execution.executor: unknown executor 'slurm'; valid: local, ray"),
        (
            {"search": {"objectives": [{"metric": "accuracy", "direction": "maximize"}]}},
            "search.objectives[0].metric: unknown metric 'accuracy'; valid: val_acc, val_top5, val_loss",
        ),
        (
            {"search": {"objectives": [{"metric": "val_acc", "direction": "up"}]}},
            "search.objectives[0].direction: unknown direction 'up'; valid: maximize, minimize",
        ),
    ],
)
def test_an_unknown_value_is_repeated_with_the_valid_ones(
    tiny_space_file: Callable[..., Path], change: dict, expected: str
) -> None:
    assert one_error_line(invoke("validate", tiny_space_file(**change))).startswith(expected)


def test_a_value_of_the_wrong_type_still_lists_the_valid_ones(tiny_space_file: Callable[..., Path]) -> None:
    line = one_error_line(invoke("validate", tiny_space_file(data={"dataset": 22})))
    assert line.startswith("data.dataset: must be one of shapes, digits") and line.endswith("got 22")


def test_an_unknown_value_in_a_trial_record_is_repeated_as_json(study_copy: Path, tmp_path: Path) -> None:
    path = study_copy / "trials" / "1" / "trial.json"
    record = json.loads(path.read_text())
    record["candidate"]["train"]["optimizer"] = "lion"
    path.write_text(json.dumps(record))
    line = one_error_line(invoke("export", study_copy, "--trial", "1", "-o", tmp_path / "m.py"))
    assert line == f'{path}: candidate.train.optimizer: unknown optimizer "lion"; valid: sgd, adamw'

"""`attnsearch export`: standalone code that equals attnsearch's model, templates filled with checked values only."""

from __future__ import annotations

import json
import os
import py_compile
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import attnsearch as a
from attnsearch.candidate import BackboneSpec, Candidate, DataSpec, PlacementSpec
from attnsearch.cli import main
from attnsearch.export import generate_code

from tests.standalone import build, run_standalone, save_case

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
DATA = DataSpec(image_size=32)


def _placements(*items: tuple[str, str, dict]) -> tuple[PlacementSpec, ...]:
    return tuple(PlacementSpec(slot, key, tuple(sorted(params.items()))) for slot, key, params in items)


# every module key on both families; non-default parameters on VGG, defaults on DenseNet-BC
CASES = {
    "vgg_all": Candidate(
        BackboneSpec("vgg11_bn", 0.125, "compact"),
        _placements(
            ("block1", "mhsa", {"heads": 2, "mlp_ratio": 1.5}),
            ("block2", "self_attention", {"downsample": True}),
            ("block3", "se", {"reduction": 4}),
            ("block4", "cbam", {"reduction": 4, "kernel_size": 3}),
            ("block5", "linear_attention", {"heads": 2}),
            ("conv3_1", "eca", {"kernel_size": 3}),
            ("conv4_1", "triplet", {"kernel_size": 5}),
            ("conv5_1", "coord", {"reduction": 8}),
        ),
        data=DATA,
    ),
    "densenet_all": Candidate(
        BackboneSpec("densenet_bc100", 0.125),
        _placements(
            ("denseblock1", "se", {}),
            ("denseblock2", "self_attention", {}),
            ("denseblock3", "mhsa", {}),
            ("transition1", "coord", {}),
            ("transition2", "triplet", {}),
            ("denseblock1_layers", "eca", {}),
            ("denseblock2_layers", "linear_attention", {}),
            ("denseblock3_layers", "cbam", {}),
        ),
        data=DATA,
    ),
    # the classic VGG head (dropout, 7x7 pool), VGG without BatchNorm, ECA's adaptive kernel written as None
    "vgg_classic": Candidate(
        BackboneSpec("vgg11", 0.125, "classic"), _placements(("conv1_1", "eca", {"kernel_size": None})), data=DATA
    ),
    # the ImageNet stem (7x7 conv, max-pool) and a per-layer slot
    "densenet121": Candidate(
        BackboneSpec("densenet121", 0.125), _placements(("denseblock2_layers", "se", {})), data=DATA
    ),
}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def exported(finished_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each case's code, weights and (input, expected output); and the study's best trial exported by the CLI."""
    folder = tmp_path_factory.mktemp("exported")
    torch.manual_seed(0)
    for name, candidate in CASES.items():
        save_case(folder, name, candidate)
    done = invoke("export", str(finished_study), "--weights", "-o", str(folder / "cli.py"))
    assert done.exit_code == 0, done.output
    best = json.loads((finished_study / "summary.json").read_text())["best"]["number"]
    assert f"Trial {best}: " in done.output
    record = json.loads((finished_study / "trials" / str(best) / "trial.json").read_text())
    model = build(Candidate.from_dict(record["candidate"]), num_classes=len(record["classes"]))
    model.load_state_dict(torch.load(finished_study / "trials" / str(best) / "model.pt", weights_only=True))
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.save({"x": x, "expected": model(x)}, folder / "cli_io.pt")
    return folder


def test_cases_cover_every_module_and_both_families() -> None:
    # the attention gate is a placement of its own kind: tests/test_export_gate.py
    assert {p.module for c in CASES.values() for p in c.placements} == set(a.list_modules()) - {"none", "gate"}
    assert {a.backbones.backbone_info(c.backbone.name).family for c in CASES.values()} == {"vgg", "densenet"}


def test_round_trip_in_a_process_without_attnsearch(exported: Path) -> None:
    names = [*CASES, "cli"]
    found = run_standalone(exported, names, scripted=tuple(names), exported=("vgg_all",), main="cli")
    for name in names:
        assert found[name]["diff"] <= 1e-6, (name, found[name])
        assert found[name]["script"] <= 1e-6, (name, found[name])
    assert found["vgg_all"]["export"] <= 1e-6
    assert "VGG(" in found["main"] and "output: (1, 10)" in found["main"]


def test_generated_code_reads_like_a_model_file(exported: Path) -> None:
    paths = sorted(str(p) for p in exported.glob("*.py"))
    for path in paths:
        py_compile.compile(path, doraise=True)
    for config in (["--isolated"], ["--config", str(ROOT / "pyproject.toml")]):  # ruff defaults, and ours
        done = subprocess.run([sys.executable, "-m", "ruff", "check", *config, *paths], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout
    code = (exported / "vgg_all.py").read_text()
    imports = [line for line in code.splitlines() if line.startswith(("import ", "from "))]
    assert all(line.split()[1].split(".")[0] in ("math", "collections", "torch") for line in imports), imports
    assert "# slot conv4_1\n" in code and '("conv4_1_attn", TripletAttention(64, kernel_size=5)),' in code
    assert '("0", nn.Conv2d(3, 8, kernel_size=3, padding=1)),' in code
    # only the classes the trial uses
    classic = (exported / "vgg_classic.py").read_text()
    assert "class EfficientChannelAttention(nn.Module):" in classic and "class SqueezeExcite" not in classic
    assert "nn.Dropout(p=0.5)" in classic and "EfficientChannelAttention(8, kernel_size=None)" in classic
    dense = (exported / "densenet121.py").read_text()
    assert "attn=_denseblock2_attn" in dense and "class _DenseLayer(nn.Module):" in dense


def test_best_list_and_trial_choice(finished_study: Path, study_copy: Path, tmp_path: Path) -> None:
    listed = invoke("export", str(finished_study), "--list")
    assert listed.exit_code == 0, listed.output
    assert "Complete trials, best first" in listed.output and "block3=cbam" in listed.output
    five = str(tmp_path / "five.py")
    done = invoke("export", str(finished_study), "--trial", "1", "--num-classes", "5", "-o", five)
    assert done.exit_code == 0, done.output
    code = (tmp_path / "five.py").read_text()
    assert "NUM_CLASSES = 5\n" in code and "trial 1 of an attnsearch study" in code
    refused = invoke(
        "export", str(finished_study), "--trial", "1", "--num-classes", "5", "--weights", "-o", str(tmp_path / "x.py")
    )
    assert refused.exit_code == 2 and "differs from the 10 classes" in refused.output
    # two objectives (the study's space says which): no single best; --list shows the Pareto trials, --trial picks one
    space = yaml.safe_load((study_copy / "space.yaml").read_text())
    space["search"]["objectives"] = [
        {"metric": "val_acc", "direction": "maximize"},
        {"metric": "params", "direction": "minimize"},
    ]
    (study_copy / "space.yaml").write_text(yaml.safe_dump(space))
    asked = invoke("export", str(study_copy))
    assert asked.exit_code == 2 and "--trial N" in asked.output and "--list" in asked.output
    pareto = invoke("export", str(study_copy), "--list")
    assert pareto.exit_code == 0 and "Pareto trials" in pareto.output and "params (min)" in pareto.output
    assert invoke("export", str(study_copy), "--trial", "0", "-o", str(tmp_path / "zero.py")).exit_code == 0


def _evil_pickle(path: Path, marker: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"features.0.weight": Evil()}, path)


@pytest.mark.parametrize("damage", ["missing", "evil", "not_a_state_dict", "truncated", "wrong_keys"])
def test_bad_weights_write_nothing(
    study_copy: Path, tmp_path: Path, damage: str, snapshot: Callable[[Path], dict[str, bytes]]
) -> None:
    weights = study_copy / "trials" / "0" / "model.pt"
    marker = tmp_path / "PWNED"
    if damage == "missing":
        weights.unlink()
    elif damage == "evil":
        _evil_pickle(weights, marker)
    elif damage == "not_a_state_dict":
        torch.save([torch.zeros(1)], weights)
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:300])
    else:
        torch.save({"nonsense": torch.zeros(1)}, weights)
    before = snapshot(tmp_path)
    done = invoke("export", str(study_copy), "--trial", "0", "--weights", "-o", str(tmp_path / "out" / "m.py"))
    assert done.exit_code == 2, done.output
    assert done.output.startswith("attnsearch: error:") and done.output.count("\n") == 1
    assert snapshot(tmp_path) == before and not marker.exists()
    if damage == "missing":
        assert "--keep-weights K" in done.output and "--fresh" in done.output


def test_onnx_needs_the_extra(finished_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = __import__("importlib.util").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None if name == "onnx" else real(name, *args))
    done = invoke("export", str(finished_study), "--format", "onnx", "-o", str(tmp_path / "m.py"))
    assert done.exit_code == 2 and 'pip install "attnsearch[onnx]"' in done.output
    assert not list(tmp_path.iterdir())


def test_onnx_file(finished_study: Path, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    done = invoke("export", str(finished_study), "--format", "onnx", "-o", str(tmp_path / "m.py"))
    assert done.exit_code == 0, done.output
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")))
    assert (tmp_path / "m.py").exists() and not (tmp_path / "m.pt").exists()


CRAFTED = 'x"); import os; os.system("touch PWNED"); ("'


def test_crafted_study_name_and_classes_end_up_inert(finished_study: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(finished_study, tmp_path / CRAFTED))
    for path in folder.glob("trials/*/trial.json"):
        record = json.loads(path.read_text())
        record["classes"] = [CRAFTED] * len(record["classes"])
        record["placements"] = CRAFTED
        path.write_text(json.dumps(record))
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "name": CRAFTED}))
    out = tmp_path / "run" / "model.py"
    done = invoke("export", str(folder), "--weights", "-o", str(out))
    assert done.exit_code == 0, done.output
    code = out.read_text()
    assert "PWNED" not in code and "import os" not in code and "system" not in code
    ran = subprocess.run([sys.executable, str(out)], cwd=out.parent, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    # a crafted name in the space file is not a study's name: one line, and nothing written
    space = yaml.safe_load((folder / "space.yaml").read_text())
    (folder / "space.yaml").write_text(yaml.safe_dump({**space, "name": CRAFTED}))
    refused = invoke("export", str(folder), "--weights", "-o", str(tmp_path / "again" / "model.py"))
    assert refused.exit_code == 2 and "name: must be a folder name" in refused.output
    assert not (tmp_path / "again").exists()
    assert not list(tmp_path.rglob("PWNED"))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("module", 'se(8)), __import__("os").system("touch PWNED")  #', "unknown attention module"),
        ("slot", 'block3_attn", __import__("os").system("touch PWNED"), ("', "is not a valid identifier"),
        ("params", {"reduction": '8); __import__("os").system("touch PWNED"); (1'}, "se.reduction must be a number"),
        ("params", {'reduction=8); __import__("os").system("touch PWNED"); (x': 1}, "se has no parameter"),
        ("image_size", '32); __import__("os").system("touch PWNED"); (1', "data.image_size: must be a valid integer"),
        ("backbone", 'vgg11_bn"); __import__("os").system("touch PWNED"); ("', "unknown backbone"),
    ],
)
def test_crafted_record_values_are_rejected(
    study_copy: Path,
    tmp_path: Path,
    field: str,
    value: object,
    message: str,
    snapshot: Callable[[Path], dict[str, bytes]],
) -> None:
    path = study_copy / "trials" / "2" / "trial.json"  # block3=se (the grid's trial 1 is block5=eca)
    record = json.loads(path.read_text())
    candidate = record["candidate"]
    if field in ("module", "slot", "params"):
        candidate["placements"][0][field] = value
    elif field == "image_size":
        candidate["data"]["image_size"] = value
    else:
        candidate["backbone"]["name"] = value
    path.write_text(json.dumps(record))
    before = snapshot(tmp_path)
    done = invoke("export", str(study_copy), "--trial", "2", "--weights", "-o", str(tmp_path / "out" / "m.py"))
    assert done.exit_code == 2, done.output
    assert done.output.startswith("attnsearch: error:") and done.output.count("\n") == 1
    assert message in done.output, done.output
    assert snapshot(tmp_path) == before and not list(tmp_path.rglob("PWNED"))


def test_values_outside_the_checks_never_reach_the_code() -> None:
    # numbers only: a string where a number belongs, or a non-finite float, is refused by the generator itself
    for params in ({"reduction": "8"}, {"reduction": float("nan")}):
        candidate = Candidate(BackboneSpec("vgg11_bn", 0.125), (PlacementSpec("block3", "se", tuple(params.items())),))
        with pytest.raises(ValueError, match="se"):
            generate_code(candidate, num_classes=10)
    with pytest.raises(ValueError, match="num_classes"):
        generate_code(CASES["vgg_classic"], num_classes=True)  # type: ignore[arg-type]


def test_missing_folder_and_unfinished_trial(study_copy: Path, tmp_path: Path) -> None:
    missing = invoke("export", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "no such results folder" in missing.output
    path = study_copy / "trials" / "2" / "trial.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "state": "pruned", "reason": "pruned"}))
    done = invoke("export", str(study_copy), "--trial", "2")
    assert done.exit_code == 2 and "trial 2 is pruned (pruned), not complete" in done.output
    assert not (study_copy / "exports").exists()

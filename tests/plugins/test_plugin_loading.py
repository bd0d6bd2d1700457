"""Loading plug-ins (issue 17): where they come from, what a Plugin records, and each contract refused in one line."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from plugin_files import BRIGHTNESS, TWO_STAGE, gate, write

import attnsearch as a
from attnsearch.cli import main
from attnsearch.plugins import plugin_specs

pytestmark = pytest.mark.usefixtures("one_thread", "forget_plugins")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args])


def one_error_line(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnsearch: error: "), result.stderr
    return lines[0].removeprefix("attnsearch: error: ")


def test_a_file_plugin_is_imported_once_under_a_stable_name(tmp_path: Path) -> None:
    log = tmp_path / "imports.log"
    path = write(tmp_path, "p1_once", f"open({str(log)!r}, 'a').write('imported\\n')\n" + gate("p1_once"))
    [plugin] = a.load_plugins([str(path)])
    assert plugin.name == "attnsearch_plugin_p1_once" and plugin.file == str(path)
    assert plugin.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert plugin.origin == "--plugin" and plugin.keys == {"module": ("p1_once",)} and plugin.spec == str(path)
    assert sys.modules[plugin.name].Gate is a.module_info("p1_once").cls  # pickles by that name
    assert a.load_plugins([str(path)]) == [plugin] and log.read_text() == "imported\n"  # again: a no-op
    assert a.plugin_of("module", "p1_once") is plugin and a.plugin_of("module", "se") is None
    assert plugin in a.loaded_plugins() and str(path) in plugin_specs()
    assert a.create_module("p1_once", 3, scale=2.0).weight.flatten().tolist() == [2.0, 2.0, 2.0]


def test_a_module_name_is_imported_from_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "p1_gates"
    package.mkdir()
    write(package, "__init__", gate("p1_pkg_gate"))
    monkeypatch.syspath_prepend(str(tmp_path))
    [plugin] = a.load_plugins(["p1_gates"])
    assert (plugin.name, plugin.file, plugin.spec) == ("p1_gates", str(package / "__init__.py"), "p1_gates")
    assert plugin.keys == {"module": ("p1_pkg_gate",)}


C1 = "(2, 1, 7, 5)"  # the first map every module is run on at load: one channel, odd and non-square


@pytest.mark.parametrize(
    ("stem", "body", "promise"),
    [
        ("p1_crop", gate("p1_crop", "x[:, :, :-1] * self.weight"), f"on a {C1} input: must keep its input's shape"),
        (
            "p1_detached",
            gate("p1_detached", "x.detach() * self.weight"),
            f"on a {C1} input: gives no gradient to its input",
        ),
        (
            "p1_unused",
            gate("p1_unused", init="        self.unused = nn.Parameter(torch.ones(1))"),
            f"on a {C1} input: parameter 'unused' gets no gradient",
        ),
        (
            "p1_nobf16",
            gate("p1_nobf16", "x * self.weight * float(x.detach().abs().mean().numpy())"),
            f"on a {C1} input: fails in bfloat16 (CPU autocast): TypeError: Got unsupported ScalarType BFloat16",
        ),
        (
            "p1_groups",
            gate("p1_groups", "self.norm(x)", init="        self.norm = nn.GroupNorm(4, channels)"),
            "cannot be built with 1 channels: ValueError: num_channels (1) must be divisible by num_groups (4)",
        ),
    ],
)
def test_a_module_that_breaks_its_contract_is_refused_in_one_line(
    tmp_path: Path, stem: str, body: str, promise: str
) -> None:
    path = write(tmp_path, stem, body)
    line = one_error_line(invoke("modules", "--plugin", path))
    assert line.startswith(f"plug-in {path}: module '{stem}'") and promise in line, line
    assert stem not in a.list_modules() and f"attnsearch_plugin_{stem}" not in sys.modules  # undone


def test_a_module_that_breaks_its_contract_at_a_slot_s_own_map_is_refused_at_validation(tmp_path: Path) -> None:
    wide = gate("p1_wide", "(x * self.weight)[..., :-1] if x.shape[1] >= 32 else x * self.weight")
    path = write(tmp_path, "p1_wide", wide)  # passes the load-time maps (1, 16 and 8 channels), not 32
    space = tmp_path / "space.yaml"
    space.write_text("name: p1\nbackbone: {name: vgg11_bn, width: 0.125}\nslots: {block3: [none, p1_wide]}\n")
    assert one_error_line(invoke("validate", space, "--plugin", path)) == (
        "slot block3: module 'p1_wide' (plug-in attnsearch_plugin_p1_wide) must keep its input's shape "
        "(2, 32, 8, 8), returned (2, 32, 8, 7)"
    )


@pytest.mark.parametrize(
    ("stem", "body", "says"),
    [
        ("p1_raises", "raise RuntimeError('no GPU found')\n", "import failed: RuntimeError: no GPU found"),
        ("p1_syntax", "def broken(:\n", "import failed: SyntaxError: invalid syntax"),
        ("p1_missing_dep", "import p1_not_installed\n", "import failed: ModuleNotFoundError: No module named"),
        ("p1_nothing", "VALUE = 1\n", "registers nothing; decorate a class with @attnsearch.register_module"),
        ("p1_twice", gate("se"), "attention module 'se' is registered twice"),
        (
            "p1_params",
            gate("p1_params").replace('{"scale": 1.0}', '{"scale": 2.0}'),
            "the constructor's default is 1.0",
        ),
    ],
)
def test_a_plugin_file_that_fails_to_load_is_one_line(tmp_path: Path, stem: str, body: str, says: str) -> None:
    path = write(tmp_path, stem, body)
    line = one_error_line(invoke("validate", tmp_path / "space.yaml", "--plugin", path))
    assert line.startswith(f"plug-in {path}: ") and says in line, line
    assert "se" in a.list_modules()  # a refused plug-in takes nothing with it


def test_a_plugin_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    assert one_error_line(invoke("modules", "--plugin", tmp_path / "p1_gone.py")) == (
        f"plug-in {tmp_path / 'p1_gone.py'}: no such file"
    )
    assert "cannot be imported: ModuleNotFoundError" in one_error_line(invoke("modules", "--plugin", "p1_no_module"))
    assert one_error_line(invoke("modules", "--plugin", "attnsearch.attention.se")) == (
        "plug-in attnsearch.attention.se: part of attnsearch itself, not a plug-in"
    )


def test_a_file_named_without_py_is_hinted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "p1_hinted", gate("p1_hinted"))
    monkeypatch.chdir(tmp_path)
    assert one_error_line(invoke("modules", "--plugin", "p1_hinted")).endswith("(the file? pass p1_hinted.py)")


def test_modules_and_slots_list_plugins_with_their_origin(tmp_path: Path) -> None:
    gate_file = write(tmp_path, "p1_listed", gate("p1_listed"))
    backbone_file = write(tmp_path, "p1_listed_two", TWO_STAGE.format(key="p1_listed_two"))
    listed = json.loads(invoke("modules", "--json", "--plugin", gate_file).output)
    origins = {m["key"]: m["origin"] for m in listed}
    assert origins["p1_listed"] == "p1_listed.py (--plugin)" and origins["se"] == "built-in"
    table = invoke("modules", "--plugin", gate_file).output
    assert "p1_listed.py" in table and "(--plugin)" in table and "built-in" in table
    found = invoke("slots", "p1_listed_two", "--image-size", "16", "--width", "0.25", "--plugin", backbone_file)
    assert found.exit_code == 0 and "p1_listed_two.py (--plugin)" in found.output, found.output
    slots = json.loads(invoke("slots", "p1_listed_two", "--image-size", "16", "--width", "0.25", "--json").output)
    assert [(s["name"], s["channels"], s["height"], s["width"], s["origin"]) for s in slots] == [
        ("s1", 8, 16, 16, "p1_listed_two.py (--plugin)"),
        ("s2", 16, 8, 8, "p1_listed_two.py (--plugin)"),
    ]


def test_a_backbone_keeps_its_parameter_names_and_applies_the_placed_modules(tmp_path: Path) -> None:
    a.load_plugins([str(write(tmp_path, "p1_placed", TWO_STAGE.format(key="p1_placed")))])
    plain = a.build_model("p1_placed", num_classes=3, width=0.25, image_size=16)
    model = a.build_model("p1_placed", {"s1": "se", "s2": "cbam"}, num_classes=3, width=0.25, image_size=16)
    keys = list(model.state_dict())
    assert set(plain.state_dict()) <= set(keys)
    assert {k.split(".")[0] for k in keys if "_attn" in k} == {"s1_attn", "stage2"}
    assert any(k.startswith("s1_attn.") for k in keys) and any(k.startswith("stage2.s2_attn.") for k in keys)
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    stage2 = model.stage2  # conv, bn, relu, then s2_attn (a child of the Sequential, after relu)
    assert list(dict(stage2.named_children())) == ["0", "1", "2", "s2_attn"]
    stage1 = model.stage1[2](model.stage1[1](model.stage1[0](x)))  # its children: stage1's own hook not called
    by_hand = model.head(stage2(model.s1_attn(stage1)).mean((2, 3)))
    torch.testing.assert_close(model(x), by_hand, rtol=0, atol=0)


def test_a_sequential_backbone_gets_its_modules_in_order(tmp_path: Path) -> None:
    body = """
@attnsearch.register_backbone("p1_seq", slots={"conv1": "0", "conv2": "2"})
def seq(num_classes):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, 2, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
"""
    a.load_plugins([str(write(tmp_path, "p1_seq", body))])
    model = a.build_model("p1_seq", {"conv1": "se", "conv2": "eca"}, num_classes=2, image_size=8)
    assert [name for name, _ in model.named_children()] == ["0", "conv1_attn", "1", "2", "conv2_attn", "3", "4", "5"]
    with pytest.raises(a.AttnsearchError, match=r"p1_seq: its factory takes no width; got width 0\.5"):
        a.build_model("p1_seq", num_classes=2, width=0.5, image_size=8)


def test_a_backbone_whose_slot_does_not_exist_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "p1_noslot", TWO_STAGE.format(key="p1_noslot").replace('"stage2.2"', '"stage3"'))
    assert one_error_line(invoke("slots", "p1_noslot", "--plugin", path)) == (
        f"plug-in {path}: backbone p1_noslot: slot s2: the model has no submodule 'stage3'"
    )
    assert "p1_noslot" not in a.list_backbones()


def test_a_backbone_that_does_not_run_at_the_image_size_is_refused_at_validation(tmp_path: Path) -> None:
    body = """
@attnsearch.register_backbone("p1_fixed", slots={"s1": "conv"})
def fixed(num_classes):
    return nn.ModuleDict({"conv": nn.Conv2d(3, 4, 3)})  # no forward of its own
"""
    path = write(tmp_path, "p1_fixed", body)
    space = tmp_path / "space.yaml"
    space.write_text("name: p1\nbackbone: {name: p1_fixed}\nslots: {s1: [none, se]}\ndata: {image_size: 16}\n")
    line = one_error_line(invoke("validate", space, "--plugin", path))
    assert line.startswith("data.image_size: p1_fixed: does not run at image size 16: NotImplementedError"), line


def test_a_dataset_is_resized_to_the_image_size_and_checked(tmp_path: Path) -> None:
    a.load_plugins([str(write(tmp_path, "p1_bright", BRIGHTNESS.format(key="p1_bright")))])
    from attnsearch.candidate import DataSpec
    from attnsearch.data import load_dataset

    ds = load_dataset(DataSpec(dataset="p1_bright", image_size=16, train_size=20))
    assert ds.train_x.shape == (20, 3, 16, 16) and ds.val_x.shape == (24, 3, 16, 16)
    assert ds.classes == ("dark", "bright") and ds.train_y.bincount().tolist() == [10, 10]
    assert ds.split == {"validation": "plug-in", "train_images": 20, "val_images": 24}
    with pytest.raises(a.AttnsearchError, match=r"^p1_bright has no test split$"):
        load_dataset(DataSpec(dataset="p1_bright"), test=True)


@pytest.mark.parametrize(
    ("stem", "change", "says"),
    [
        ("p1_floaty", ("x = (torch.rand", "x = (255 * torch.rand"), "train_x must be uint8 images (0..255), got "),
        ("p1_label9", ("y = torch.arange(n) % 2", "y = torch.arange(n) % 3 * 4 + 1"), "holds label 9, outside its 2"),
        ("p1_onlydark", ("y = torch.arange(n) % 2", "y = torch.zeros(n).long()"), "no image of declared class 1"),
    ],
)
def test_a_dataset_that_breaks_its_promise_is_refused_in_one_line(
    tmp_path: Path, stem: str, change: tuple[str, str], says: str
) -> None:
    source = BRIGHTNESS.format(key=stem).replace(*change)
    if stem == "p1_floaty":
        source = source.replace(").to(torch.uint8)", ")")
    path = write(tmp_path, stem, source)
    space = tmp_path / "space.yaml"
    space.write_text(
        f"name: p1\nbackbone: {{name: vgg11_bn, width: 0.125}}\nslots: {{block3: [none]}}\ndata: {{dataset: {stem}}}\n"
    )
    result = CliRunner().invoke(main, ["run", str(space), "--plugin", str(path), "--results", str(tmp_path / "r")])
    line = one_error_line(result)
    assert f"plug-in dataset '{stem}' (attnsearch_plugin_{stem}): " in line and says in line, line

"""Parameters a module cannot honour at a slot: each module's effective_params against its own width arithmetic,
the space's count and notes, and a run that trains two names for one network once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

from attnsearch.attention import create_module, effective_params, register_module
from attnsearch.attention.registry import unregister_module
from attnsearch.cli import main
from attnsearch.effective import canonical_candidate, distinct_size, effective_notes
from attnsearch.space import parse_space

# (key, channels, picked, canonical): the canonical values worked out by hand from each module's width rule
CASES = [
    # SE: hidden = max(1, C // r); canonical r: the smallest power of two giving that hidden width, else the largest r
    # 8 // 64 = 0 -> 1 (the floor); r = 5, 6, 7, 8, ... all give 1: the smallest power of two among them is 8
    ("se", 8, {"reduction": 64}, {"reduction": 8}),
    ("se", 8, {"reduction": 5}, {"reduction": 8}),
    ("se", 8, {"reduction": 3}, {"reduction": 4}),  # 8 // 3 = 2 = 8 // 4 (r = 3, 4 give 2)
    ("se", 64, {"reduction": 11}, {"reduction": 12}),  # 64 // 11 = 5 = 64 // 12 (r = 11, 12; no power of two)
    ("se", 108, {"reduction": 18}, {"reduction": 16}),  # 108 // r = 6 for r = 16, 17, 18
    ("se", 108, {"reduction": 16}, {"reduction": 16}),  # a power of two the floor does not decide stays
    ("cbam", 8, {"reduction": 16, "kernel_size": 3}, {"reduction": 8, "kernel_size": 3}),
    # coord: mip = max(8, C // r); 64 // 32 = 2 -> mip 8 (the floor), as for every r >= 8: r becomes 8
    ("coord", 64, {"reduction": 32}, {"reduction": 8}),
    ("coord", 256, {"reduction": 24}, {"reduction": 25}),  # 256 // 24 = 10 = 256 // 25 (r = 24, 25)
    # ECA: k = |log2 C / gamma + b / gamma| made odd; log2 64 = 6: (6 + 1) / 2 = 3.5 -> 3; gamma 3: 2.33 -> 2 -> 3
    ("eca", 64, {"kernel_size": None}, {"kernel_size": 3}),
    ("eca", 64, {"kernel_size": None, "gamma": 3}, {"kernel_size": 3}),
    ("eca", 64, {"kernel_size": 5, "gamma": 3}, {"kernel_size": 5}),
    ("self_attention", 8, {"reduction": 16, "downsample": True}, {"reduction": 8, "downsample": True}),
    # linear attention: d = max(1, 8 // 16) = 1, heads divide gcd(d, C) = 1; d = 16 // 2 = 8: heads 3 -> 2
    ("linear_attention", 8, {"reduction": 16, "heads": 4}, {"reduction": 8, "heads": 1}),
    ("linear_attention", 16, {"reduction": 2, "heads": 3}, {"reduction": 2, "heads": 2}),
    # MHSA: heads = largest divisor of 6 not above 4 = 3; hidden = round(0.4 * 6) = 2 -> ratio 2 / 6
    ("mhsa", 6, {"heads": 4, "mlp_ratio": 0.4}, {"heads": 3, "mlp_ratio": 2 / 6}),
    # gate: F_int = round(0.3 * 8) = 2 -> fraction 2 / 8
    ("gate", 8, {"inter_channels": 0.3}, {"inter_channels": 0.25}),
]


def _outputs(key: str, channels: int, params: dict[str, Any]) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    torch.manual_seed(0)
    if key == "gate":
        from attnsearch.attention.gate import AttentionGate

        module: nn.Module = AttentionGate(channels, channels, 1, **params)
    else:
        module = create_module(key, channels, **params)
    torch.manual_seed(1)
    x = torch.randn(2, channels, 4, 4)
    with torch.no_grad():
        out = module(x, x) if key == "gate" else module(x)
    return [tuple(p.shape) for p in module.parameters()], out


@pytest.mark.parametrize(("key", "channels", "picked", "canonical"), CASES)
def test_effective_params_build_the_same_module(
    key: str, channels: int, picked: dict[str, Any], canonical: dict[str, Any]
) -> None:
    used = effective_params(key, channels, picked)
    assert used == canonical
    assert effective_params(key, channels, used) == used  # canonical: a fixed point
    shapes, out = _outputs(key, channels, picked)
    shapes_used, out_used = _outputs(key, channels, used)
    assert shapes == shapes_used
    assert torch.equal(out, out_used)


def test_a_value_that_changes_the_module_stays_apart() -> None:
    # 64 // 16 = 4 and 64 // 8 = 8: two hidden widths, two modules
    assert effective_params("se", 64, {"reduction": 16}) != effective_params("se", 64, {"reduction": 8})
    assert _outputs("se", 64, {"reduction": 16})[0] != _outputs("se", 64, {"reduction": 8})[0]


def _space(**changes: Any) -> dict[str, Any]:
    data = {
        "name": "eff",
        "backbone": {"name": "vgg11_bn", "width": 0.125},
        "slots": {"block1": ["se"]},  # 8 channels at width 0.125
        "modules": {"se": {"reduction": [16, 64]}},
        "data": {"dataset": "shapes", "image_size": 32, "train_size": 64, "val_size": 32},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.05},
        "search": {"sampler": "grid", "pruner": "none"},
        "execution": {"threads": 1},
    }
    data.update(changes)
    return data


def test_validate_notes_the_collapse_and_counts_one_candidate(tmp_path: Path) -> None:
    space = parse_space(_space())
    assert space.size() == 2 and distinct_size(space) == 1  # the grid still has two points; one network
    path = tmp_path / "eff.yaml"
    path.write_text(yaml.safe_dump(_space()))
    done = CliRunner().invoke(main, ["validate", str(path)])
    assert done.exit_code == 0, done.output
    assert "1 distinct candidates" in done.output
    note = "note: se at block1 (8 channels): reduction 16 and 64 build the same module (reduction 8)"
    assert done.output.count(note) == 1
    as_json = CliRunner().invoke(main, ["validate", str(path), "--json"])
    assert json.loads(as_json.output)["size"] == 1


def test_values_that_stay_apart_get_no_note() -> None:
    space = parse_space(_space(slots={"block4": ["se"]}, modules={"se": {"reduction": [2, 4]}}))  # 64 channels
    assert distinct_size(space) == 2 and effective_notes(space) == []


def test_parameters_written_out_of_order_get_no_note() -> None:
    # the order a space file names parameters in says nothing: no "is recorded as" for a mere reordering
    modules = {"cbam": {"reduction": 8, "kernel_size": 3}, "gate": {"inter_channels": 0.5, "gating_slot": "block5"}}
    space = parse_space(_space(slots={"block3": ["cbam", "gate"]}, modules=modules))
    assert effective_notes(space) == []


def test_a_run_trains_two_names_for_one_network_once(tmp_path: Path) -> None:
    path = tmp_path / "eff.yaml"
    path.write_text(yaml.safe_dump(_space()))
    done = CliRunner().invoke(main, ["run", str(path), "--results", str(tmp_path / "r"), "--no-dashboard"])
    assert done.exit_code == 0, done.output
    trials = [json.loads(p.read_text()) for p in sorted((tmp_path / "r" / "eff" / "trials").glob("*/trial.json"))]
    assert len(trials) == 2
    assert [t["candidate"]["placements"][0]["params"] for t in trials] == [{"reduction": 8}] * 2
    assert trials[0].get("reused_from") is None and trials[1]["reused_from"] == 0
    assert trials[1]["metrics"] == trials[0]["metrics"]
    assert done.output.count(" started: ") == 1 and done.output.count(" reused: ") == 1
    assert "trial 1 runs block1=se reduction 8 (picked reduction 64)" in done.output


@pytest.fixture
def plugin_scale() -> Any:
    @register_module("eff_scale", paper="-", params={"factor": 2})
    class Scale(nn.Module):
        def __init__(self, channels: int, *, factor: int = 2) -> None:
            super().__init__()
            self.factor = factor

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.factor

    yield Scale
    unregister_module("eff_scale")


def test_a_plugin_without_effective_params_is_taken_as_written(plugin_scale: Any) -> None:
    assert effective_params("eff_scale", 8, {"factor": 3}) == {"factor": 3}
    space = parse_space(_space(slots={"block1": ["eff_scale"]}, modules={"eff_scale": {"factor": [2, 3]}}))
    assert distinct_size(space) == 2 and effective_notes(space) == []
    candidate = space.suggest(optuna.trial.FixedTrial({"block1.eff_scale.factor": 3}))
    assert canonical_candidate(candidate) == candidate and dict(candidate.placements[0].params) == {"factor": 3}


def test_a_value_changed_alone_gets_its_note() -> None:
    # block3 of vgg11_bn at width 0.125 has 32 channels: heads 3 is cut to the largest divisor of 32 not above 3
    space = parse_space(_space(slots={"block3": ["mhsa"]}, modules={"mhsa": {"heads": [3, 4]}}))
    assert distinct_size(space) == 2
    assert effective_notes(space) == [
        "note: mhsa at block3 (32 channels): heads 3 is recorded as heads 2 (the same module at this width)"
    ]

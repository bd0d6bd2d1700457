"""`attnsearch validate`: size, table and exact cost range of a space, without training."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

import attnsearch as a
from attnsearch.cli import main

SURVEY = {
    "slots": {"block3": ["none", "se", "cbam"], "block5": ["none", "self_attention"]},
    "modules": {"cbam": {"kernel_size": [3, 7]}},
}


def costs(placements: dict) -> dict:
    model = a.build_model("vgg11_bn", placements, num_classes=10, width=0.125, head="compact", image_size=32)
    return a.measure_costs(model, image_size=32)


def test_validate_reports_size_table_and_exact_ranges(tiny_space_file: Callable[..., Path]) -> None:
    result = CliRunner().invoke(main, ["validate", str(tiny_space_file(**SURVEY)), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["size"] == 4 * 2  # block3: none, se, cbam(3), cbam(7); block5: none, self_attention
    assert report["slots"] == {"block3": ["none", "se", "cbam"], "block5": ["none", "self_attention"]}
    smallest, largest = costs({}), costs({"block3": {"type": "cbam", "kernel_size": 7}, "block5": "self_attention"})
    assert report["params"] == [smallest["params"], largest["params"]]
    assert report["flops"] == [smallest["flops"], largest["flops"]]


def test_validate_lists_candidates_that_break_a_constraint(tiny_space_file: Callable[..., Path]) -> None:
    limit = costs({"block5": "self_attention"})["params"]  # anything with self_attention plus more breaks it
    space = tiny_space_file(**SURVEY, search={"constraints": {"max_params": limit}})
    result = CliRunner().invoke(main, ["validate", str(space)])
    assert result.exit_code == 0, result.output
    assert "tiny: valid. 8 distinct candidates on vgg11_bn." in result.output
    assert "constraints: 3 candidates break them" in result.output  # self_attention with se, cbam(3), cbam(7)
    assert "block3=cbam(kernel_size=7) block5=self_attention" in result.output


def test_validate_rejects_a_bad_space(tiny_space_file: Callable[..., Path]) -> None:
    result = CliRunner().invoke(main, ["validate", str(tiny_space_file(slots={"block9": ["se"]}))])
    assert result.exit_code == 2
    assert "slots.block9: unknown slot for vgg11_bn" in result.output

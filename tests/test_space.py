"""The space file: strict validation with YAML paths, safe loading, and the trial -> Candidate bridge."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from attnsearch.candidate import Candidate
from attnsearch.space import SpaceError, load_space, parse_space

MODULES = {"cbam": {"kernel_size": [3, 7]}, "se": {"reduction": 4}}  # a searched and a fixed module parameter


@pytest.fixture
def patched(tiny_space: Callable[..., dict]) -> Callable[..., dict]:
    """The tiny space with MODULES, then ``changes`` (tiny_space's rules: slots and modules are replaced)."""
    return lambda **changes: tiny_space(**{"modules": MODULES, **changes})


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"slots": {"block7": ["se"]}}, "slots.block7: unknown slot for vgg11_bn; valid: all, block1..block5, conv1_1"),
        ({"slots": {"block3": ["se", "sse"]}}, "slots.block3[1]: unknown attention module 'sse'; valid: none, se"),
        ({"slots": {"block3": []}}, "slots.block3: must not be empty"),
        ({"slots": {"block3": ["se", "se"]}}, "slots.block3: a module is listed twice"),
        ({"modules": {"cbam": {"kernel_size": [3, 5]}}}, "modules.cbam.kernel_size: kernel_size must be 3 or 7, got 5"),
        ({"modules": {"cbam": {"k": 3}}}, "modules.cbam.k: unknown parameter 'k'; valid: reduction, kernel_size"),
        ({"modules": {"cbm": {"k": 3}}}, "modules.cbm: unknown attention module; valid: se, eca"),
        ({"modules": {"se": {"reduction": "four"}}}, "modules.se.reduction: reduction must be int, got 'four'"),
        ({"train": {"epochs": -1}}, "train.epochs: must be greater than or equal to 1"),
        ({"train": {"epoch_val_size": 0}}, "train.epoch_val_size: must be greater than or equal to 1"),
        ({"train": {"epoch_val": "some"}}, "train.epoch_val: unknown epoch_val setting 'some'; valid: auto, all"),
        ({"train": {"epochs": "3"}}, "train.epochs: must be a valid integer, got '3'"),
        ({"train": {"lr": {"low": 1}}}, "train.lr.high: required key is missing"),
        ({"train": {"lr": {"low": 1, "high": 0.1}}}, "train.lr: low (1) must be below high (0.1)"),
        ({"train": {"lr": {"low": 0, "high": 1, "log": True}}}, "train.lr: a log range needs low > 0"),
        ({"train": {"lr": [0.1, "x"]}}, "train.lr[1]: must be a valid number, got 'x'"),
        ({"train": {"optimizer": "adam"}}, "train.optimizer: unknown optimizer 'adam'; valid: sgd, adamw"),
        ({"train": {"foo": 1}}, "train.foo: unknown key; valid: epochs, steps, batch_size"),
        ({"extra": 1}, "extra: unknown key; valid: name, backbone, slots"),
        (
            {"search": {"objectives": [{"metric": "val_acc", "direction": "up"}]}},
            "search.objectives[0].direction: unknown direction 'up'; valid: maximize, minimize",
        ),
        ({"search": {"objectives": [{"metric": "acc", "direction": "maximize"}]}}, "search.objectives[0].metric:"),
        (
            {
                "search": {
                    "objectives": [
                        {"metric": "val_acc", "direction": "maximize"},
                        {"metric": "params", "direction": "minimize"},
                    ],
                    "pruner": "median",
                }
            },
            "search.pruner: pruning needs a single objective",
        ),
        (
            {"search": {"sampler": "grid"}, "train": {"lr": {"low": 0.01, "high": 0.1}}},
            "search.sampler: grid needs discrete choices; train.lr is a range",
        ),
        ({"search": {"n_trials": 0}}, "search.n_trials: must be greater than or equal to 1"),
        ({"search": {"n_trials": True}}, "search.n_trials: must be a valid integer, got True"),
        (
            {"backbone": {"name": ["vgg11", "resnet101"]}},
            "backbone.name[1]: unknown backbone 'resnet101'; valid: vgg11",
        ),
        ({"backbone": {"width": 0}}, "backbone.width: must be greater than 0"),
        ({"data": {"image_size": 8}}, "data.image_size: vgg11_bn: image_size 8 is too small"),
        ({"data": {"dataset": "imagenet"}}, "data.dataset: unknown dataset 'imagenet'; valid: shapes, digits"),
        ({"execution": {"device": "gpu"}}, "execution.device: must be auto, cpu, cuda or cuda:N"),
        ({"name": "../escape"}, "name: must be a folder name"),
        ({"slots": None}, "slots: must be a valid dictionary"),
    ],
)
def test_errors_name_the_yaml_path(patched: Callable[..., dict], patch: dict, message: str) -> None:
    with pytest.raises(SpaceError) as caught:
        parse_space(patched(**patch), check_data=False)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_name_and_slots(patched: Callable[..., dict]) -> None:
    data = patched()
    del data["name"]
    with pytest.raises(SpaceError, match=r"^name: required key is missing$"):
        parse_space(data, check_data=False)
    with pytest.raises(SpaceError, match="top level"):
        parse_space(["not", "a", "mapping"])


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "space.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: a\nslots:\n\tblock1: [se]\n", r"line 3, column 1: a tab character: indent with spaces, not tabs$"),
        ("name: a\nname: b\n", r"line 2, column 1: duplicate key 'name'"),
        ("name: a\nslots: {block1: [se\n", r"line 3, column 1: expected ',' or ']'"),
        ("a: &x [1]\nb: *x\n", "aliases"),
        ("name: !!python/object/apply:os.system ['touch pwned']\n", "could not determine a constructor"),
        (b"name: a\xff\n", r"line 1: not UTF-8 text"),
    ],
)
def test_yaml_problems_are_one_line_with_the_place(tmp_path: Path, text: str | bytes, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        load_space(write(tmp_path, text))
    assert not (tmp_path / "pwned").exists()


def test_numbers_in_exponent_form_are_numbers(tmp_path: Path) -> None:
    text = "name: e\nslots: {block3: [none, se]}\nsearch: {constraints: {max_params: 5.0e6, max_flops: 1e9}}\n"
    text += "train: {lr: {low: 1e-3, high: 1.0e-1, log: true}}\n"
    space = load_space(write(tmp_path, text))
    assert space.config.search.constraints.max_params == 5e6 and space.config.search.constraints.max_flops == 1e9
    assert space.config.train.lr.low == 1e-3


def test_huge_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="at most 1,000,000"):
        load_space(write(tmp_path, "# x\n" * 400_000))


def test_all_expands_to_block_slots_and_named_slots_override(patched: Callable[..., dict]) -> None:
    data = patched(slots={"all": ["none", "se"], "block5": ["none", "eca"]})
    space = parse_space(data, check_data=False)
    assert space.slots["vgg11_bn"] == {
        "block1": ["none", "se"],
        "block2": ["none", "se"],
        "block3": ["none", "se"],
        "block4": ["none", "se"],
        "block5": ["none", "eca"],
    }
    assert space.size() == 2**5


def test_size_grid_and_ablation(patched: Callable[..., dict]) -> None:
    space = parse_space(patched(), check_data=False)
    # block3: none, se, cbam(k=3), cbam(k=7); block5: none, eca
    assert space.size() == 8
    grid = space.grid()
    assert len(grid) == 8 and len({tuple(sorted(g.items())) for g in grid}) == 8
    design = space.ablation()
    assert design[0] == {"block3": "none", "block5": "none"}
    singles = design[1:]
    assert len(singles) == 4  # se@block3, cbam(3)@block3, cbam(7)@block3, eca@block5
    for params in singles:
        placed = [slot for slot in ("block3", "block5") if params[slot] != "none"]
        assert len(placed) == 1


def test_suggest_makes_a_candidate_from_a_trial(patched: Callable[..., dict]) -> None:
    space = parse_space(patched(train={"lr": {"low": 0.01, "high": 0.1, "log": True}}), check_data=False)
    trial = optuna.trial.FixedTrial({"block3": "cbam", "block3.cbam.kernel_size": 7, "block5": "none", "lr": 0.03})
    candidate = space.suggest(trial)
    assert candidate.describe() == "block3=cbam(kernel_size=7)"
    assert candidate.train.lr == 0.03 and candidate.backbone.width == 0.125
    assert candidate.data.train_size == 128
    se = space.suggest(optuna.trial.FixedTrial({"block3": "se", "block5": "eca", "lr": 0.05}))
    assert se.describe() == "block3=se(reduction=4) block5=eca"  # a scalar module parameter is fixed, not searched
    assert Candidate.from_dict(se.to_dict()) == se
    assert se.key() != candidate.key()
    assert candidate.train.epoch_val_size is None  # every validation image after every epoch, unless asked
    subset = parse_space(patched(train={"epoch_val_size": 16}), check_data=False)
    assert subset.suggest(optuna.trial.FixedTrial({"block3": "se", "block5": "eca"})).train.epoch_val_size == 16


@pytest.mark.parametrize(
    ("train", "search", "first"),
    [
        ({"epochs": 4}, {"pruner": "median"}, 3),  # the median pruner judges from 3/4 of the epochs on
        ({"epochs": 9}, {"pruner": "median"}, 6),
        ({"epochs": 2}, {"pruner": "median"}, 1),
        ({"epochs": 1}, {"pruner": "median"}, 1),
        ({"epochs": 4, "epoch_val": "all"}, {"pruner": "median"}, 1),
        ({"epochs": 4}, {"pruner": "hyperband"}, 1),  # its first rung is epoch 1
        ({"epochs": 4}, {"pruner": "none"}, 4),  # nothing looks before the score
    ],
)
def test_first_val_epoch_is_the_first_the_pruner_can_act_on(
    patched: Callable[..., dict], train: dict, search: dict, first: int
) -> None:
    from attnsearch.search.runner import make_pruner

    space = parse_space(patched(train=train, search=search), check_data=False)
    assert space.first_val_epoch == first
    # how trials are judged is not part of what they train: the candidate is the same under every pruner
    candidate = space.suggest(optuna.trial.FixedTrial({"block3": "se", "block5": "eca"}))
    other = parse_space(patched(train={**train, "epoch_val": "all"}, search={"pruner": "none"}), check_data=False)
    assert other.suggest(optuna.trial.FixedTrial({"block3": "se", "block5": "eca"})).key() == candidate.key()
    pruner = make_pruner(space)
    if search["pruner"] == "median" and train.get("epoch_val") != "all":
        # the pruner itself: no verdict at the epoch before, a verdict possible from first on
        study = optuna.create_study(direction="maximize", pruner=pruner)
        for value in (0.9, 0.8, 0.85):
            done = study.ask()
            for epoch in range(1, train["epochs"] + 1):
                done.report(value, epoch)
            study.tell(done, value)
        poor = study.ask()
        for epoch in range(1, first):
            poor.report(0.1, epoch)
            assert not poor.should_prune()
        poor.report(0.1, first)
        assert poor.should_prune() == (first < train["epochs"] or train["epochs"] == 1)


def test_example_spaces_are_valid() -> None:
    from attnsearch.yamlfile import read_yaml

    files = sorted(Path("search_spaces").rglob("*.yaml"))
    assert len(files) >= 9
    for path in files:
        parse_space(read_yaml(path), check_data=False)  # their datasets live on other machines


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (("train", "epochs"), "3", 'candidate.train.epochs: must be a valid integer, got "3"'),
        (("train", "lr"), True, "candidate.train.lr: must be a valid number, got true"),
        (("train", "augment"), "crop", 'candidate.train.augment: must be a valid array, got "crop"'),
        (("train", "epochs"), 0, "candidate.train.epochs: must be greater than or equal to 1"),
        (("train", "optimizer"), "adam", 'candidate.train.optimizer: unknown optimizer "adam"; valid: sgd, adamw'),
        (("train", "first_val_epochs"), 2, "candidate.train.first_val_epochs: unknown key"),
        (("data", "val_size"), 1.5, "candidate.data.val_size: must be a valid integer, got 1.5"),
        (("backbone",), [], "candidate.backbone: must be an object"),
        (("seed",), "0", 'candidate.seed: must be a valid integer, got "0"'),
    ],
)
def test_candidate_from_dict_names_a_wrong_key_or_value(where: tuple, value: object, message: str) -> None:
    d = json.loads(json.dumps(Candidate().to_dict()))
    assert Candidate.from_dict(d) == Candidate()
    *parents, key = where
    target = d
    for name in parents:
        target = target[name]
    target[key] = value
    with pytest.raises(ValueError) as caught:
        Candidate.from_dict(d)
    assert str(caught.value) == message

"""The kornia augmentations (resized crop, colour jitter, MixUp, CutMix): per-image draws, the papers' mixing checked
by hand, seeding, their parameters in a recipe, and a tiny training with all of them."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from attnsearch.augment_params import params_pairs
from attnsearch.candidate import Candidate, DataSpec, TrainRecipe
from attnsearch.data import load_dataset
from attnsearch.data.augment import BatchAugment, mixed_cross_entropy, seeded
from attnsearch.data.loader import Batches
from attnsearch.errors import AttnsearchError
from attnsearch.model import build_model
from attnsearch.space import SpaceError, parse_space
from attnsearch.train import train_model
from tests.tiny import space

ALL = ("crop", "flip", "resized_crop", "color_jitter", "mixup", "cutmix")


def images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def raw(x: torch.Tensor, augment: tuple[str, ...], seed: int = 0, **kwargs: object) -> Batches:
    """Batches in pixel units (mean 0, std 1), labels = sample index, one batch an epoch, not shuffled."""
    generator = torch.Generator().manual_seed(seed)
    return Batches(
        x,
        torch.arange(len(x)),
        len(x),
        mean=torch.zeros(3),
        std=torch.ones(3),
        augment=augment,
        generator=generator,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("augment", [("resized_crop",), ("color_jitter",)])
def test_each_image_draws_its_own(augment: tuple[str, ...]) -> None:
    x = images(1).expand(8, 3, 16, 16).contiguous()  # eight copies of one image
    out, labels = next(iter(raw(x, augment)))
    assert out.shape == (8, 3, 16, 16) and out.dtype == torch.float32 and out.device == x.device
    assert torch.equal(labels, torch.arange(8))
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) == 8  # no two copies came out alike
    assert not any(torch.allclose(o, x[0].float()) for o in out)


def test_color_jitter_acts_on_pixels_before_normalisation() -> None:
    white = torch.full((64, 3, 8, 8), 255, dtype=torch.uint8)
    params = params_pairs({"color_jitter": {"brightness": 0.4, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}})
    out, _ = next(iter(raw(white, ("color_jitter",), augment_params=params)))
    # brightness multiplies by a factor in [0.6, 1.4] and clamps at white: never above 255, darker for about half
    assert out.max() <= 255 + 1e-3 and out.min() >= 0.6 * 255 - 1e-3
    darker = (out.amax(dim=(1, 2, 3)) < 254).float().mean().item()
    assert 0.25 < darker < 0.75


def test_resized_crop_is_a_crop_of_the_image() -> None:
    # a horizontal ramp: a crop resized back keeps a ramp, rising left to right, inside the original's range
    ramp = torch.arange(32, dtype=torch.float32).mul(8).to(torch.uint8).view(1, 1, 1, 32).expand(16, 3, 32, 32)
    params = params_pairs({"resized_crop": {"scale": [0.25, 0.5], "ratio": [1.0, 1.0]}})
    out, _ = next(iter(raw(ramp.contiguous(), ("resized_crop",), augment_params=params)))
    rows = out[:, 0, 16]  # (B, W)
    assert (rows[:, 1:] >= rows[:, :-1] - 1e-3).all()
    span = rows[:, -1] - rows[:, 0]  # a window of 50% to 71% of the width, resized to the full width
    assert (span < 0.75 * 248).all() and (span > 0.4 * 248).all()


def test_mixup_images_and_label_weights_match_the_paper() -> None:
    x = torch.rand(512, 3, 4, 4)
    labels = torch.arange(512)
    aug = BatchAugment(("mixup",), params_pairs({"mixup": {"alpha": 0.2}}), size=(4, 4))
    with seeded(0):
        mixed, target = aug.mix(x, labels)
    assert target.shape == (512, 3) and target.dtype == torch.float32
    a, b, w = target[:, 0].long(), target[:, 1].long(), target[:, 2]
    assert torch.equal(a, labels) and sorted(b.tolist()) == list(range(512))  # partners: a permutation
    torch.testing.assert_close(mixed, w.view(-1, 1, 1, 1) * x[a] + (1 - w.view(-1, 1, 1, 1)) * x[b])
    # lambda ~ Beta(0.2, 0.2): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 0.1786 (the uniform's would be 0.0833)
    assert abs(w.mean().item() - 0.5) < 0.06
    assert abs(w.var().item() - 1 / (4 * 1.4)) < 0.03


def test_cutmix_weight_is_the_area_left_uncut() -> None:
    n, size = 64, 16
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).contiguous()  # image i = i
    aug = BatchAugment(("cutmix",), (), size=(size, size))
    with seeded(1):
        mixed, target = aug.mix(x, torch.arange(n))
    a, b, w = target[:, 0].long(), target[:, 1].long(), target[:, 2]
    for i in range(n):
        pasted = mixed[i, 0] != a[i]
        if b[i] == a[i]:
            continue  # paired with itself: nothing visible to count
        assert torch.equal(mixed[i, 0][pasted], torch.full_like(mixed[i, 0][pasted], float(b[i])))
        rows, cols = pasted.any(dim=1).sum().item(), pasted.any(dim=0).sum().item()
        assert pasted.sum().item() == rows * cols  # one rectangle
        assert math.isclose(w[i].item(), 1 - pasted.sum().item() / size**2, abs_tol=1e-6)
    assert len(set(w.tolist())) > 10  # boxes of many sizes


def test_mixup_or_cutmix_half_the_batches_each() -> None:
    x = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 8, 8).contiguous()
    aug = BatchAugment(("mixup", "cutmix"), (), size=(8, 8))
    kinds = []
    for seed in range(60):
        with seeded(seed):
            mixed, _ = aug.mix(x, torch.arange(8))
        kinds.append(bool(torch.equal(mixed, mixed.round())))  # cutmix copies pixels; mixup blends them
    assert 15 < sum(kinds) < 45


def test_mixed_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    target = torch.tensor([[0.0, 1.0, 0.3], [2.0, 2.0, 0.9]])
    eps, k = 0.1, 3

    def smoothed(row: torch.Tensor, label: int) -> float:  # -(1 - eps) log p_y - eps / K sum_k log p_k
        logp = [v - math.log(sum(math.exp(u) for u in row.tolist())) for v in row.tolist()]
        return -(1 - eps) * logp[label] - eps / k * sum(logp)

    expected = (0.3 * smoothed(logits[0], 0) + 0.7 * smoothed(logits[0], 1) + smoothed(logits[1], 2)) / 2
    assert math.isclose(mixed_cross_entropy(logits, target, label_smoothing=eps).item(), expected, rel_tol=1e-6)
    plain = mixed_cross_entropy(logits, torch.tensor([0, 2]), label_smoothing=eps)
    assert math.isclose(plain.item(), (smoothed(logits[0], 0) + smoothed(logits[1], 2)) / 2, rel_tol=1e-6)


def test_seeded_batches_and_the_global_generator_untouched() -> None:
    x = images(24)

    def epochs(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        batches = Batches(
            x,
            torch.arange(24),
            8,
            mean=torch.zeros(3),
            std=torch.ones(3),
            augment=ALL,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        return [b for _ in range(2) for b in batches]

    torch.manual_seed(5)
    a = epochs(1)
    after = torch.rand(4)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(4), after)  # the model's random numbers (dropout) are not disturbed
    b, c = epochs(1), epochs(2)
    assert all(torch.equal(u[0], v[0]) and torch.equal(u[1], v[1]) for u, v in zip(a, b, strict=True))
    assert not any(torch.equal(u[0], v[0]) for u, v in zip(a, c, strict=True))
    assert all(t.shape == (8, 3) and t.dtype == torch.float32 for _, t in a)


def test_without_new_augments_the_batches_are_as_before() -> None:
    x = images(24)
    old = [b for b in raw(x, ("crop", "flip"), seed=3)]
    again = [b for b in raw(x, ("crop", "flip"), seed=3, augment_params=())]
    assert all(torch.equal(u[0], v[0]) for u, v in zip(old, again, strict=True))
    # what crop and flip drew before the new augmentations existed (no shuffle: no permutation drawn)
    generator = torch.Generator().manual_seed(3)
    offsets = torch.randint(0, 9, (24, 2), generator=generator)
    flips = torch.randint(0, 2, (24,), generator=generator).bool()
    padded = F.pad(x.float(), (4, 4, 4, 4), mode="reflect")
    for i in range(24):
        dy, dx = offsets[i].tolist()
        window = padded[i, :, dy : dy + 16, dx : dx + 16]
        assert torch.equal(old[0][0][i], window.flip(-1) if flips[i] else window)


def test_bad_parameters_are_one_line() -> None:
    with pytest.raises(AttnsearchError, match=r"augment_params: mixup\.alpha: must be greater than 0"):
        raw(images(4), ("mixup",), augment_params=params_pairs({"mixup": {"alpha": 0}}))
    with pytest.raises(AttnsearchError, match=r"cutmix: parameters of an augmentation that train\.augment does not"):
        raw(images(4), ("mixup",), augment_params=params_pairs({"cutmix": {"alpha": 1}}))
    with pytest.raises(AttnsearchError, match=r"color_jitter needs RGB images \(3 channels\), got 1"):
        Batches(images(4)[:, :1], torch.arange(4), 2, mean=torch.zeros(1), std=torch.ones(1), augment=("color_jitter",))
    cases = [
        ({"mixup": {"alpha": -1}}, "train.augment_params: mixup.alpha: must be greater than 0, got -1.0"),
        ({"blur": {}}, "train.augment_params: unknown augmentation 'blur'; valid: resized_crop, color_jitter, mixup"),
        ({"mixup": {"beta": 1}}, "train.augment_params: mixup.beta: unknown key; valid: alpha"),
        ({"resized_crop": {"scale": [0.5, 1.5]}}, "resized_crop.scale: must satisfy 0 < low <= high <= 1, got [0.5"),
        ({"color_jitter": {"hue": 0.7}}, "train.augment_params: color_jitter.hue: must be between 0 and 0.5"),
        ({"cutmix": {"alpha": 1}}, "train: augment_params.cutmix: parameters of an augmentation that train.augment"),
        ([1], "train.augment_params: must be a mapping {augmentation: {key: value}}, got [1]"),
    ]
    for params, message in cases:
        data = space(train={"augment": ["resized_crop", "color_jitter", "mixup"], "augment_params": params})
        with pytest.raises(SpaceError) as info:
            parse_space(data, check_data=False)
        assert message in str(info.value) and "\n" not in str(info.value)


def test_params_round_trip_and_old_keys_unchanged() -> None:
    data = space(
        train={
            "augment": list(ALL),
            "augment_params": {"resized_crop": {"scale": [0.6, 1]}, "mixup": {"alpha": 0.4}},
            "schedule": "step",
            "step_size": 2,
            "gamma": 0.5,
        }
    )
    recipe = parse_space(data, check_data=False).config.train
    assert recipe.augment_params == (("mixup", (("alpha", 0.4),)), ("resized_crop", (("scale", (0.6, 1.0)),)))
    candidate = Candidate(train=TrainRecipe(augment=ALL, augment_params=recipe.augment_params, step_size=2))
    written = json.loads(json.dumps(candidate.to_dict()))
    assert written["train"]["augment_params"] == {"mixup": {"alpha": 0.4}, "resized_crop": {"scale": [0.6, 1.0]}}
    assert Candidate.from_dict(written) == candidate and hash(candidate) == hash(Candidate.from_dict(written))
    plain = Candidate().to_dict()["train"]
    assert not {"augment_params", "step_size", "gamma"} & plain.keys()  # left out at their defaults: keys kept


def test_tiny_training_with_every_augmentation_is_finite_and_replays() -> None:
    dataset = load_dataset(DataSpec(dataset="shapes", image_size=32, train_size=64, val_size=32))
    recipe = TrainRecipe(
        epochs=1,
        batch_size=32,
        schedule="step",
        step_size=1,
        gamma=0.5,
        augment=ALL,
        augment_params=params_pairs({"resized_crop": {"scale": [0.6, 1.0]}}),
    )

    def weights(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_model("vgg11_bn", {}, num_classes=dataset.num_classes, width=0.125, head="compact", image_size=32)
        result = train_model(model, dataset, recipe, seed=seed, threads=1)
        assert result.state == "complete" and math.isfinite(result.train_loss or math.nan)
        return model.state_dict()

    a, b, c = weights(1), weights(1), weights(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_the_bench_recipe_is_the_seed_space_recipe() -> None:
    from attnsearch.bench.trainer_recipe import RECIPE_AUGMENT, RECIPE_PARAMS
    from attnsearch.yamlfile import read_yaml

    data = read_yaml("search_spaces/seeds/vgg16_linear_attention.yaml")
    train = parse_space(data, check_data=False).config.train  # CIFAR-10 lives on other machines
    assert (tuple(train.augment), train.augment_params) == (RECIPE_AUGMENT, RECIPE_PARAMS)
    assert (train.schedule, train.step_size, train.gamma) == ("step", 10, 0.1)

"""The seed recipe's kornia augmentation on a GPU: the same draws as on the CPU, seeded, the CUDA generator untouched,
and a trial with every augmentation. Skipped without a CUDA GPU; ``ATTNSEARCH_TEST_DEVICE=cpu`` runs the same logic
on the CPU (a check of the test itself)."""

from __future__ import annotations

import math
import os

import pytest
import torch

from attnsearch.augment_params import params_pairs
from attnsearch.candidate import DataSpec, TrainRecipe
from attnsearch.data import load_dataset
from attnsearch.data.loader import Batches
from attnsearch.model import build_model
from attnsearch.train import train_model

DEVICE = os.environ.get("ATTNSEARCH_TEST_DEVICE", "cuda")
ON_CUDA = torch.device(DEVICE).type == "cuda"
ALL = ("crop", "flip", "resized_crop", "color_jitter", "mixup", "cutmix")
PARAMS = params_pairs({"resized_crop": {"scale": [0.6, 1.0]}})

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def epoch(device: str, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x = torch.randint(0, 256, (96, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    batches = Batches(
        x.to(device),
        torch.arange(96).to(device),
        32,
        mean=torch.zeros(3),
        std=torch.ones(3),
        augment=ALL,
        augment_params=PARAMS,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    return [(xb.cpu(), yb.cpu()) for xb, yb in batches]


def test_the_device_draws_what_the_cpu_draws_and_leaves_its_generator_alone() -> None:
    cuda_state = torch.cuda.get_rng_state(DEVICE) if ON_CUDA else None
    on_device, again, cpu = epoch(DEVICE, 1), epoch(DEVICE, 1), epoch("cpu", 1)
    if cuda_state is not None:
        assert torch.equal(torch.cuda.get_rng_state(DEVICE), cuda_state)  # dropout's stream untouched
    for (a, ta), (b, tb), (c, tc) in zip(on_device, again, cpu, strict=True):
        assert ta.shape == (32, 3) and torch.equal(ta, tb) and torch.equal(a, b)  # seeded on the device
        assert torch.equal(ta[:, :2], tc[:, :2])  # the same pairs and labels as on the CPU
        torch.testing.assert_close(ta[:, 2], tc[:, 2], rtol=0, atol=1e-6)  # the same weights
        assert (a - c).abs().mean() < 0.5  # the same pixels, up to the kernels' last bits (units: 0..255)


def test_a_trial_with_every_augmentation_on_the_device() -> None:
    dataset = load_dataset(DataSpec(dataset="shapes", image_size=32, train_size=128, val_size=64))
    recipe = TrainRecipe(epochs=2, batch_size=32, schedule="step", step_size=1, augment=ALL, augment_params=PARAMS)
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("vgg11_bn", {}, num_classes=dataset.num_classes, width=0.25, head="compact", image_size=32)
        result = train_model(model, dataset, recipe, device=DEVICE, seed=3)
        assert result.state == "complete" and math.isfinite(result.train_loss or math.nan)
        assert [h["lr"] for h in result.history] == [pytest.approx(0.05), pytest.approx(0.005)]
        losses.append(result.train_loss)
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)  # CUDA's backward may differ in the last bits

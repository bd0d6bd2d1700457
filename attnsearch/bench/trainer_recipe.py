"""The seed recipe's augmentation for ``attnsearch bench trainer``, written as kornia's documentation shows it.

A ``DataLoader`` gives batches of ``ToTensor`` images in [0, 1]; on the training device one
``AugmentationSequential`` (horizontal flip, random resized crop, colour jitter, normalisation) augments the batch,
then ``RandomMixUpV2`` or ``RandomCutMixV2`` (one of the two per batch, each with probability 1/2) mixes it, and
the loss is the one kornia's docstrings give for each. The parameters are the seed space's
(``search_spaces/seeds/vgg16_linear_attention.yaml``). One difference from ``train_model``: kornia's MixUp draws its
lambda uniformly where ours draws Beta(alpha, alpha); the cost is the same.
"""

from __future__ import annotations

import random
import time

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn

from ..augment_params import augment_params, params_pairs
from ..candidate import TrainRecipe

__all__ = ["RECIPE_AUGMENT", "RECIPE_PARAMS", "KorniaLoop"]

RECIPE_AUGMENT = ("resized_crop", "flip", "color_jitter", "mixup", "cutmix")
RECIPE_PARAMS = params_pairs(
    {
        "resized_crop": {"scale": [0.6, 1.0], "ratio": [0.75, 1.3333]},
        "color_jitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05},
        "mixup": {"alpha": 0.2},
        "cutmix": {"alpha": 1.0},
    }
)


class KorniaLoop:
    """A training loop over a DataLoader of [0, 1] tensors with kornia augmenting each batch on the device."""

    def __init__(
        self, recipe: TrainRecipe, bf16: bool, device: torch.device, mean: torch.Tensor, std: torch.Tensor, size: int
    ) -> None:
        self.recipe, self.bf16, self.device = recipe, bf16, device
        crop, jitter = augment_params(RECIPE_PARAMS, "resized_crop"), augment_params(RECIPE_PARAMS, "color_jitter")
        self.augment = K.AugmentationSequential(
            K.RandomHorizontalFlip(),
            K.RandomResizedCrop((size, size), scale=crop["scale"], ratio=crop["ratio"]),
            K.ColorJitter(**jitter, p=1.0),
            K.Normalize(mean=mean.cpu() / 255, std=std.cpu() / 255),
        ).to(device)
        self.mixup = K.RandomMixUpV2(data_keys=["input", "class"])
        cutmix_alpha = augment_params(RECIPE_PARAMS, "cutmix")["alpha"]
        self.cutmix = K.RandomCutMixV2(beta=cutmix_alpha, use_correct_lambda=True, data_keys=["input", "class"])

    def run(self, model: nn.Module, loader: torch.utils.data.DataLoader, steps: int) -> float:
        r = self.recipe
        model.to(self.device, memory_format=torch.channels_last).train()
        optimizer = torch.optim.SGD(
            model.parameters(), lr=r.lr, momentum=0.9, nesterov=True, weight_decay=r.weight_decay
        )
        started = time.perf_counter()
        done = 0
        for x, y in loader:
            x = self.augment(x.to(self.device, non_blocking=True))
            y = y.to(self.device, non_blocking=True)
            if random.random() < 0.5:
                x, target = self.mixup(x, y)  # (B, 3): label, partner's label, partner's weight
                own, other, weight = target[:, 0], target[:, 1], 1 - target[:, 2]
            else:
                x, target = self.cutmix(x, y)  # (1, B, 3): label, partner's label, own weight
                own, other, weight = target[0, :, 0], target[0, :, 1], target[0, :, 2]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = model(x.contiguous(memory_format=torch.channels_last)).float()
            smoothing = r.label_smoothing
            loss_a = F.cross_entropy(logits, own.long(), label_smoothing=smoothing, reduction="none")
            loss_b = F.cross_entropy(logits, other.long(), label_smoothing=smoothing, reduction="none")
            loss = (weight * loss_a + (1 - weight) * loss_b).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if done != steps:
            raise RuntimeError(f"the DataLoader gave {done} batches, not {steps}")
        return time.perf_counter() - started

"""Batched, per-image augmentation on the training device through kornia: resized crop, colour jitter, MixUp, CutMix.

Each image of a batch draws its own parameters (kornia's ``same_on_batch=False``); the ops run on the batch's
device. :class:`~attnsearch.data.loader.Batches` applies them after its own crop and flip, in this order:

1. ``resized_crop`` (kornia ``RandomResizedCrop``, bilinear, back to the input size) and ``color_jitter`` (kornia
   ``ColorJitter``, torchvision's definition) on images scaled to [0, 1]: colour jitter is defined on such images
   (brightness clamps at 1, hue turns in HSV), not on normalised ones, so it comes before normalisation;
2. normalisation;
3. ``mixup`` (kornia ``RandomMixUpV2``, with lambda ~ Beta(alpha, alpha) per image as Zhang et al., ICLR 2018,
   arXiv 1710.09412, draw it; kornia's own draw is uniform) or ``cutmix`` (kornia ``RandomCutMixV2``, Yun et al.,
   ICCV 2019, arXiv 1905.04899: a box whose target area fraction is 1 - lambda, lambda ~ Beta(alpha, alpha), kept
   inside the image; the label weight is taken from the box actually cut). Mixing is a convex combination of
   pixels, so mixing normalised images equals normalising mixed ones. With both listed, each batch takes one of
   the two with probability 1/2 (as timm's ``Mixup`` with ``switch_prob=0.5`` and torchvision's ``RandomChoice``
   of the two do).

Mixed batches carry targets (B, 3): the image's own label, its partner's, and the weight of its own
(:func:`mixed_cross_entropy` is the loss). Parameters come from ``train.augment_params``
(:mod:`attnsearch.augment_params`).

Seeding: kornia draws from torch's global CPU generator. Each batch runs under :func:`seeded`, which forks that
generator (``torch.random.fork_rng``) and seeds it with a number drawn for the batch from the trial's generator,
so a trial seed gives the same augmented batches on every run and the model's own random numbers (dropout) are not
disturbed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import kornia.augmentation as K
import torch
import torch.nn.functional as F

from ..augment_params import Pairs, augment_params, check_augment_params

__all__ = ["IMAGE_AUGMENTS", "KORNIA_AUGMENTS", "MIX_AUGMENTS", "BatchAugment", "mixed_cross_entropy", "seeded"]

IMAGE_AUGMENTS = ("resized_crop", "color_jitter")  # on [0, 1] images, before normalisation
MIX_AUGMENTS = ("mixup", "cutmix")  # on normalised images, mixing labels too
KORNIA_AUGMENTS = IMAGE_AUGMENTS + MIX_AUGMENTS


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's global CPU generator seeded with ``seed`` inside, and restored to its state before on leaving.

    Example:
        >>> with seeded(3):
        ...     a = torch.rand(2)
        >>> with seeded(3):
        ...     b = torch.rand(2)
        >>> torch.equal(a, b)
        True
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


class BatchAugment:
    """The kornia augmentations of a recipe, for batches of images of ``size`` (H, W).

    ``augment`` may list any augmentation of the recipe: those not in :data:`KORNIA_AUGMENTS` (crop, flip) are
    left to the caller. ``params`` are the recipe's ``augment_params`` pairs. A ValueError for invalid parameters.

    Example:
        >>> aug = BatchAugment(("flip", "resized_crop", "mixup"), (("mixup", (("alpha", 0.4),)),), size=(16, 16))
        >>> with seeded(0):
        ...     x = aug.images(torch.rand(4, 3, 16, 16))
        ...     x, target = aug.mix(x, torch.tensor([0, 1, 2, 3]))
        >>> tuple(x.shape), tuple(target.shape)
        ((4, 3, 16, 16), (4, 3))
    """

    def __init__(self, augment: tuple[str, ...], params: Pairs = (), *, size: tuple[int, int]) -> None:
        check_augment_params(params, augment)
        ops: list[K.AugmentationBase2D] = []
        if "resized_crop" in augment:
            p = augment_params(params, "resized_crop")
            ops.append(K.RandomResizedCrop(size, scale=tuple(p["scale"]), ratio=tuple(p["ratio"])))
        if "color_jitter" in augment:
            ops.append(K.ColorJitter(**augment_params(params, "color_jitter"), p=1.0))
        self._images = K.AugmentationSequential(*ops) if ops else None
        self._mixup = self._cutmix = None
        if "mixup" in augment:
            self._mixup = K.RandomMixUpV2(data_keys=["input", "class"])
            self.mixup_alpha = float(augment_params(params, "mixup")["alpha"])
        if "cutmix" in augment:
            alpha = float(augment_params(params, "cutmix")["alpha"])
            self._cutmix = K.RandomCutMixV2(
                num_mix=1, beta=alpha, use_correct_lambda=True, data_keys=["input", "class"]
            )

    @property
    def active(self) -> bool:
        """Whether any augmentation is kornia's to apply."""
        return self._images is not None or self.mixes

    @property
    def mixes(self) -> bool:
        """Whether batches are mixed (their targets are (B, 3))."""
        return self._mixup is not None or self._cutmix is not None

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """Resized crop and colour jitter of float images (B, C, H, W) in [0, 1]; same shape, dtype and device."""
        return x if self._images is None else self._images(x)

    def mix(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MixUp or CutMix of images (B, C, H, W) with labels (B,): the mixed images and float targets (B, 3)
        holding each image's label, its partner's and the weight of its own (see :func:`mixed_cross_entropy`).
        Images and labels pass unchanged when no mixing is listed."""
        use_mixup = self._mixup is not None
        if self._mixup is not None and self._cutmix is not None:
            use_mixup = bool(torch.rand(()) < 0.5)
        if use_mixup:
            assert self._mixup is not None
            params = self._mixup.forward_parameters(x.shape)
            beta = torch.distributions.Beta(torch.tensor(self.mixup_alpha), torch.tensor(self.mixup_alpha))
            params["mixup_lambdas"] = beta.sample((x.shape[0],))  # the paper's Beta(alpha, alpha), per image
            x, target = self._mixup(x, labels, params=params)  # target (B, 3): lambda weighs the partner
            return x, torch.stack([target[:, 0], target[:, 1], 1 - target[:, 2]], dim=1)
        if self._cutmix is not None:
            x, target = self._cutmix(x, labels)  # target (1, B, 3): lambda = 1 - cut area, the own label's weight
            return x, target[0]
        return x, labels


def mixed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of logits (B, classes) against labels (B,), or against mixed targets (B, 3) (label a, label b,
    weight w of a): the mean over the batch of ``w * CE(a) + (1 - w) * CE(b)``, each with ``label_smoothing``
    (the MixUp and CutMix papers' loss).

    Example:
        >>> logits = torch.tensor([[2.0, 0.0]])
        >>> plain = F.cross_entropy(logits, torch.tensor([0]))
        >>> torch.equal(mixed_cross_entropy(logits, torch.tensor([[0.0, 1.0, 1.0]])), plain)
        True
    """
    if target.ndim == 1:
        return F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    own = F.cross_entropy(logits, target[:, 0].long(), label_smoothing=label_smoothing, reduction="none")
    other = F.cross_entropy(logits, target[:, 1].long(), label_smoothing=label_smoothing, reduction="none")
    weight = target[:, 2]
    return (weight * own + (1 - weight) * other).mean()

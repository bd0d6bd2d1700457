"""The in-memory dataset every trial trains on: uint8 images and int64 labels, ready to move to a device."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

__all__ = ["Dataset"]


@dataclass(frozen=True)
class Dataset:
    """Train and validation splits as tensors, and the test split when asked for; images are uint8
    (N, 3, H, W), labels int64 (N,).

    Trials train on ``train_x`` and are scored on ``val_x``. ``test_x`` / ``test_y`` are None unless
    :func:`~attnsearch.data.load_dataset` was called with ``test=True``: the test split is for a final,
    separately labelled score and never reaches a trial.

    ``split`` says how the splits were made, in JSON values (each trial record carries it):

    - ``validation``: ``"held out from train"`` (a stratified part of the training images: every dataset with
      published or folder splits), ``"generated"`` (``shapes``) or ``"val_root"`` (an image folder's own);
    - ``val_fraction`` (float) and ``split_seed`` (int, derived from ``data.seed``): only when held out;
    - ``train_images``, ``val_images`` (int): the sizes of the two splits, after ``train_size`` / ``val_size``;
    - ``test_images`` (int): the size of the test split, present only for a dataset that has one, whether or not
      it was loaded.

    Example:
        >>> ds = Dataset("toy", torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]),
        ...              torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]), ("a", "b"))
        >>> ds.num_classes, ds.image_size
        (2, 8)
    """

    name: str
    train_x: torch.Tensor  # uint8 (N, 3, H, W)
    train_y: torch.Tensor  # int64 (N,)
    val_x: torch.Tensor  # uint8 (M, 3, H, W)
    val_y: torch.Tensor  # int64 (M,)
    classes: tuple[str, ...]
    test_x: torch.Tensor | None = None  # uint8 (K, 3, H, W), only when asked for
    test_y: torch.Tensor | None = None  # int64 (K,)
    split: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def to(self, device: torch.device | str) -> Dataset:
        """The same data on ``device`` (kept as uint8: a quarter of the memory of float32), test split included."""
        return replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            val_x=self.val_x.to(device),
            val_y=self.val_y.to(device),
            test_x=None if self.test_x is None else self.test_x.to(device),
            test_y=None if self.test_y is None else self.test_y.to(device),
        )

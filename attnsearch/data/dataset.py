"""The in-memory dataset every trial trains on: uint8 images and int64 labels, ready to move to a device."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

__all__ = ["Dataset"]


@dataclass(frozen=True)
class Dataset:
    """Train and validation splits as tensors; images are uint8 (N, 3, H, W), labels int64 (N,).

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

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    def to(self, device: torch.device | str) -> Dataset:
        """The same data on ``device`` (kept as uint8: a quarter of the memory of float32)."""
        return replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            val_x=self.val_x.to(device),
            val_y=self.val_y.to(device),
        )

"""``cnn3``: the small network of the CBAM blog post, three stages of a strided 3x3 conv, batch norm and ReLU
(64-128-256 channels), a global average pool and one linear layer; CBAM (Woo et al., arXiv 1807.06521) goes after
each stage there.

Submodule names: ``features.stage1`` .. ``features.stage3``, each an ``nn.Sequential`` of ``conv`` (3x3, stride 2,
padding 1, no bias: the batch norm has one), ``bn`` and ``relu``; then ``avgpool`` and ``classifier``. Each stage
halves the map (rounding up), so any input from 8x8 up works: MNIST's 28x28 gives 14, 7 and 4, CIFAR's 32x32 gives
16, 8 and 4. Slots ``stage1`` .. ``stage3`` sit after each stage; an inserted module is ``features.stageK_attn``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .slots import SlotSite

__all__ = ["CNN3", "CNN3_CHANNELS", "build_cnn3"]

CNN3_CHANNELS = (64, 128, 256)
MIN_CHANNELS = 8


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            [
                ("conv", nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, bias=False)),
                ("bn", nn.BatchNorm2d(out_channels)),
                ("relu", nn.ReLU(inplace=True)),
            ]
        )
    )


class CNN3(nn.Module):
    """Three strided conv stages, global average pool, one linear layer.

    ``pooled(x)`` is everything before ``classifier``, flattened: ``(B, 256 x width)``.

    Example:
        >>> model = build_cnn3(num_classes=10, width=0.25)
        >>> model(torch.randn(2, 3, 28, 28)).shape, model.pooled(torch.randn(2, 3, 28, 28)).shape
        (torch.Size([2, 10]), torch.Size([2, 64]))
    """

    HEAD = "classifier"

    def __init__(self, *, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        channels = [max(MIN_CHANNELS, round(c * width)) for c in CNN3_CHANNELS]
        stages = zip((3, *channels[:-1]), channels, strict=True)
        self.features = nn.Sequential(
            OrderedDict((f"stage{i}", _stage(cin, cout)) for i, (cin, cout) in enumerate(stages, start=1))
        )
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(channels[-1], num_classes)
        # torchvision's ResNet initialisation for the convs and batch norms; the linear layer keeps torch's default
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)  # (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(x))

    def slot_sites(self) -> list[SlotSite]:
        """After each stage, all block-level."""
        return [SlotSite(f"stage{k}", "features", f"stage{k}", f"features.stage{k}", True) for k in range(1, 4)]


def build_cnn3(*, num_classes: int, width: float = 1.0) -> CNN3:
    """``cnn3`` with its channels scaled by ``width`` (at least 8)."""
    return CNN3(num_classes=num_classes, width=width)

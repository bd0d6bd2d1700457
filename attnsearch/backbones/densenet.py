"""DenseNet (Huang, Liu, van der Maaten, Weinberger, Densely Connected Convolutional Networks, CVPR 2017,
arXiv 1608.06993) with torchvision's configurations and submodule names, plus the CIFAR DenseNet-BC-100.

Submodule names follow torchvision (``features.conv0``, ``features.denseblock1.denselayer1.conv2``,
``features.transition1``, ``features.norm5``, ``classifier``), so a full-width model loads torchvision's state_dict.
Each dense layer carries an ``attn`` module after its 3x3 conv, the identity unless a ``denseblockK_layers`` slot
fills it (where the SE blog post puts its SE_Block); an identity has no parameters, so a plain model is
torchvision's model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import checkpoint

from .slots import SlotSite

__all__ = ["DENSENET_CONFIGS", "DenseNet", "build_densenet"]


@dataclass(frozen=True)
class DenseNetConfig:
    growth_rate: int
    block_config: tuple[int, ...]
    num_init_features: int
    compression: float = 0.5  # transitions keep this fraction of the channels
    small_input: bool = False  # 3x3 stride-1 stem and no stem pool, for 32x32 images
    bn_size: int = 4  # bottleneck width = bn_size * growth_rate


DENSENET_CONFIGS = {
    # torchvision's ImageNet models
    "densenet121": DenseNetConfig(32, (6, 12, 24, 16), 64),
    "densenet161": DenseNetConfig(48, (6, 12, 36, 24), 96),
    "densenet169": DenseNetConfig(32, (6, 12, 32, 32), 64),
    "densenet201": DenseNetConfig(32, (6, 12, 48, 32), 64),
    # DenseNet-BC (L=100, k=12) for CIFAR, the SE blog post's network
    "densenet_bc100": DenseNetConfig(12, (16, 16, 16), 24, small_input=True),
}
MIN_GROWTH = 4
MIN_INIT_FEATURES = 8


class _DenseLayer(nn.Module):
    def __init__(self, in_features: int, growth_rate: int, bn_size: int, memory_efficient: bool) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_features, bn_size * growth_rate, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, padding=1, bias=False)
        self.attn: nn.Module = nn.Identity()
        self.memory_efficient = memory_efficient

    def _bottleneck(self, *features: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and any(t.requires_grad for t in features):
            # recompute the concatenation in backward instead of keeping it: memory grows linearly, not quadratically
            bottleneck = checkpoint.checkpoint(self._bottleneck, *features, use_reentrant=False)
        else:
            bottleneck = self._bottleneck(*features)
        return self.attn(self.conv2(self.relu2(self.norm2(bottleneck))))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, layers: int, in_features: int, growth_rate: int, bn_size: int, memory_efficient: bool) -> None:
        super().__init__()
        for i in range(layers):
            layer = _DenseLayer(in_features + i * growth_rate, growth_rate, bn_size, memory_efficient)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):
    """A DenseNet-BC with torchvision's submodule names.

    Example:
        >>> model = build_densenet("densenet_bc100", num_classes=10, width=0.5)
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    HEAD = "classifier"  # the classifier's attribute: forward(x) == classifier(pooled(x))

    def __init__(self, config: DenseNetConfig, *, num_classes: int, memory_efficient: bool = False) -> None:
        super().__init__()
        channels = config.num_init_features
        if config.small_input:
            stem = [("conv0", nn.Conv2d(3, channels, kernel_size=3, padding=1, bias=False))]
        else:
            stem = [
                ("conv0", nn.Conv2d(3, channels, kernel_size=7, stride=2, padding=3, bias=False)),
                ("norm0", nn.BatchNorm2d(channels)),
                ("relu0", nn.ReLU(inplace=True)),
                ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
            ]
        self.features = nn.Sequential()
        for name, module in stem:
            self.features.add_module(name, module)
        for i, layers in enumerate(config.block_config, start=1):
            block = _DenseBlock(layers, channels, config.growth_rate, config.bn_size, memory_efficient)
            self.features.add_module(f"denseblock{i}", block)
            channels += layers * config.growth_rate
            if i < len(config.block_config):
                out = int(channels * config.compression)
                self.features.add_module(f"transition{i}", _Transition(channels, out))
                channels = out
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.classifier = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's DenseNet initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the classifier: the final ReLU and global average pool, (B, C)."""
        x = F.relu(self.features(x), inplace=True)
        return torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(x))

    def slot_sites(self) -> list[SlotSite]:
        """After each dense block and transition (block-level: the dense blocks), then inside every layer of a block."""
        outer: list[SlotSite] = []
        inner: list[SlotSite] = []
        for name, module in self.features.named_children():
            if isinstance(module, _DenseBlock):
                outer.append(SlotSite(name, "features", name, f"features.{name}", True))
                first = next(iter(module.keys()))
                probe = f"features.{name}.{first}.conv2"
                inner.append(SlotSite(f"{name}_layers", f"features.{name}", "", probe, False, per_layer=True))
            elif isinstance(module, _Transition):
                outer.append(SlotSite(name, "features", name, f"features.{name}", False))
        return outer + inner


def build_densenet(name: str, *, num_classes: int, width: float = 1.0, memory_efficient: bool = False) -> DenseNet:
    """``densenet121/161/169/201`` and ``densenet_bc100``; ``width`` scales the growth rate and the stem."""
    base = DENSENET_CONFIGS[name]
    config = replace(
        base,
        growth_rate=max(MIN_GROWTH, round(base.growth_rate * width)),
        num_init_features=max(MIN_INIT_FEATURES, round(base.num_init_features * width)),
    )
    return DenseNet(config, num_classes=num_classes, memory_efficient=memory_efficient)

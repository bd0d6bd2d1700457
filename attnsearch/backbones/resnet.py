"""ResNet (He, Zhang, Ren, Sun, Deep Residual Learning for Image Recognition, CVPR 2016, arXiv 1512.03385) with
torchvision's definitions, submodule names and initialisation, plus a CIFAR stem.

Submodule names are torchvision's (``conv1``, ``bn1``, ``maxpool``, ``layer1.0.conv1``, ``layer2.0.downsample.0``,
``fc``), so a full-width model with the ImageNet stem loads torchvision's state_dict. Every residual block carries
an ``attn`` module on its residual branch, after the branch's last batch norm and before the addition (where
SE-ResNet puts SE, Hu et al. arXiv 1709.01507, and CBAM's ResBlock + CBAM, Woo et al. arXiv 1807.06521): the
identity unless a ``layerK_blocks`` slot fills it; an identity has no parameters, so a plain model is torchvision's.

The ``cifar`` stem (for 32x32 images) is one 3x3 stride-1 ``conv1`` and no max pool: ``maxpool`` is then an
``nn.Identity``, so both stems have the same attributes and the same forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .slots import SlotSite

__all__ = ["RESNET_CONFIGS", "STEMS", "BasicBlock", "Bottleneck", "ResNet", "build_resnet"]

MIN_CHANNELS = 8
STEMS = ("imagenet", "cifar")


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); ``attn`` after ``bn2``, before the addition."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride
        self.attn: nn.Module = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1, 3x3 (strided, torchvision's "ResNet v1.5"), 1x1 with 4x the planes (ResNet-50); ``attn`` after ``bn3``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.attn: nn.Module = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


@dataclass(frozen=True)
class ResNetConfig:
    block: type[BasicBlock] | type[Bottleneck]
    layers: tuple[int, int, int, int]  # residual blocks per stage


RESNET_CONFIGS = {
    "resnet18": ResNetConfig(BasicBlock, (2, 2, 2, 2)),
    "resnet34": ResNetConfig(BasicBlock, (3, 4, 6, 3)),
    "resnet50": ResNetConfig(Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """A ResNet with torchvision's submodule names, channels ``64-128-256-512 x width`` (at least 8).

    ``pooled(x)`` is everything before ``fc``, flattened: ``(B, 512 x width x expansion)``.

    Example:
        >>> model = build_resnet("resnet18", num_classes=10, width=0.125, stem="cifar")
        >>> model(torch.randn(2, 3, 32, 32)).shape, model.pooled(torch.randn(2, 3, 32, 32)).shape
        (torch.Size([2, 10]), torch.Size([2, 64]))
    """

    HEAD = "fc"

    def __init__(self, config: ResNetConfig, *, num_classes: int, width: float = 1.0, stem: str = "imagenet") -> None:
        super().__init__()
        self.inplanes = _scaled(64, width)
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        block = config.block
        self.layer1 = self._make_layer(block, _scaled(64, width), config.layers[0])
        self.layer2 = self._make_layer(block, _scaled(128, width), config.layers[1], stride=2)
        self.layer3 = self._make_layer(block, _scaled(256, width), config.layers[2], stride=2)
        self.layer4 = self._make_layer(block, _scaled(512, width), config.layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)
        # torchvision's initialisation (zero_init_residual=False, its default)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)  # (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooled(x))

    def slot_sites(self) -> list[SlotSite]:
        """After each stage (block-level), then inside every residual block of a stage.

        A stage's module becomes the child ``layerK_attn`` of ``layerK``, after its last block; the map it sees
        is that block's output.
        """
        stages: list[SlotSite] = []
        blocks: list[SlotSite] = []
        for k in range(1, 5):
            name = f"layer{k}"
            layer: nn.Sequential = getattr(self, name)
            # the last residual block, also once a module sits after it (layerK_attn): the map the slot sees
            last = [child for child, _ in layer.named_children() if not child.endswith("_attn")][-1]
            stages.append(SlotSite(name, name, last, f"{name}.{last}", True))
            last_bn = "bn3" if isinstance(layer[0], Bottleneck) else "bn2"
            blocks.append(SlotSite(f"{name}_blocks", name, "", f"{name}.0.{last_bn}", False, per_layer=True))
        return stages + blocks


def _scaled(channels: int, width: float) -> int:
    return max(MIN_CHANNELS, round(channels * width))


def build_resnet(name: str, *, num_classes: int, width: float = 1.0, stem: str = "imagenet") -> ResNet:
    """``resnet18``, ``resnet34``, ``resnet50``; ``width`` scales every stage's channels; ``stem`` imagenet or cifar."""
    return ResNet(RESNET_CONFIGS[name], num_classes=num_classes, width=width, stem=stem)

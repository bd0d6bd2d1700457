"""VGG (Simonyan and Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition, ICLR 2015,
arXiv 1409.1556), built from torchvision's configuration table and layer maker.

Submodule names are torchvision's (``features.<index>``, ``avgpool``, ``classifier``), so a full-width model with
the classic head loads torchvision's state_dict. Slots are read off the ``features`` list: ``convB_I`` after the
I-th conv+ReLU of block B (where the SAGAN blog post inserts), and ``blockB`` after a block's last conv+ReLU,
before its max-pool (where the LinearAttention blog post inserts).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import vgg as tv_vgg

from ..candidate import HEADS
from ..errors import AttnsearchError
from .slots import SlotSite

__all__ = ["VGG", "VGG_CONFIGS", "build_vgg"]

# model name -> torchvision's configuration key
VGG_CONFIGS = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}
MIN_CHANNELS = 8


class VGG(nn.Module):
    """A VGG with torchvision's submodule names and a choice of head.

    Example:
        >>> model = build_vgg("vgg16_bn", num_classes=10, width=0.25, head="compact")
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    HEAD = "classifier"  # the classifier's attribute: forward(x) == classifier(pooled(x))

    def __init__(self, features: nn.Sequential, *, num_classes: int, head: str, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = features
        channels = [m.out_channels for m in features if isinstance(m, nn.Conv2d)][-1]
        if head == "classic":
            # torchvision's head: 7x7 adaptive pool, then 4096-4096 with dropout
            self.avgpool: nn.Module = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier: nn.Module = nn.Sequential(
                nn.Linear(channels * 7 * 7, 4096),
                nn.ReLU(True),
                nn.Dropout(p=dropout),
                nn.Linear(4096, 4096),
                nn.ReLU(True),
                nn.Dropout(p=dropout),
                nn.Linear(4096, num_classes),
            )
        elif head == "compact":
            # for small images: global average pool and one linear layer
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.classifier = nn.Linear(channels, num_classes)
        else:
            raise AttnsearchError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's VGG initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the classifier: (B, C * 7 * 7) with the classic head, (B, C) with the compact one."""
        return torch.flatten(self.avgpool(self.features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(x))

    def slot_sites(self) -> list[SlotSite]:
        """Block-level slots first, then one slot per conv, read off the ``features`` list."""
        blocks: list[SlotSite] = []
        convs: list[SlotSite] = []
        block, conv, last_relu = 1, 0, ""
        for name, module in self.features.named_children():
            if isinstance(module, nn.Conv2d):
                conv += 1
            elif isinstance(module, nn.ReLU):
                last_relu = name
                convs.append(SlotSite(f"conv{block}_{conv}", "features", name, f"features.{name}", False))
            elif isinstance(module, nn.MaxPool2d):
                blocks.append(SlotSite(f"block{block}", "features", last_relu, f"features.{last_relu}", True))
                block, conv = block + 1, 0
        return blocks + convs


def scaled(channels: int, width: float) -> int:
    return max(MIN_CHANNELS, round(channels * width))


def build_vgg(name: str, *, num_classes: int, width: float = 1.0, head: str = "classic") -> VGG:
    """``vgg11`` .. ``vgg19`` and their ``_bn`` variants, channels scaled by ``width`` (at least 8)."""
    config = tv_vgg.cfgs[VGG_CONFIGS[name.removesuffix("_bn")]]
    config = [v if v == "M" else scaled(int(v), width) for v in config]
    return VGG(tv_vgg.make_layers(config, batch_norm=name.endswith("_bn")), num_classes=num_classes, head=head)

"""Write a candidate's model as standalone PyTorch source: the code behind ``attnsearch export``.

The file is assembled from the templates in ``attnsearch/templates`` with :class:`string.Template`: the file
skeleton, one template per backbone family and one per attention mechanism (written from our modules' math, with
their parameter and buffer names). Only validated values fill them: registry keys that have a template, slot names
the backbone really has, identifiers matching a pattern, and numbers type-checked and formatted here. No text from
a space file or a results folder is ever pasted into the code.

The backbone is written by walking attnsearch's own model of the candidate (built on the meta device), so every
submodule keeps attnsearch's name. Choosing the trial, checking the code by running it and writing the files is
:mod:`attnsearch.export`'s part.
"""

from __future__ import annotations

import keyword
import math
import re
import string
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import torch
from torch import nn

from .attention import list_modules, module_info
from .backbones import backbone_info, list_backbones
from .backbones.densenet import _DenseBlock, _Transition
from .candidate import Candidate, PlacementSpec
from .codegen_plugin import plugin_class, plugin_code
from .errors import AttnsearchError
from .model import build_model, list_slots

if TYPE_CHECKING:
    from .codegen_gate import GateCode

__all__ = ["generate_code"]


@dataclass(frozen=True)
class _Mechanism:
    cls: str  # the class its template defines
    needs: frozenset[str]  # names from _IMPORTS the template uses


_MECHANISMS = {
    "se": _Mechanism("SqueezeExcite", frozenset()),
    "eca": _Mechanism("EfficientChannelAttention", frozenset({"math"})),
    "cbam": _Mechanism("CBAM", frozenset()),
    "triplet": _Mechanism("TripletAttention", frozenset({"F"})),
    "coord": _Mechanism("CoordAttention", frozenset()),
    "self_attention": _Mechanism("SelfAttention", frozenset({"F"})),
    "linear_attention": _Mechanism("LinearAttention", frozenset({"math", "F"})),
    "mhsa": _Mechanism("MHSA", frozenset({"F"})),
}
# import lines in the order they are written: the standard library, a blank line, then torch
_STDLIB_IMPORTS = {
    "math": "import math",
    "OrderedDict": "from collections import OrderedDict",
    "Callable": "from collections.abc import Callable",
}
_TORCH_IMPORTS = {"torch": "import torch", "F": "import torch.nn.functional as F", "nn": "from torch import Tensor, nn"}
_FAMILY_NEEDS = {
    "vgg": frozenset(),
    "densenet": frozenset({"F", "Callable"}),
    "resnet": frozenset(),
    "cnn": frozenset(),
    "plugin": frozenset(),
}
_MODEL_CLASS = {"vgg": "VGG", "densenet": "DenseNet", "resnet": "ResNet", "cnn": "CNN3", "plugin": "_plugin_backbone"}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CHILD_NAME = re.compile(r"[0-9]+|[A-Za-z_][A-Za-z0-9_]*")  # torchvision's numeric names are keys, not attributes
_ENTRY_INDENT = " " * 20  # inside nn.Sequential(OrderedDict([...])) in __init__
_LINE_LIMIT = 120


def generate_code(
    candidate: Candidate,
    *,
    num_classes: int,
    trial: int | None = None,
    score: tuple[str, float] | None = None,
    weights_file: str = "model.pt",
) -> str:
    """The standalone Python source of ``candidate``'s model: attention classes, backbone, ``build_model``.

    ``trial`` and ``score`` (metric, value) only go into the header line; ``weights_file`` is the name of the
    weights file beside it, which the file's docstring loads (``export`` passes the name it writes: ``<name>.pt``).

    Example:
        >>> from attnsearch.candidate import BackboneSpec, PlacementSpec
        >>> c = Candidate(BackboneSpec("vgg11_bn", 0.125), (PlacementSpec("block3", "se", (("reduction", 8),)),))
        >>> code = generate_code(c, num_classes=10)
        >>> "class SqueezeExcite(nn.Module):" in code and '("block3_attn", SqueezeExcite(32, reduction=8)),' in code
        True
    """
    backbone = candidate.backbone.name
    if backbone not in list_backbones():
        raise AttnsearchError(f"export: unknown backbone {backbone!r:.60}")
    family = backbone_info(backbone).family
    num_classes = _whole(num_classes, "num_classes")
    image_size = _whole(candidate.data.image_size, "image_size")
    plain = [p for p in candidate.placements if p.module != "gate"]  # a gate's code: attnsearch.codegen_gate
    for placement in plain:
        _check_placement(placement)
    model = _reference_model(candidate, num_classes, meta=True)
    b = candidate.backbone
    slots = {s.name: s.channels for s in list_slots(backbone, image_size=image_size, width=b.width, stem=b.stem)}
    from .codegen_families import cnn3_body, resnet_body  # they use this module's helpers
    from .codegen_plugin_backbone import plugin_backbone_body

    writers = {"vgg": _vgg_body, "densenet": _densenet_body, "resnet": resnet_body, "cnn": cnn3_body}
    writers["plugin"] = plugin_backbone_body
    body = writers[family](model, candidate, slots)

    keys = list(dict.fromkeys(p.module for p in plain))
    # plug-in modules and backbone: attnsearch.codegen_plugin
    plugged = plugin_code([key for key in keys if key not in _MECHANISMS], backbone if family == "plugin" else None)
    keys = [key for key in keys if key in _MECHANISMS]
    gated = _gate_code(model, candidate, family) if len(plain) < len(candidate.placements) else None
    needs = {"OrderedDict", "torch", "nn", *_FAMILY_NEEDS[family], *plugged.needs}
    for key in keys:
        needs |= _MECHANISMS[key].needs
    needs |= gated.needs if gated else set()
    imports = [line for name, line in _STDLIB_IMPORTS.items() if name in needs] + plugged.imports
    imports.sort(key=lambda line: (line.startswith("from "), line))  # as ruff's isort orders them
    torch_imports = [line for name, line in _TORCH_IMPORTS.items() if name in needs]
    sections = plugged.sections + [_template(f"attention_{key}").substitute() for key in keys]
    sections.append(body)
    sections += gated.sections if gated else []
    return _template("file").substitute(
        title=_title(backbone, bool(candidate.placements), trial, score),
        weights=_weights_source(weights_file),
        imports="\n".join([*plugged.future, *([""] if plugged.future else []), *imports, "", *torch_imports]),
        image_size=_literal(image_size, "image_size"),
        num_classes=_literal(num_classes, "num_classes"),
        body="\n\n\n".join(section.rstrip("\n") for section in sections),
        backbone=backbone,
        model_class=gated.model_class if gated else _MODEL_CLASS[family],
        needs=plugged.described or "one file that needs only PyTorch",
    )


def _gate_code(model: nn.Module, candidate: Candidate, family: str) -> GateCode:
    from .codegen_gate import gate_code  # it uses this module's helpers

    return gate_code(model, candidate, family)


def _reference_model(candidate: Candidate, num_classes: int, *, meta: bool) -> nn.Module:
    b = candidate.backbone
    with torch.device("meta" if meta else "cpu"):
        return build_model(
            b.name,
            candidate.placement_dict(),
            num_classes=num_classes,
            width=b.width,
            head=b.head,
            image_size=candidate.data.image_size,
            stem=b.stem,
        )


# ------------------------------------------------------------------------------------------------ writing the code


def _template(name: str) -> string.Template:
    return string.Template(resources.files("attnsearch").joinpath("templates", f"{name}.py.tmpl").read_text("utf-8"))


def _weights_source(name: str) -> str:
    """The expression the docstring loads the weights from: the file's name as a string when it is plain text;
    for a name with a quote, a backslash or a control character, the file beside this one found from ``__file__``
    (``X.py`` -> ``X.pt``, the name export writes)."""
    if not isinstance(name, str) or not name or not name.isprintable() or any(c in name for c in '"\\'):
        return '__file__[:-3] + ".pt"'
    return f'"{name}"'


def _title(backbone: str, attention: bool, trial: int | None, score: tuple[str, float] | None) -> str:
    from .record import METRICS

    text = f"{backbone} with attention modules" if attention else f"{backbone}, no attention module placed"
    if trial is not None:
        text += f": trial {_literal(_whole(trial, 'trial', minimum=0), 'trial')} of an attnsearch study"
    if score is not None:
        metric, value = score
        if metric not in METRICS:
            raise AttnsearchError(f"export: unknown metric {metric!r:.40}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise AttnsearchError(f"export: {metric} is not a finite number")
        text += f", {metric} {float(value):.6g}"
    return text + "."


def _check_placement(placement: PlacementSpec) -> None:
    key = placement.module
    if key not in list_modules() or key == "none":
        raise AttnsearchError(f"export: unknown attention module {key!r:.40}")
    if key not in _MECHANISMS:
        plugin_class(key)  # a plug-in's module (attnsearch.codegen_plugin), else no code template: refused
    _identifier(placement.slot, "slot")
    allowed = module_info(key).params
    for name, value in placement.params:
        if name not in allowed:
            raise AttnsearchError(f"export: {key} has no parameter {name!r:.40}")
        _identifier(name, f"{key} parameter")
        _literal(value, f"{key}.{name}")


def _attention_call(placement: PlacementSpec, channels: int) -> tuple[str, list[str]]:
    key = placement.module
    args = [_literal(channels, "channels")]
    args += [f"{_identifier(n, 'parameter')}={_literal(v, n)}" for n, v in placement.params]
    return _MECHANISMS[key].cls if key in _MECHANISMS else plugin_class(key), args


def _attention_entry(
    name: str, child: nn.Module, placed: dict[str, PlacementSpec], slots: dict[str, int]
) -> list[str] | None:
    """The lines of an inserted attention module of ``features``; None when ``name`` is a backbone layer."""
    _child_name(name)
    if name not in placed:
        return None
    placement = placed[name]
    _same_module(child, placement)
    return _entry(name, *_attention_call(placement, slots[placement.slot]), comment=placement.slot)


def _vgg_body(model: nn.Module, candidate: Candidate, slots: dict[str, int]) -> str:
    placed = {f"{p.slot}_attn": p for p in candidate.placements}
    lines: list[str] = []
    for name, child in model.features.named_children():
        lines += _attention_entry(name, child, placed, slots) or _entry(name, *_layer(child))
    avgpool = "".join(_call(*_layer(model.avgpool)))
    head = model.classifier
    if isinstance(head, nn.Sequential):
        calls = [_layer(m, last=i == len(head) - 1) for i, m in enumerate(head)]
        inner = "".join(f"            {''.join(_call(*call))},\n" for call in calls)
        classifier = f"nn.Sequential(\n{inner}        )"
    else:
        classifier = "".join(_call(*_layer(head, last=True)))
    return _template("backbone_vgg").substitute(
        backbone=candidate.backbone.name, features="\n".join(lines), avgpool=avgpool, classifier=classifier
    )


def _densenet_body(model: nn.Module, candidate: Candidate, slots: dict[str, int]) -> str:
    placed = {f"{p.slot}_attn": p for p in candidate.placements}
    per_layer = {p.slot.removesuffix("_layers"): p for p in candidate.placements if p.slot.endswith("_layers")}
    lines: list[str] = []
    factories: list[str] = []
    for name, child in model.features.named_children():
        if attention := _attention_entry(name, child, placed, slots):
            lines += attention
        elif isinstance(child, _DenseBlock):
            first = child["denselayer1"]
            growth = first.conv2.out_channels
            args = [_literal(v, name) for v in (len(child), first.norm1.num_features, growth)]
            args.append(_literal(first.conv1.out_channels // growth, "bn_size"))
            comment = None
            if name in per_layer:
                placement = per_layer[name]
                _same_module(first.attn, placement)
                factory = f"_{_identifier(name, 'block')}_attn"
                cls, call_args = _attention_call(placement, slots[placement.slot])
                factories.append(
                    f"def {factory}() -> nn.Module:\n"
                    f'    """The attention module inside every dense layer of {name} (slot {placement.slot})."""\n'
                    f"    return {''.join(_call(cls, call_args))}\n"
                )
                args.append(f"attn={factory}")
                comment = f"{placement.slot}: {factory}() in every dense layer"
            lines += _entry(name, "_DenseBlock", args, comment=comment)
        elif isinstance(child, _Transition):
            args = [_literal(child.norm.num_features, name), _literal(child.conv.out_channels, name)]
            lines += _entry(name, "_Transition", args)
        else:
            lines += _entry(name, *_layer(child))
    body = _template("backbone_densenet").substitute(
        backbone=candidate.backbone.name,
        features="\n".join(lines),
        channels=_literal(model.classifier.in_features, "channels"),
    )
    # the factories go between the layer classes and DenseNet, which uses them
    if factories:
        head, marker, tail = body.partition("class DenseNet(nn.Module):")
        body = head + "\n\n".join(factories) + "\n\n" + marker + tail
    return body


def _same_module(module: nn.Module, placement: PlacementSpec) -> None:
    if type(module) is not module_info(placement.module).cls:
        raise AttnsearchError(f"export: slot {placement.slot} does not hold a {placement.module} module")


def _layer(module: nn.Module, *, last: bool = False) -> tuple[str, list[str]]:
    """A torch layer as (constructor, arguments); ``last``: the classifier's output layer, sized by num_classes."""
    kind = type(module)
    if kind is nn.Conv2d:
        if module.dilation != (1, 1) or module.groups != 1 or module.padding_mode != "zeros":
            raise AttnsearchError("export: a dilated, grouped or non-zero-padded conv has no template")
        args = [_literal(module.in_channels, "conv"), _literal(module.out_channels, "conv")]
        args.append(f"kernel_size={_size(module.kernel_size)}")
        if module.stride != (1, 1):
            args.append(f"stride={_size(module.stride)}")
        if module.padding != (0, 0):
            args.append(f"padding={_size(module.padding)}")
        if module.bias is None:
            args.append("bias=False")
        return "nn.Conv2d", args
    if kind is nn.BatchNorm2d:
        if module.eps != 1e-5 or module.momentum != 0.1 or not module.affine or not module.track_running_stats:
            raise AttnsearchError("export: a BatchNorm2d with non-default settings has no template")
        return "nn.BatchNorm2d", [_literal(module.num_features, "batch norm")]
    if kind is nn.ReLU:
        return "nn.ReLU", ["inplace=True"] if module.inplace else []
    if kind is nn.MaxPool2d:
        if module.dilation != 1 or module.ceil_mode:
            raise AttnsearchError("export: a dilated or ceil-mode max-pool has no template")
        args = [f"kernel_size={_size(module.kernel_size)}", f"stride={_size(module.stride)}"]
        if module.padding not in (0, (0, 0)):
            args.append(f"padding={_size(module.padding)}")
        return "nn.MaxPool2d", args
    if kind is nn.AdaptiveAvgPool2d:
        return "nn.AdaptiveAvgPool2d", [_size(module.output_size, square=False)]
    if kind is nn.Dropout:
        return "nn.Dropout", [f"p={_literal(float(module.p), 'dropout')}"]
    if kind is nn.Linear:
        if module.bias is None:
            raise AttnsearchError("export: a Linear without bias has no template")
        out = "num_classes" if last else _literal(module.out_features, "linear")
        return "nn.Linear", [_literal(module.in_features, "linear"), out]
    raise AttnsearchError(f"export: no template for a {kind.__name__} layer")


def _entry(name: str, func: str, args: list[str], *, comment: str | None = None) -> list[str]:
    """One ``("name", Layer(args)),`` item of the features list, wrapped as ruff format would when it is long."""
    pad = _ENTRY_INDENT
    lines = [f"{pad}# slot {comment}"] if comment else []
    call = _call(func, args)
    flat = f'{pad}("{name}", {call[0]}),' if len(call) == 1 else ""
    if flat and len(flat) <= _LINE_LIMIT:
        return [*lines, flat]
    inner = [f"{pad}    {line}" for line in _call(func, args, indent=len(pad) + 4)]
    return [*lines, f"{pad}(", f'{pad}    "{name}",', *inner[:-1], f"{inner[-1]},", f"{pad}),"]


def _call(func: str, args: list[str], *, indent: int = 0) -> list[str]:
    flat = f"{func}({', '.join(args)})"
    if indent + len(flat) + 1 <= _LINE_LIMIT:
        return [flat]
    return [f"{func}(", *[f"    {arg}," for arg in args], ")"]


# ------------------------------------------------------------------------------------------------ validated values


def _literal(value: object, what: str) -> str:
    """A number, bool or None as Python source; anything else is refused."""
    if value is None:
        return "None"
    if type(value) is bool:
        return "True" if value else "False"
    if type(value) is int:
        return str(value)
    if type(value) is float and math.isfinite(value):
        return repr(value)
    raise AttnsearchError(f"export: {what} must be a number, true/false or null, got {value!r:.60}")


def _whole(value: object, what: str, *, minimum: int = 1) -> int:
    if type(value) is not int or value < minimum:
        raise AttnsearchError(f"export: {what} must be an integer >= {minimum}, got {value!r:.40}")
    return value


def _size(value: object, *, square: bool = True) -> str:
    """A kernel size, stride or padding: an int, or a pair written as one int when both sides are equal."""
    if isinstance(value, tuple) and len(value) == 2:
        if square and value[0] == value[1]:
            return _literal(value[0], "size")
        return f"({_literal(value[0], 'size')}, {_literal(value[1], 'size')})"
    return _literal(value, "size") if square else f"({_literal(value, 'size')}, {_literal(value, 'size')})"


def _identifier(text: object, what: str) -> str:
    if not isinstance(text, str) or not _IDENTIFIER.fullmatch(text) or keyword.iskeyword(text):
        raise AttnsearchError(f"export: {what} {text!r:.60} is not a valid identifier")
    return text


def _child_name(text: str) -> str:
    if not _CHILD_NAME.fullmatch(text):
        raise AttnsearchError(f"export: layer name {text!r:.60} cannot be written")
    return text

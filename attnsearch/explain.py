"""``attnsearch explain``: where a trained trial looks, on a few validation images, as one PNG grid.

For each image: the input; Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017, arXiv 1610.02391) of the backbone's last block for the predicted class,
computed by captum's ``LayerGradCam`` (``ReLU(sum_k alpha_k A^k)``, ``alpha_k`` the spatial mean of the class
score's gradient over channel k of the block's map A); and the spatial map of every module the trial placed that has
one (``attention_map``: CBAM's spatial gate, triplet's H-W gate, coordinate attention's product of gates,
self-attention from the map's centre; a gated model's ``gate_maps``). Each map is resized over the image (bilinear).

The images are the same for every trial of a study (:func:`pick_images`); a comparison trial (by default the best
complete trial with nothing placed) is drawn next to the trial on them. Only kept weights (``trials/<n>/model.pt``,
loaded with ``weights_only=True``) are explained; the figure itself is drawn in :mod:`attnsearch.explain_figure`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import Dataset, load_dataset
from .data.loader import normalization
from .errors import AttnsearchError
from .record import TrialRecord
from .results import StudyResults
from .search.store import ResultsStore, check_writable, write_files

__all__ = ["EXPLAIN_SEED", "Explanation", "ModuleMap", "TrialMaps", "explain", "model_maps", "pick_images"]

EXPLAIN_SEED = 0  # the images shown: the same for every trial of every study with the same validation split
MAX_IMAGES = 16  # rows of one picture
NO_MAP = "no spatial map"


@dataclass(frozen=True)
class ModuleMap:
    """One placed module's spatial map over K images."""

    slot: str
    module: str  # registry key
    maps: Tensor | None  # (K, S, S) in [0, 1], resized over the S x S image; None: the module has no spatial map
    size: tuple[int, int] | None  # (H, W) of the map before resizing
    note: str  # e.g. "last of 6 layers", or NO_MAP


@dataclass(frozen=True)
class TrialMaps:
    """What one model shows on K images: its predictions, Grad-CAM and its modules' maps."""

    number: int | None  # the trial; None for a model not read from a study
    label: str  # the placements written out
    layer: str  # the Grad-CAM layer: the last block-level slot and the module path of its feature map
    cam_size: tuple[int, int]  # (h, w) of that feature map: Grad-CAM's own resolution before resizing
    predicted: tuple[int, ...]  # (K,) class indices
    confidence: tuple[float, ...]  # (K,) softmax probability of the predicted class
    gradcam: Tensor  # (K, S, S) >= 0, Grad-CAM of the predicted class resized over the image (bilinear), unscaled
    modules: tuple[ModuleMap, ...]  # one per placed module, by slot


@dataclass(frozen=True)
class Explanation:
    """What ``explain`` drew and where."""

    trials: tuple[TrialMaps, ...]  # the trial, then the one it is compared with (when there is one)
    images: Tensor  # uint8 (K, 3, S, S)
    labels: tuple[int, ...]  # (K,) true classes
    indices: tuple[int, ...]  # (K,) positions in the validation split
    classes: tuple[str, ...]
    picture: Path
    note: str  # why no trial is compared, when none is; "" otherwise


def pick_images(labels: Tensor, k: int, *, seed: int = EXPLAIN_SEED) -> list[int]:
    """``k`` positions in a split with these labels (int64 (N,)), stratified: one image of each class in turn.

    A permutation drawn from ``seed`` orders the images; classes take turns in the order they first appear in it,
    each giving its next image, so ``k`` up to the number of classes shows distinct classes, and the choice
    depends only on the labels and the seed (the same images for every trial of a study).

    Example:
        >>> pick_images(torch.tensor([0, 0, 0, 1, 1, 2]), 4)
        [2, 5, 3, 0]
    """
    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed)).tolist()
    by_class: dict[int, list[int]] = {}
    for position in order:
        by_class.setdefault(int(labels[position]), []).append(position)
    chosen: list[int] = []
    for turn in range(max((len(v) for v in by_class.values()), default=0)):
        chosen += [positions[turn] for positions in by_class.values() if turn < len(positions)]
    return chosen[:k]


def model_maps(
    model: nn.Module, x: Tensor, placements: Mapping[str, str], *, number: int | None = None, label: str = ""
) -> TrialMaps:
    """Predictions, Grad-CAM and module maps of ``model`` on normalised images ``x`` (K, 3, S, S).

    ``placements`` (slot -> module key) names the modules to draw. The model is put in eval mode and its in-place
    activations made out-of-place (same values; captum's hooks need the block's output intact). Grad-CAM is taken
    at the probe module of the last block-level slot (``model.slot_sites()``). A module's map comes from its
    ``attention_map`` applied to its input in the same forward pass (a per-layer slot: the last layer's module);
    a gated model's ``gate_maps(x)`` gives the maps of its gated slots.

    Example:
        >>> from attnsearch import build_model
        >>> model = build_model("vgg11_bn", {"block3": "cbam"}, num_classes=3, width=0.125, image_size=32)
        >>> found = model_maps(model, torch.randn(2, 3, 32, 32), {"block3": "cbam"})
        >>> found.gradcam.shape, found.modules[0].maps.shape, found.modules[0].size
        (torch.Size([2, 32, 32]), torch.Size([2, 32, 32]), (8, 8))
    """
    from captum.attr import LayerAttribution, LayerGradCam

    model.eval()
    for module in model.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False  # type: ignore[assignment]
    sites = {site.name: site for site in model.slot_sites()}  # type: ignore[operator]
    last = [site for site in sites.values() if site.block_level][-1]
    size = x.shape[-2:]

    found: dict[str, tuple[nn.Module | None, str]] = {}  # slot -> (module with a map, note)
    for slot in placements:
        found[slot] = _placed_module(model, sites[slot]) if slot in sites else (None, NO_MAP)
    inputs: dict[str, Tensor] = {}
    handles = [
        module.register_forward_pre_hook(lambda _m, args, slot=slot: inputs.__setitem__(slot, args[0]))
        for slot, (module, _) in found.items()
        if module is not None
    ]
    try:
        with torch.no_grad():
            probabilities = torch.softmax(model(x), dim=1)  # (K, classes)
            gates = model.gate_maps(x) if hasattr(model, "gate_maps") else {}  # type: ignore[operator]
            raw = {slot: module.attention_map(inputs[slot]) for slot, (module, _) in found.items() if module}
    finally:
        for handle in handles:
            handle.remove()
    raw |= {slot: gates[slot] for slot in placements if slot in gates}
    confidence, predicted = probabilities.max(dim=1)

    cam = LayerGradCam(model, model.get_submodule(last.probe))
    gradcam = cam.attribute(x, target=predicted, relu_attributions=True).detach()  # (K, 1, h, w)
    cam_size = (gradcam.shape[2], gradcam.shape[3])
    gradcam = LayerAttribution.interpolate(gradcam, tuple(size), interpolate_mode="bilinear")[:, 0]  # (K, S, S)

    modules = []
    for slot, key in placements.items():
        if slot not in raw:
            modules.append(ModuleMap(slot, key, None, None, NO_MAP))
            continue
        small = raw[slot].float()  # (K, H, W)
        big = F.interpolate(small[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
        note = "" if slot in gates else found[slot][1]
        modules.append(ModuleMap(slot, key, big.clamp(0, 1), tuple(small.shape[-2:]), note))
    return TrialMaps(
        number,
        label,
        f"{last.name} ({last.probe})",
        cam_size,
        tuple(predicted.tolist()),
        tuple(confidence.tolist()),
        gradcam,
        tuple(modules),
    )


def _placed_module(model: nn.Module, site: object) -> tuple[nn.Module | None, str]:
    """The module placed at ``site`` if it has a spatial map (per-layer: the last layer's), with its note."""
    if site.per_layer:  # type: ignore[attr-defined]
        layers = list(model.get_submodule(site.parent).children())  # type: ignore[attr-defined]
        module = getattr(layers[-1], "attn", None) if layers else None
        note = f"last of {len(layers)} layers"
    else:
        try:
            module = model.get_submodule(f"{site.parent}.{site.name}_attn")  # type: ignore[attr-defined]
        except AttributeError:  # placed some other way (a gate): gate_maps answers for it
            module = None
        note = ""
    if module is None or not hasattr(module, "attention_map"):
        return None, NO_MAP
    return module, note


# ------------------------------------------------------------------------------------------------ the study


def explain(
    results_dir: Path | str,
    *,
    trial: int,
    images: int = 4,
    out: Path | str | None = None,
    compare: int | str | None = "auto",
    progress: Callable[[str], None] | None = None,
) -> Explanation:
    """Draw trial ``trial`` of a study on ``images`` validation images into one PNG, and return what it drew.

    ``compare``: a trial number to draw side by side; ``"auto"`` (default) the best complete trial with nothing
    placed whose weights are kept (none when there is none, or when it is ``trial`` itself); None: ``trial``
    alone. The picture goes to ``out`` (default ``RESULTS_DIR/explain``) as ``trial-<n>.png`` or
    ``trial-<n>-vs-<m>.png``. ``progress`` is called with a line before each slow step.

    Raises:
        AttnsearchError: one line: a missing results folder or trial, a trial that is not complete, a trial
            without kept weights (how to keep them), ``images`` outside 1..16, trials on different data.

    Example:
        >>> found = explain("results/tiny", trial=3, images=4)  # doctest: +SKIP
        >>> found.picture, found.trials[0].gradcam.shape  # doctest: +SKIP
        (PosixPath('results/tiny/explain/trial-3-vs-0.png'), torch.Size([4, 32, 32]))
        >>> explain("tests/golden/golden", trial=1)  # a study the tests keep, without weights  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        attnsearch.errors.AttnsearchError: trial 1 has no weights (...): a run keeps them as its trials finish, ...
    """
    from .explain_figure import draw_explanation
    from .plugin_records import load_for_trials, load_recorded

    say = progress or (lambda _line: None)
    if isinstance(images, bool) or not isinstance(images, int) or not 1 <= images <= MAX_IMAGES:
        raise AttnsearchError(f"--images must be 1 to {MAX_IMAGES}, got {images!r:.40}")
    store = ResultsStore.open(results_dir)
    load_for_trials(store, [trial])  # the plug-ins it was trained with (attnsearch.plugin_records)
    record = _with_weights(store, _number(trial, "--trial"))
    other, note = _comparison(store, record, compare)
    load_recorded([other])
    folder = Path(out) if out is not None else store.root / "explain"
    check_writable(folder)
    candidate = record.candidate
    assert candidate is not None  # read_finished guarantees it
    if other is not None and other.candidate is not None and other.candidate.data != candidate.data:
        raise AttnsearchError(f"trials {record.number} and {other.number} were trained on different data")

    say(f"Loading {candidate.data.dataset} ({candidate.data.image_size} px)")
    dataset = load_dataset(candidate.data)
    chosen = pick_images(dataset.val_y, images)
    if len(chosen) < images:
        raise AttnsearchError(f"--images {images}: the validation split has only {len(chosen)} images")
    pixels = dataset.val_x[chosen]  # uint8 (K, 3, S, S)
    mean, std = normalization(dataset.train_x)  # as the trainer normalises (attnsearch.data.loader.Batches)
    x = (pixels.float() - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    drawn = []
    for shown in (record, other):
        if shown is not None:
            say(f"Trial {shown.number}: Grad-CAM and module maps on {images} images")
            drawn.append(_trial_maps(store, shown, dataset, x))
    name = f"trial-{record.number}" + (f"-vs-{other.number}" if other is not None else "") + ".png"
    classes = record.classes or dataset.classes
    found = Explanation(
        tuple(drawn), pixels, tuple(dataset.val_y[chosen].tolist()), tuple(chosen), tuple(classes), folder / name, note
    )
    say(f"Drawing {found.picture}")
    write_files({found.picture: draw_explanation(found)})
    return found


def _number(value: object, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AttnsearchError(f"{option} must be a trial number (0 or more), got {value!r:.40}")
    return value


def _with_weights(store: ResultsStore, number: int) -> TrialRecord:
    record = store.read_finished(number)
    if not store.weights_path(number).exists():
        reused = record.reused_from
        hint = f" (it reuses trial {reused}'s score: explain trial {reused})" if reused is not None else ""
        raise AttnsearchError(
            f"trial {number} has no weights ({store.weights_path(number)} is missing){hint}: a run keeps them as "
            f"its trials finish, for the K best (run --keep-weights K, default 1); for a finished study, run it "
            f"again with --fresh --keep-weights K (the old folder is moved aside)"
        )
    return record


def _comparison(store: ResultsStore, record: TrialRecord, compare: int | str | None) -> tuple[TrialRecord | None, str]:
    if compare is None:
        return None, ""
    if compare != "auto":
        if compare == record.number:
            raise AttnsearchError(f"--compare {compare}: that is the trial explained; compare another trial")
        return _with_weights(store, _number(compare, "--compare")), ""
    kept = store.kept_weights()
    bare = [
        r for r in StudyResults.from_store(store).ranked() if r.candidate is not None and not r.candidate.placements
    ]
    if not bare:
        return None, "the study has no complete trial with nothing placed to compare with"
    best = next((r for r in bare if r.number in kept), None)
    if best is None:
        return None, f"the baseline trial {bare[0].number} has no kept weights: not compared"
    if best.number == record.number:
        return None, f"trial {record.number} is the baseline itself"
    return best, ""


def _trial_maps(store: ResultsStore, record: TrialRecord, dataset: Dataset, x: Tensor) -> TrialMaps:
    from .search.worker import build_candidate

    candidate = record.candidate
    assert candidate is not None
    model = build_candidate(candidate, dataset, candidate.seed)
    state = store.read_weights(record.number)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if {k: tuple(v.shape) for k, v in state.items()} != expected:
        raise AttnsearchError(f"trial {record.number}'s model.pt does not fit its model (was it trained elsewhere?)")
    model.load_state_dict(state)
    placements = {p.slot: p.module for p in candidate.placements}
    return model_maps(model, x, placements, number=record.number, label=record.label)

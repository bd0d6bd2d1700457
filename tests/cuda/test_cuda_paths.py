"""The CUDA code paths: attention modules, fused SDPA, bf16 autocast, channels_last, costs and a whole trial on a GPU.

Skipped without a CUDA GPU. The same logic runs on the CPU with ``ATTNSEARCH_TEST_DEVICE=cpu`` (a check of the
tests themselves where no GPU exists); the parts that only mean something on CUDA (fused-kernel memory, the
allocator's peak, ``auto`` resolving to the GPU) are marked ``needs_cuda`` and skip there.

Numerics are compared with float64 references computed on the CPU, as the relative error
``||out - ref|| / ||ref||``. TF32 is switched off for the fp32 comparisons (``no_tf32``), so fp32 is held to 1e-4;
bf16 (8-bit significand) is held to a few 1e-2.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnsearch.attention.linear_attention as linear_attention_module
from attnsearch import build_model, create_module, list_modules, measure_costs
from attnsearch.candidate import BackboneSpec, Candidate, DataSpec, PlacementSpec, TrainRecipe
from attnsearch.data import load_dataset
from attnsearch.data.dataset import Dataset
from attnsearch.device import resolve_device
from attnsearch.search.worker import TrialOutcome, run_candidate
from attnsearch.train import train_model

DEVICE = os.environ.get("ATTNSEARCH_TEST_DEVICE", "cuda")
DEVICE_TYPE = torch.device(DEVICE).type
ON_CUDA = DEVICE_TYPE == "cuda"

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
needs_cuda = pytest.mark.skipif(not ON_CUDA, reason="CUDA-only behaviour (run without ATTNSEARCH_TEST_DEVICE=cpu)")

FP32_TOL = 1e-4  # fp32 against float64 with TF32 off: a few ulps of float32 accumulated over small sums
BF16_TOL = 3e-2  # bf16 keeps 8 significant bits (2**-8 ~ 4e-3 per rounding); a few roundings in a row


def rel_err(out: torch.Tensor, ref: torch.Tensor, *, floor: float = 1e-30) -> float:
    """||out - ref|| / max(||ref||, floor), in float64 on the CPU.

    ``floor`` is for references that are zero in exact arithmetic (e.g. the key bias's gradient in softmax
    attention: adding q . b_k to every logit of a row changes nothing), where only an absolute scale makes sense.
    """
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    return float((out - ref).norm() / ref.norm().clamp_min(floor))


def grad_floor(grads: list[torch.Tensor], precision: str) -> float:
    """The scale below which one parameter's gradient counts as zero: a fraction of all the reference gradients'
    norm, 1e-3 in fp32 and 1e-2 in bf16 (the key bias's exactly-zero gradient comes out as bf16 rounding noise)."""
    fraction = 1e-3 if precision == "fp32" else 1e-2
    return fraction * float(torch.cat([g.detach().double().cpu().flatten() for g in grads]).norm())


@pytest.fixture
def no_tf32() -> Iterator[None]:
    """fp32 matmuls and convolutions in full fp32 (cuDNN allows TF32 by default), restored afterwards."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def switch_on(module: nn.Module) -> nn.Module:
    """Open residual blocks that start as the identity (gamma = 0), so the attention path is exercised."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    return module


def tiny_model(placements: dict[str, str] | None = None, *, classes: int = 10, width: float = 0.125) -> nn.Module:
    torch.manual_seed(0)
    return build_model("vgg11_bn", placements or {}, num_classes=classes, width=width, head="compact", image_size=32)


@pytest.fixture(scope="module")
def shapes_small() -> Dataset:
    return load_dataset(DataSpec(dataset="shapes", image_size=32, train_size=512, val_size=128))


# --- 1. every registered attention module: fp32 and bf16 autocast against float64 on the CPU ------------------


def _forward_backward(
    module: nn.Module, x: torch.Tensor, grad: torch.Tensor, *, bf16: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The module's output for ``x`` (under bf16 autocast when asked) and the gradient of ``sum(y * grad)``."""
    x = x.detach().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        y = module(x)
    y.backward(grad)  # outside autocast, as torch recommends: backward ops follow their forward's dtypes
    assert x.grad is not None
    return y, x.grad


@pytest.mark.parametrize("key", [key for key in list_modules() if key != "gate"])  # the gate reads two maps
def test_module_matches_float64_cpu_in_fp32_and_bf16(key: str, no_tf32: None) -> None:
    torch.manual_seed(0)
    shape = (2, 32, 6, 10)  # non-square: a swapped H and W would show
    reference = switch_on(create_module(key, shape[1])).double()  # train mode: BatchNorm on batch statistics
    x64 = torch.randn(shape, dtype=torch.float64)
    g64 = torch.randn(shape, dtype=torch.float64)
    y_ref, gx_ref = _forward_backward(reference, x64, g64)
    ref_grads = {n: p.grad for n, p in reference.named_parameters()}

    x = x64.float().to(DEVICE).contiguous(memory_format=torch.channels_last)
    g = g64.float().to(DEVICE)
    assert x.is_contiguous(memory_format=torch.channels_last)
    for precision in ("fp32", "bf16"):
        module = copy.deepcopy(reference).float().to(DEVICE)  # the same weights
        module.zero_grad(set_to_none=True)
        y, gx = _forward_backward(module, x, g, bf16=precision == "bf16")
        tol = FP32_TOL if precision == "fp32" else BF16_TOL
        assert y.shape == x.shape and y.device.type == DEVICE_TYPE
        assert torch.isfinite(y).all() and torch.isfinite(gx).all(), precision
        assert rel_err(y, y_ref) < tol, (precision, rel_err(y, y_ref))
        assert rel_err(gx, gx_ref) < tol, (precision, rel_err(gx, gx_ref))
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.dtype == torch.float32, (precision, name)
            assert torch.isfinite(p.grad).all(), (precision, name)
            # bf16 parameter gradients sum many rounded products: a looser bound, still far below a wrong gradient
            limit = FP32_TOL if precision == "fp32" else 3 * BF16_TOL
            err = rel_err(p.grad, ref_grads[name], floor=grad_floor(list(ref_grads.values()), precision))
            assert err < limit, (precision, name, err)


def test_linear_attention_sums_in_fp32_under_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    # the module switches autocast off around its sums over positions: observe it from inside
    seen: list[tuple[bool, torch.dtype, torch.dtype]] = []
    original = linear_attention_module._attend

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
        out = original(q, k, v, eps)
        seen.append((torch.is_autocast_enabled(DEVICE_TYPE), v.dtype, out.dtype))
        return out

    monkeypatch.setattr(linear_attention_module, "_attend", spy)
    torch.manual_seed(0)
    module = switch_on(create_module("linear_attention", 32, heads=2)).to(DEVICE)
    x = torch.randn(2, 32, 16, 16, device=DEVICE)
    with torch.autocast(DEVICE_TYPE, dtype=torch.bfloat16):
        y = module(x)
    assert seen == [(False, torch.bfloat16, torch.float32)]  # bf16 values in (the 1x1 conv), fp32 sums out
    assert torch.isfinite(y).all()


# --- 2. SAGAN self-attention through the fused SDPA kernels -----------------------------------------------------


def sagan_reference(x: torch.Tensor, module: nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SAGAN (arXiv 1805.08318 v1) in float64 on the CPU, written from the paper, not from the module.

    With f, g the C -> C/r 1x1 convolutions and h the C -> C one: s_ij = f(x_i)^T g(x_j), the weights of output
    position j are beta_j = softmax_i(s_ij) (over all positions i, unscaled logits), o_j = sum_i beta_ji h(x_i) and
    y_j = gamma * o_j + x_j. The module's ``key`` plays f (the attended positions) and ``query`` plays g.
    Returns y and the float64 leaf parameters (for their gradients).
    """
    params = {name: p.detach().double().cpu().clone().requires_grad_(True) for name, p in module.named_parameters()}
    b, c, hh, ww = x.shape
    xs = x.reshape(b, c, hh * ww)  # (B, C, N)

    def conv1x1(prefix: str) -> torch.Tensor:
        weight = params[f"{prefix}.weight"][:, :, 0, 0]  # (out, C)
        return torch.einsum("oc,bcn->bon", weight, xs) + params[f"{prefix}.bias"][None, :, None]  # (B, out, N)

    f, g, h = conv1x1("key"), conv1x1("query"), conv1x1("value")
    s = torch.einsum("bdi,bdj->bji", f, g)  # (B, N_j, N_i): s_ij for output j, attended position i
    beta = torch.softmax(s, dim=-1)  # over i
    o = torch.einsum("bji,bci->bcj", beta, h)  # (B, C, N)
    y = params["gamma"] * o.reshape(b, c, hh, ww) + x
    return y, params


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("size", [(16, 16), (12, 20)])
# 64: queries and keys of 8 channels; 32 and 20: of 4 and 2 (and values of 20), which the module pads on CUDA to
# the widths the fused kernels accept
@pytest.mark.parametrize("c", [64, 32, 20])
def test_self_attention_fused_kernels_match_sagan_math(
    precision: str, size: tuple[int, int], c: int, no_tf32: None
) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    module = switch_on(create_module("self_attention", c, reduction=8))
    with torch.no_grad():
        module.gamma.fill_(1.0)
    x64 = torch.randn(2, c, *size, dtype=torch.float64, requires_grad=True)
    g64 = torch.randn(2, c, *size, dtype=torch.float64)
    y_ref, ref_params = sagan_reference(x64, module)
    (y_ref * g64).sum().backward()

    if ON_CUDA:
        # only fused kernels allowed: a fallback to the math path (an N x N matrix) raises instead
        backends = [SDPBackend.EFFICIENT_ATTENTION]
        if precision == "bf16":
            backends.insert(0, SDPBackend.FLASH_ATTENTION)
    else:
        backends = [SDPBackend.FLASH_ATTENTION]  # the CPU's fused kernel; the module pads q and k for it
    module = module.to(DEVICE)
    x = x64.detach().float().to(DEVICE).requires_grad_(True)
    with sdpa_kernel(backends):
        with torch.autocast(DEVICE_TYPE, dtype=torch.bfloat16, enabled=precision == "bf16"):
            y = module(x)
        y.backward(g64.float().to(DEVICE))
    tol = FP32_TOL if precision == "fp32" else BF16_TOL
    x_cpu = x64.detach()
    # the attention branch alone (y - x): the residual would otherwise hide an error in it
    assert rel_err(y.detach().cpu().double() - x_cpu, y_ref.detach() - x_cpu) < tol
    assert rel_err(x.grad, x64.grad) < tol
    floor = grad_floor([p.grad for p in ref_params.values()], precision)
    for name, p in module.named_parameters():
        limit = FP32_TOL if precision == "fp32" else 3 * BF16_TOL
        err = rel_err(p.grad, ref_params[name].grad, floor=floor)  # key.bias: zero gradient in exact arithmetic
        assert err < limit, (name, err)


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_self_attention_never_materialises_the_attention_matrix(precision: str) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    # C = 32: queries and keys of 4 channels, under the memory-efficient kernel's alignment (8 elements in bf16):
    # without the module's padding SDPA would fall back to the math kernel's N x N matrix
    b, c, side = 2, 32, 64
    n = side * side  # 4096 positions
    module = switch_on(create_module("self_attention", c, reduction=8)).to(DEVICE)
    x = torch.randn(b, c, side, side, device=DEVICE, requires_grad=True)
    grad = torch.randn_like(x)
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    bf16 = precision == "bf16"

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            y = module(x)
        y.backward(grad)

    with sdpa_kernel(backends):
        step()  # warm-up: kernels chosen, gradients allocated
        x.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - baseline
    matrices = n * n * 4 * b  # the fp32 N x N attention matrices of the batch: 128 MiB (64 MiB in bf16)
    # activations, q/k/v copies and gradients: megabytes, against the matrices' 128 MiB
    assert peak < matrices / 4, f"peak {peak / 2**20:.1f} MiB vs N x N matrices {matrices / 2**20:.0f} MiB"
    assert torch.isfinite(x.grad).all()


# --- 3. train_model: bf16 autocast, channels_last, learning ----------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "channels_last"), [("auto", True), ("fp32", True), ("bf16", True), ("auto", False)]
)
def test_train_model_precision_and_memory_format(precision: str, channels_last: bool, shapes_small: Dataset) -> None:
    model = tiny_model({"block3": "self_attention", "block4": "linear_attention"})
    # the backbone's 3x3 convolutions (a 1x1 kernel's weight is both contiguous and channels_last)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    seen: list[tuple[torch.dtype, bool, bool, str]] = []
    inputs: list[bool] = []

    def on_forward(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if module.training:  # training steps only (evaluation runs under the same autocast)
            weight = module.weight
            seen.append(
                (
                    output.dtype,
                    weight.is_contiguous(memory_format=torch.channels_last),
                    torch.is_autocast_enabled(DEVICE_TYPE),
                    weight.device.type,
                )
            )

    handles = [conv.register_forward_hook(on_forward) for conv in convs]
    handles.append(
        convs[0].register_forward_pre_hook(
            lambda m, args: (
                inputs.append(args[0].is_contiguous(memory_format=torch.channels_last)) if m.training else None
            )
        )
    )
    recipe = TrainRecipe(steps=3, batch_size=32, precision=precision, channels_last=channels_last)
    try:
        result = train_model(model, shapes_small, recipe, device=DEVICE, seed=0)
    finally:
        for handle in handles:
            handle.remove()
    assert result.state == "complete", result.reason
    assert math.isfinite(result.train_loss) and math.isfinite(result.val_loss)
    bf16 = precision == "bf16" or (precision == "auto" and ON_CUDA)  # auto: bf16 on CUDA, fp32 elsewhere
    assert len(seen) == 3 * len(convs)  # every conv of every training step
    assert {s[0] for s in seen} == {torch.bfloat16 if bf16 else torch.float32}
    assert {s[2] for s in seen} == {bf16}
    assert {s[3] for s in seen} == {DEVICE_TYPE}
    # weights stay channels_last through the optimizer steps (or stay plain), and so do the batches
    assert {s[1] for s in seen} == {channels_last}
    assert inputs == [channels_last] * 3
    weights = [conv.weight for conv in convs]
    assert all(w.is_contiguous(memory_format=torch.channels_last) == channels_last for w in weights)


@pytest.fixture(scope="module")
def shapes_learnable() -> Dataset:
    return load_dataset(DataSpec(dataset="shapes", image_size=32, train_size=2048, val_size=512))


LEARN = TrainRecipe(epochs=6, batch_size=64, lr=0.05)  # SGD nesterov, cosine, crop + flip; precision auto


def test_train_model_learns_shapes(shapes_learnable: Dataset) -> None:
    # about 2 s on an H100 (reached 0.78 there in bf16); minutes on a small CPU
    result = train_model(tiny_model(width=0.25), shapes_learnable, LEARN, device=DEVICE, seed=0)
    assert (result.state, result.epochs_run) == ("complete", 6), result.reason
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in result.history)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.val_acc is not None and result.val_acc > 0.4, result.history  # 10 classes: chance is 0.1


# --- 4. reproducibility --------------------------------------------------------------------------------------------


def test_same_seed_same_accuracy(shapes_small: Dataset) -> None:
    recipe = TrainRecipe(epochs=2, batch_size=32)
    first = train_model(tiny_model({"block3": "cbam"}), shapes_small, recipe, device=DEVICE, seed=1)
    second = train_model(tiny_model({"block3": "cbam"}), shapes_small, recipe, device=DEVICE, seed=1)
    assert first.state == second.state == "complete"
    if not ON_CUDA:
        # the CPU kernels are deterministic: bit-identical history
        assert [h["val_acc"] for h in first.history] == [h["val_acc"] for h in second.history]
        assert first.train_loss == second.train_loss
    # On CUDA, batch order and augmentation are identical for a seed, but cuDNN's backward passes may use atomic
    # adds, so weights may differ in the last bits between runs and an image near a decision boundary may flip.
    # Observed on an H100 (torch 2.11, cu130): three pairs of runs gave identical val_acc and train_loss, bit for
    # bit. That is not guaranteed (algorithm choice depends on the GPU and the library versions), so closeness is
    # what is asserted.
    assert first.val_acc is not None and second.val_acc is not None
    assert abs(first.val_acc - second.val_acc) <= 0.05
    assert first.train_loss is not None and second.train_loss is not None
    assert abs(first.train_loss - second.train_loss) <= 1e-2 * abs(first.train_loss)


# --- 5. measure_costs ----------------------------------------------------------------------------------------------


def test_measure_costs_on_device() -> None:
    model = tiny_model({"block3": "self_attention"})
    small = measure_costs(model, image_size=32, latency=True, memory=True, batch_size=4, device=DEVICE, repeats=3)
    assert next(model.parameters()).device.type == DEVICE_TYPE  # measured where asked
    before = {k: v.clone() for k, v in model.state_dict().items()}
    large = measure_costs(model, image_size=32, memory=True, batch_size=32, device=DEVICE)
    assert small["latency_ms"] > 0 and small["latency_ms_batch"] > 0 and small["latency_batch_size"] == 4
    assert small["params"] == large["params"] > 0 and small["flops"] == large["flops"] > 0
    assert small["train_memory_bytes"] > 0
    # 8 times the images: well over twice the memory (weights' gradients are a fixed part of the CUDA peak)
    assert large["train_memory_bytes"] > 2 * small["train_memory_bytes"], (small, large)
    for key, value in model.state_dict().items():  # measuring is not training
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())


# --- 6. a whole trial ---------------------------------------------------------------------------------------------


CANDIDATE = Candidate(
    BackboneSpec("vgg11_bn", 0.125),
    (
        PlacementSpec("block2", "cbam"),
        PlacementSpec("block3", "self_attention"),
        PlacementSpec("block4", "linear_attention"),
        PlacementSpec("block5", "mhsa"),
    ),
    TrainRecipe(epochs=2, batch_size=32),
    DataSpec(dataset="shapes", image_size=32, train_size=512, val_size=128),
)


def test_run_candidate_end_to_end(shapes_small: Dataset) -> None:
    dataset = load_dataset(CANDIDATE.data)
    assert torch.equal(dataset.val_x, shapes_small.val_x)  # the same data as the fixture
    outcome = run_candidate(CANDIDATE, dataset, device=resolve_device(DEVICE), repeats=1, keep_weights=True)
    assert isinstance(outcome, TrialOutcome)
    assert (outcome.state, outcome.reason) == ("complete", None)
    m = outcome.metrics
    for key in ("params", "flops", "latency_ms", "val_acc", "train_loss", "train_memory_bytes", "images_per_second"):
        assert m.value(key) is not None and m.value(key) > 0, key
    assert 0.0 < m.val_acc <= 1.0
    assert [h.epoch for h in outcome.history] == [1, 2]
    assert outcome.worker.device == str(torch.device(DEVICE))
    assert outcome.state_dict is not None and all(t.device.type == "cpu" for t in outcome.state_dict.values())
    assert all(torch.isfinite(t).all() for t in outcome.state_dict.values() if t.is_floating_point())


@needs_cuda
def test_auto_device_is_cuda() -> None:
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    x = torch.ones(2, device=resolve_device("auto"))
    assert x.is_cuda and F.relu(x).sum().item() == 2.0

"""Exported code checked where attnsearch cannot be imported: the harness the export tests share.

``save_case`` writes a candidate's generated code next to its (scrambled) weights and one input with attnsearch's
output for it; ``run_standalone`` runs those files in ``python -I -S`` with only torch's site-packages on sys.path
(attnsearch, an editable install found through a .pth file, is then not importable) and returns, per file, the
largest difference from attnsearch's output, the model's class and, when asked, the differences of its TorchScript
and ``torch.export`` versions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

import attnsearch as a
from attnsearch.candidate import Candidate
from attnsearch.export import generate_code

SITE_PACKAGES = str(Path(torch.__file__).resolve().parents[1])

_CHECK = """
import contextlib, importlib.util, io, json, runpy, sys, warnings
sys.path.append(SITE)
try:
    import attnsearch
except ImportError:
    pass
else:
    raise SystemExit("attnsearch is importable")
import torch

torch.set_num_threads(1)
warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in favour of torch.export
found = {}
for name in NAMES:
    spec = importlib.util.spec_from_file_location(name, f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build_model()
    model.load_state_dict(torch.load(f"{name}.pt", weights_only=True), strict=True)
    model.eval()
    io_ = torch.load(f"{name}_io.pt", weights_only=True)
    with torch.no_grad():
        out = model(io_["x"])
        found[name] = {"diff": (out - io_["expected"]).abs().max().item(), "class": type(model).__name__}
        if name in SCRIPTED:
            found[name]["script"] = (torch.jit.script(model)(io_["x"]) - out).abs().max().item()
    if name in EXPORTED:
        program = torch.export.export(model, (io_["x"],))
        found[name]["export"] = (program.module()(io_["x"]) - out).abs().max().item()
if MAIN is not None:  # the file run as a script: what it prints
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        runpy.run_path(f"{MAIN}.py", run_name="__main__")
    found["main"] = printed.getvalue()
found["modules"] = sorted(m for m in sys.modules if m.startswith("attnsearch"))
print(json.dumps(found))
"""


def scramble(model: torch.nn.Module) -> None:
    """Move every tensor, BatchNorm statistics included: attention gammas start at 0 and BatchNorm at the identity,
    so without this a wrong branch could still give equal outputs."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)


def build(candidate: Candidate, num_classes: int = 10) -> torch.nn.Module:
    """attnsearch's model of ``candidate``, as a trial builds it."""
    b = candidate.backbone
    return a.build_model(
        b.name,
        candidate.placement_dict(),
        num_classes=num_classes,
        width=b.width,
        head=b.head,
        image_size=candidate.data.image_size,
        stem=b.stem,
    )


def save_case(folder: Path, name: str, candidate: Candidate) -> None:
    """``<name>.py`` (the generated code), ``<name>.pt`` (scrambled weights) and ``<name>_io.pt`` (an input and
    attnsearch's output for it, in eval mode) in ``folder``."""
    model = build(candidate)
    scramble(model)
    model.eval()
    size = candidate.data.image_size
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model(x)
    torch.save(model.state_dict(), folder / f"{name}.pt")
    torch.save({"x": x, "expected": expected}, folder / f"{name}_io.pt")
    (folder / f"{name}.py").write_text(generate_code(candidate, num_classes=10))


def run_standalone(
    folder: Path,
    names: list[str],
    *,
    scripted: tuple[str, ...] = (),
    exported: tuple[str, ...] = (),
    main: str | None = None,
) -> dict:
    """Run the saved files ``names`` in ``folder`` without attnsearch; asserts the process succeeded and imported
    no attnsearch module, and returns what it found per name (plus ``main``: what ``<main>.py`` printed)."""
    script = (
        _CHECK.replace("SITE", repr(SITE_PACKAGES))
        .replace("NAMES", repr(names))
        .replace("SCRIPTED", repr(set(scripted) or set()))
        .replace("EXPORTED", repr(set(exported) or set()))
        .replace("MAIN", repr(main))
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script], cwd=folder, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found.pop("modules") == []
    return found

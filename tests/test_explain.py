"""`attnsearch explain` on a tiny trained study: Grad-CAM (captum) and the modules' own maps, drawn as a PNG."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.image
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import tiny  # tests/tiny.py
from attnsearch import build_model
from attnsearch.cli import main
from attnsearch.explain import NO_MAP, explain, model_maps, pick_images
from attnsearch.report_explain import explain_pictures
from attnsearch.results import StudyResults
from attnsearch.search.runner import run_search
from attnsearch.search.store import ResultsStore
from attnsearch.space import parse_space


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """block3 none / cbam / coord, 1 epoch each, every model.pt kept; read-only (tests write with --out or copy)."""
    space = parse_space(
        tiny.space(
            name="explained",
            slots={"block3": ["none", "cbam", "coord"], "block5": ["none"]},
            train={"epochs": 1},
            search={"sampler": "grid", "pruner": "none"},
        )
    )
    results = tmp_path_factory.mktemp("explain")
    run_search(space, results=results, keep_weights=3, on_event=None)
    return results / space.name


def numbers(folder: Path) -> dict[str, int]:
    """Placed module at block3 ('none' for the baseline) -> trial number."""
    records = ResultsStore.open(folder).read_records()
    return {(r.candidate.placements[0].module if r.candidate.placements else "none"): r.number for r in records}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_explain_draws_maps_that_follow_the_image(study: Path, tmp_path: Path) -> None:
    trial = numbers(study)
    found = explain(study, trial=trial["cbam"], images=3, out=tmp_path)
    # the default comparison: the best (here the only) trial with nothing placed
    assert [t.number for t in found.trials] == [trial["cbam"], trial["none"]]
    assert found.picture == tmp_path / f"trial-{trial['cbam']}-vs-{trial['none']}.png" and found.note == ""
    assert found.images.shape == (3, 3, 32, 32) and found.images.dtype == torch.uint8
    assert len(set(found.labels)) == 3  # stratified: one image of each of three classes
    for maps in found.trials:
        cam = maps.gradcam
        assert cam.shape == (3, 32, 32) and cam.min() >= 0
        assert cam.flatten(1).std(dim=1).min() > 0  # not constant on any image: gradients reached the block
        assert not torch.allclose(cam[0] / cam[0].max(), cam[1] / cam[1].max(), atol=1e-3)  # follows the image
        assert maps.layer.startswith("block5 ") and maps.cam_size == (2, 2)  # 32 px / 16
    (cbam,) = found.trials[0].modules
    assert (cbam.slot, cbam.module, cbam.size, cbam.note) == ("block3", "cbam", (8, 8), "")
    assert cbam.maps.shape == (3, 32, 32) and cbam.maps.min() >= 0 and cbam.maps.max() <= 1
    assert not torch.allclose(cbam.maps[0], cbam.maps[1], atol=1e-4)
    assert found.trials[1].modules == ()
    # the picture: a valid PNG of a plausible size (3 rows; input, cam + map, cam of the baseline)
    assert found.picture.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    pixels = matplotlib.image.imread(found.picture)
    assert 300 < pixels.shape[0] < 1200 and 400 < pixels.shape[1] < 1600
    # another trial of the study is shown on the very same images
    again = explain(study, trial=trial["coord"], images=3, out=tmp_path, compare=None)
    assert again.indices == found.indices and torch.equal(again.images, found.images)
    assert again.picture.name == f"trial-{trial['coord']}.png" and len(again.trials) == 1
    (coord,) = again.trials[0].modules
    assert coord.maps.shape == (3, 32, 32) and coord.maps.flatten(1).std(dim=1).min() > 0


def test_gradcam_is_the_papers_formula_on_the_trained_model(study: Path, tmp_path: Path) -> None:
    trial = numbers(study)["cbam"]
    found = explain(study, trial=trial, images=2, out=tmp_path, compare=None)
    store = ResultsStore.open(study)
    record = store.read_record(trial)
    model = build_model("vgg11_bn", {"block3": "cbam"}, num_classes=10, width=0.125, head="compact", image_size=32)
    model.load_state_dict(store.read_weights(trial))
    model.eval()
    train = parse_space(tiny.space()).data_spec()
    assert record.candidate.data == train
    from attnsearch.data import load_dataset
    from attnsearch.data.loader import normalization

    data = load_dataset(train)
    mean, std = normalization(data.train_x)
    x = (data.val_x[list(found.indices)].float() - mean[:, None, None]) / std[:, None, None]
    kept: list[torch.Tensor] = []
    probe = [s for s in model.slot_sites() if s.block_level][-1].probe
    for m in model.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    handle = model.get_submodule(probe).register_forward_hook(lambda _m, _i, out: kept.append(out))
    logits = model(x)
    handle.remove()
    predicted = logits.argmax(dim=1)
    assert tuple(predicted.tolist()) == found.trials[0].predicted
    a = kept[0]  # (K, C, h, w)
    grads = torch.autograd.grad(logits.gather(1, predicted[:, None]).sum(), a)[0]
    alpha = grads.mean(dim=(2, 3), keepdim=True)  # Eq. 1: global-average-pooled gradients
    cam = torch.relu((alpha * a).sum(dim=1, keepdim=True))  # Eq. 2
    cam = F.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(found.trials[0].gradcam, cam.detach(), rtol=1e-4, atol=1e-6)


def test_per_layer_slots_and_modules_without_a_map() -> None:
    torch.manual_seed(0)
    model = build_model(
        "densenet121", {"denseblock2_layers": "cbam", "denseblock3": "se"}, num_classes=3, width=0.125, image_size=32
    )
    found = model_maps(model, torch.randn(2, 3, 32, 32), {"denseblock2_layers": "cbam", "denseblock3": "se"})
    per_layer, se = found.modules
    layers = len(list(model.get_submodule("features.denseblock2").children()))
    assert per_layer.note == f"last of {layers} layers" and per_layer.maps.shape == (2, 32, 32)
    assert (se.maps, se.note) == (None, NO_MAP)
    assert found.layer.startswith("denseblock4 ")


def test_a_gated_model_gives_its_maps_through_gate_maps() -> None:
    model = build_model("vgg11_bn", {}, num_classes=3, width=0.125, image_size=32)
    alpha = torch.rand(2, 4, 4)
    model.gate_maps = lambda x: {"block3": alpha}  # the protocol of a gated model (attention gate)
    (gate,) = model_maps(model, torch.randn(2, 3, 32, 32), {"block3": "gate"}).modules
    assert (gate.size, gate.note) == ((4, 4), "")
    expected = F.interpolate(alpha[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(gate.maps, expected)


def test_pick_images_is_stratified_and_seeded() -> None:
    labels = torch.arange(40) % 4
    first = pick_images(labels, 6)
    assert first == pick_images(labels, 6) and len(set(first)) == 6
    assert sorted(int(labels[i]) for i in first[:4]) == [0, 1, 2, 3]
    assert pick_images(labels, 6, seed=1) != first


# ------------------------------------------------------------------------------------------------ the command


def test_cli_compare_and_alone(study: Path, tmp_path: Path) -> None:
    trial = numbers(study)
    done = invoke("explain", str(study), "--trial", str(trial["cbam"]), "--images", "2", "--compare",
                  str(trial["coord"]), "--out", str(tmp_path))  # fmt: skip
    assert done.exit_code == 0, done.output
    picture = tmp_path / f"trial-{trial['cbam']}-vs-{trial['coord']}.png"
    assert f"Picture: {picture}" in done.output and picture.exists()
    assert f"Trial {trial['coord']}: block3=coord" in done.output
    alone = invoke("explain", str(study), "--trial", str(trial["none"]), "--images", "1", "--out", str(tmp_path))
    assert alone.exit_code == 0, alone.output
    assert "Not compared: trial" in alone.output and (tmp_path / f"trial-{trial['none']}.png").exists()


def test_cli_one_line_errors(study: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(study, tmp_path / "copy"))
    cbam = numbers(study)["cbam"]
    (copy / "trials" / str(cbam) / "model.pt").unlink()
    cases = {
        ("--trial", str(cbam)): "--keep-weights K",
        ("--trial", "99"): "no such trial record",
        ("--trial", "0", "--images", "0"): "--images",
        ("--trial", "0", "--compare", str(cbam)): f"trial {cbam} has no weights",
        ("--trial", "0", "--compare", "x"): "not a trial number",
    }
    for args, said in cases.items():
        done = invoke("explain", str(copy), *args, "--out", str(tmp_path / "out"))
        assert done.exit_code == 2, (args, done.output)
        lines = done.output.strip().splitlines()
        assert said in lines[-1] and lines[-1].startswith(("attnsearch: error:", "Usage", "Error")), lines
    missing = invoke("explain", str(tmp_path / "nowhere"), "--trial", "0")
    assert missing.exit_code == 2 and "no such results folder" in missing.output


def test_report_links_the_pictures_of_the_best_trials(study: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(study, tmp_path / "study"))
    ranked = StudyResults.from_store(copy).ranked()
    best, last = ranked[0].number, ranked[-1].number
    alone = invoke("report", str(copy), "--out", str(tmp_path / "before"))
    assert alone.exit_code == 0 and "Attention maps" not in (tmp_path / "before" / "summary.md").read_text()
    for number in (best, last):
        assert invoke("explain", str(copy), "--trial", str(number), "--images", "1", "--compare", "none").exit_code == 0
    done = invoke("report", str(copy), "--out", str(tmp_path / "report"))
    assert done.exit_code == 0, done.output
    summary = (tmp_path / "report" / "summary.md").read_text()
    page = (tmp_path / "report" / "report.html").read_text()
    href = f"../study/explain/trial-{best}.png"
    assert "\n\n## Attention maps\n" in summary and f"![trial {best}]({href})" in summary
    assert f'<img src="{href}"' in page
    assert (tmp_path / "report" / href).resolve() == copy / "explain" / f"trial-{best}.png"
    linked = {p.trial for p in explain_pictures(StudyResults.from_store(copy), copy, tmp_path / "report", top=1)}
    assert linked == {best}  # only the best trials' pictures: the top 1 here
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "heatmap.png",
        "history.png",
        "report.html",
        "summary.md",
    ]

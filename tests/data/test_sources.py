"""load_dataset and check_data for shapes, digits and image folders, offline (published datasets: test_published)."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import attnsearch.data.sources as sources
from attnsearch.cli import main
from attnsearch.candidate import DataSpec
from attnsearch.data import DATASETS, Dataset, check_data, load_dataset
from attnsearch.data.shapes import SHAPE_CLASSES, make_shapes
from attnsearch.space import load_space
from published_files import same_error

pytestmark = pytest.mark.usefixtures("one_thread")


def assert_well_formed(ds: Dataset, size: int) -> None:
    for x, y in ((ds.train_x, ds.train_y), (ds.val_x, ds.val_y)):
        assert x.dtype == torch.uint8 and x.ndim == 4 and x.shape[1:] == (3, size, size)
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
        assert int(y.min()) >= 0 and int(y.max()) < ds.num_classes


# --- common ---------------------------------------------------------------------------------------------------


def test_dataset_names() -> None:
    assert DATASETS == ("shapes", "digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder")


def test_unknown_dataset_lists_the_valid_ones() -> None:
    msg = same_error(DataSpec(dataset="svhn"), "unknown dataset 'svhn'")
    assert all(name in msg for name in DATASETS)


@pytest.mark.parametrize(
    ("change", "match"),
    [({"image_size": 4}, "image_size"), ({"train_size": 0}, "train_size"), ({"val_size": -3}, "val_size")],
)
def test_bad_sizes(change: dict[str, int], match: str) -> None:
    same_error(DataSpec(dataset="shapes", **change), match)


@pytest.mark.parametrize(
    ("value", "error"), [("all", None), (None, None), ("lots", "must be a valid integer, got 'lots'")]
)
@pytest.mark.parametrize("field", ["train_size", "val_size"])
def test_split_size_all(field: str, value: str | None, error: str | None, tiny_space_file: Any) -> None:
    # "all" in a space file means no cap (None); any other string is the usual one-line error naming the key
    path = tiny_space_file(data={field: value})
    result = CliRunner().invoke(main, ["validate", str(path)])
    if error is None:
        assert result.exit_code == 0, result.output
        assert getattr(load_space(path).data_spec(), field) is None
    else:
        assert result.exit_code == 2
        assert result.output.strip().splitlines() == [f"attnsearch: error: data.{field}: {error}"]


# --- shapes ---------------------------------------------------------------------------------------------------


def test_shapes_splits() -> None:
    ds = load_dataset(DataSpec(dataset="shapes", image_size=24, train_size=120, val_size=40, seed=7))
    assert_well_formed(ds, 24)
    assert (len(ds.train_y), len(ds.val_y)) == (120, 40)
    assert ds.classes == SHAPE_CLASSES and ds.name == "shapes"
    assert torch.equal(ds.train_x, make_shapes(120, 24, seed=7)[0])
    assert not torch.equal(ds.val_x, make_shapes(40, 24, seed=7)[0])  # validation comes from another seed


def test_shapes_default_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []

    def fake(n: int, image_size: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append((n, image_size))
        return torch.zeros(n, 3, image_size, image_size, dtype=torch.uint8), torch.arange(n) % 10

    monkeypatch.setattr(sources, "make_shapes", fake)
    load_dataset(DataSpec(dataset="shapes", image_size=8))
    assert calls == [(10_000, 8), (2_000, 8)]


def test_shapes_test_split_only_when_asked() -> None:
    spec = DataSpec(dataset="shapes", image_size=16, train_size=60, val_size=30, seed=3)
    plain = load_dataset(spec)
    assert plain.test_x is None and plain.test_y is None
    assert plain.split == {"validation": "generated", "train_images": 60, "val_images": 30, "test_images": 30}
    ds = load_dataset(spec, test=True)
    assert ds.test_x is not None and ds.test_y is not None
    assert ds.test_x.shape == (30, 3, 16, 16) and ds.test_y.dtype == torch.int64
    assert torch.equal(ds.val_x, plain.val_x) and torch.equal(ds.train_x, plain.train_x)  # the same trial data
    assert not torch.equal(ds.test_x, ds.val_x)  # a third stream, not the validation images again
    assert torch.equal(ds.test_x, make_shapes(30, 16, seed=sources.derive_seed(3, "shapes-test"))[0])
    assert load_dataset(DataSpec(dataset="shapes", image_size=8, train_size=10), test=True).test_y.shape == (2000,)


def test_dataset_to_moves_the_test_split() -> None:
    ds = load_dataset(DataSpec(dataset="shapes", image_size=8, train_size=20, val_size=10), test=True)
    moved = ds.to("meta")
    assert {t.device.type for t in (moved.train_x, moved.val_y, moved.test_x, moved.test_y)} == {"meta"}
    assert moved.split == ds.split
    assert load_dataset(DataSpec(dataset="shapes", image_size=8, train_size=20, val_size=10)).to("meta").test_x is None


def test_check_shapes_is_instant(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("check_data generated images")

    monkeypatch.setattr(sources, "make_shapes", refuse)
    start = time.perf_counter()
    check_data(DataSpec(dataset="shapes", image_size=32))
    assert time.perf_counter() - start < 0.5


# --- digits ---------------------------------------------------------------------------------------------------


def test_digits() -> None:
    pytest.importorskip("sklearn")
    spec = DataSpec(dataset="digits", image_size=16, val_fraction=0.2, seed=1)
    check_data(spec)
    ds = load_dataset(spec)
    assert_well_formed(ds, 16)
    assert ds.classes == tuple(str(i) for i in range(10))
    assert len(ds.train_y) + len(ds.val_y) == 1797
    assert 340 <= len(ds.val_y) <= 380
    assert set(ds.val_y.tolist()) == set(range(10))  # stratified: every class held out
    assert int(ds.train_x.max()) == 255
    assert torch.equal(ds.train_x[:, 0], ds.train_x[:, 2])  # grey in three channels
    again = load_dataset(spec)
    assert torch.equal(again.val_x, ds.val_x)
    other = load_dataset(DataSpec(dataset="digits", image_size=16, seed=2))
    assert not torch.equal(other.val_y, ds.val_y)
    assert ds.test_x is None
    assert ds.split == {
        "validation": "held out from train",
        "val_fraction": 0.2,
        "split_seed": sources.derive_seed(1, "split"),
        "train_images": len(ds.train_y),
        "val_images": len(ds.val_y),
    }
    with pytest.raises(ValueError, match=r"^digits has no test split$"):
        load_dataset(spec, test=True)


def test_digits_caps_are_class_balanced() -> None:
    pytest.importorskip("sklearn")
    ds = load_dataset(DataSpec(dataset="digits", image_size=8, train_size=100, val_size=30))
    assert torch.bincount(ds.train_y, minlength=10).tolist() == [10] * 10
    assert torch.bincount(ds.val_y, minlength=10).tolist() == [3] * 10


def test_digits_without_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn...` raise ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    msg = same_error(DataSpec(dataset="digits"), "digits needs scikit-learn")
    assert msg == "digits needs scikit-learn: pip install 'attnsearch[digits]'"


# --- imagefolder ----------------------------------------------------------------------------------------------


def make_tree(root: Path, classes: tuple[str, ...] = ("ant", "bee", "cat"), per_class: int = 5) -> None:
    gen = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            w, h = 20 + 7 * i, 30 - 3 * i + c
            img = Image.fromarray(gen.integers(0, 256, (h, w, 3), dtype=np.uint8))
            if i == 1:
                img = img.convert("L")
            if i == 2:
                img = img.convert("RGBA")
            ext = ".PNG" if i == 3 else ".png"
            img.save(root / name / f"img{i}{ext}", format="PNG")
        (root / name / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()


def cache_files(root: Path) -> list[Path]:
    return sorted((root / ".attnsearch-cache").glob("*.pt"))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "train"
    make_tree(root)
    return root


def count_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    real = Image.open

    def spy(fp: Any, *args: Any, **kwargs: Any) -> Image.Image:
        opened.append(str(fp))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    return opened


def test_imagefolder_loads_and_splits(tree: Path) -> None:
    ds = load_dataset(DataSpec(dataset="imagefolder", root=str(tree), image_size=16, val_fraction=0.2))
    assert_well_formed(ds, 16)
    assert ds.classes == ("ant", "bee", "cat")
    assert (len(ds.train_y), len(ds.val_y)) == (12, 3)
    assert ds.val_y.sort().values.tolist() == [0, 1, 2]
    assert ds.split["validation"] == "held out from train" and "test_images" not in ds.split
    with pytest.raises(ValueError, match=r"^imagefolder has no test split$"):
        load_dataset(DataSpec(dataset="imagefolder", root=str(tree), image_size=16), test=True)
    again = load_dataset(DataSpec(dataset="imagefolder", root=str(tree), image_size=16, seed=5))
    assert not torch.equal(torch.cat([again.train_x, again.val_x]), torch.cat([ds.train_x, ds.val_x]))


def test_imagefolder_resizes_shorter_side_and_crops_centre(tmp_path: Path) -> None:
    root = tmp_path / "t"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        wide = np.zeros((10, 30, 3), dtype=np.uint8)
        wide[:, 10:20] = 255  # white middle third, black sides that the centre crop removes
        Image.fromarray(wide).save(root / name / "w.png")
        Image.fromarray(wide).save(root / name / "w2.png")
    ds = load_dataset(DataSpec(dataset="imagefolder", root=str(root), image_size=10, val_fraction=0.5))
    assert int(ds.train_x.min()) > 200


def test_imagefolder_with_val_root(tmp_path: Path) -> None:
    make_tree(tmp_path / "train")
    make_tree(tmp_path / "val", per_class=2)
    spec = DataSpec(dataset="imagefolder", root=str(tmp_path / "train"), val_root=str(tmp_path / "val"), image_size=8)
    ds = load_dataset(spec)
    assert (len(ds.train_y), len(ds.val_y)) == (15, 6)
    assert ds.split == {"validation": "val_root", "train_images": 15, "val_images": 6}
    assert cache_files(tmp_path / "train") and cache_files(tmp_path / "val")


def test_imagefolder_second_load_hits_the_cache(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = DataSpec(dataset="imagefolder", root=str(tree), image_size=16)
    first = load_dataset(spec)
    assert len(cache_files(tree)) == 1
    opened = count_opens(monkeypatch)
    second = load_dataset(spec)
    assert opened == []
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.val_x, second.val_x)
    load_dataset(DataSpec(dataset="imagefolder", root=str(tree), image_size=12))  # other size, other entry
    assert len(cache_files(tree)) == 2 and len(opened) == 15


def test_imagefolder_changed_image_changes_the_key(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = DataSpec(dataset="imagefolder", root=str(tree), image_size=16)
    load_dataset(spec)
    (old,) = cache_files(tree)
    target = tree / "bee" / "img0.png"
    Image.new("RGB", (9, 9), (255, 0, 0)).save(target)
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    opened = count_opens(monkeypatch)
    changed = load_dataset(spec)
    (new,) = cache_files(tree)  # the stale entry is replaced
    assert new.name != old.name and len(opened) == 15
    red = torch.tensor([255, 0, 0], dtype=torch.uint8)[:, None, None]
    images = torch.cat([changed.train_x, changed.val_x])
    assert any(torch.equal(img, red.expand(3, 16, 16)) for img in images)


def test_imagefolder_cache_is_data_only(tree: Path, tmp_path: Path) -> None:
    spec = DataSpec(dataset="imagefolder", root=str(tree), image_size=8)
    reference = load_dataset(spec)
    (cache,) = cache_files(tree)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (os.mkdir, (str(marker),))

    torch.save({"key": "x", "x": Evil()}, cache)
    evil_bytes = cache.read_bytes()
    with pytest.warns(UserWarning, match="unreadable image cache"):
        rebuilt = load_dataset(spec)
    assert not marker.exists()
    assert torch.equal(rebuilt.train_x, reference.train_x)
    assert torch.load(cache, weights_only=True)["x"].dtype == torch.uint8  # rewritten as plain tensors

    armed = tmp_path / "armed.pt"  # the file was a real threat: a full unpickle runs its code
    armed.write_bytes(evil_bytes)
    torch.load(armed, weights_only=False)
    assert marker.is_dir()


def test_imagefolder_falls_back_to_the_user_cache(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tree / ".attnsearch-cache").write_text("a file where the cache folder would go")  # unwritable, even as root
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    spec = DataSpec(dataset="imagefolder", root=str(tree), image_size=8)
    load_dataset(spec)
    assert len(list((tmp_path / "xdg" / "attnsearch" / "imagefolder").glob("*.pt"))) == 1
    opened = count_opens(monkeypatch)
    load_dataset(spec)
    assert opened == []


def test_imagefolder_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    same_error(DataSpec(dataset="imagefolder", root=str(missing)), re.escape(f"root {missing} does not exist"))
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    same_error(DataSpec(dataset="imagefolder", root=str(afile)), "is not a folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    same_error(DataSpec(dataset="imagefolder", root=str(empty)), re.escape(f"{empty} has no class folders"))
    same_error(DataSpec(dataset="imagefolder"), "imagefolder needs data.root")

    make_tree(tmp_path / "t")
    dog = tmp_path / "t" / "dog"
    dog.mkdir()
    (dog / "readme.txt").write_text("no images here")
    same_error(DataSpec(dataset="imagefolder", root=str(tmp_path / "t")), re.escape(f"class folder {dog} has no"))

    make_tree(tmp_path / "train")
    make_tree(tmp_path / "val", classes=("ant", "bee", "cow"))
    msg = same_error(
        DataSpec(dataset="imagefolder", root=str(tmp_path / "train"), val_root=str(tmp_path / "val")),
        "different class folders",
    )
    assert "'cat'" in msg and "'cow'" in msg
    same_error(
        DataSpec(dataset="imagefolder", root=str(tmp_path / "train"), val_root=str(tmp_path / "nope")),
        "imagefolder val_root .* does not exist",
    )
    same_error(DataSpec(dataset="imagefolder", root=str(tmp_path / "train"), val_fraction=1.0), "val_fraction")


def test_imagefolder_corrupt_image_is_named(tree: Path) -> None:
    bad = tree / "bee" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    spec = DataSpec(dataset="imagefolder", root=str(tree), image_size=8)
    check_data(spec)  # listing only: decoding is load_dataset's job
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png") as err:
        load_dataset(spec)
    assert "\n" not in str(err.value)
    assert cache_files(tree) == []


def test_check_imagefolder_decodes_nothing(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = count_opens(monkeypatch)
    check_data(DataSpec(dataset="imagefolder", root=str(tree)))
    assert opened == []

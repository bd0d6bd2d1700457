"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 read from tiny copies of their published files, written on the spot:
every layout, every refusal (a broken file, a pickle that names code), the download path and the missing-file line."""

from __future__ import annotations

import gzip
import os
import pickle
import re
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets
import torchvision.datasets.utils

import attnsearch.data.published as published
from attnsearch.candidate import DataSpec
from attnsearch.data import Dataset, check_data, load_dataset
from published_files import (
    CIFAR10_NAMES,
    IDX_FILES,
    TEST_TAG,
    TRAIN_TAG,
    cifar_batches,
    cifar_folder,
    idx_bytes,
    mnist_arrays,
    origin,
    same_error,
    write,
    write_cifar_folder,
    write_cifar_tarball,
    write_mnist,
)

pytestmark = pytest.mark.usefixtures("one_thread")
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def load_error(spec: DataSpec, match: str, *, test: bool = False) -> str:
    """check_data passes (names only) and load_dataset raises one line matching ``match``; returns it."""
    check_data(spec)
    with pytest.raises(ValueError, match=match) as err:
        load_dataset(spec, test=test)
    assert "\n" not in str(err.value)
    return str(err.value)


def assert_well_formed(ds: Dataset, size: int) -> None:
    splits = [(ds.train_x, ds.train_y), (ds.val_x, ds.val_y)]
    if ds.test_x is not None and ds.test_y is not None:
        splits.append((ds.test_x, ds.test_y))
    for x, y in splits:
        assert x.dtype == torch.uint8 and x.ndim == 4 and x.shape[1:] == (3, size, size)
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
        assert int(y.min()) >= 0 and int(y.max()) < ds.num_classes


def labels_by_origin(ds: Dataset) -> dict[tuple[int, int], int]:
    pairs = [(ds.train_x, ds.train_y), (ds.val_x, ds.val_y)]
    if ds.test_x is not None and ds.test_y is not None:
        pairs.append((ds.test_x, ds.test_y))
    return {o: int(label) for x, y in pairs for o, label in zip(origin(x), y.tolist(), strict=True)}


# --- MNIST and Fashion-MNIST: the four IDX files ---------------------------------------------------------------

LAYOUTS = {  # where the four files go, relative to root, and which are gzipped
    "root gz": ("", True),
    "root plain": ("", False),
    "root mixed": ("", (True, False, False, True)),
    "raw gz": ("{folder}/raw", True),
    "raw plain": ("{folder}/raw", False),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_layouts(name: str, layout: str, tmp_path: Path) -> None:
    where, gz = LAYOUTS[layout]
    write_mnist(tmp_path / where.format(folder=TORCHVISION_FOLDER[name]), gz=gz)
    spec = DataSpec(dataset=name, root=str(tmp_path), image_size=28)
    check_data(spec)
    ds = load_dataset(spec, test=True)
    assert_well_formed(ds, 28)
    assert ds.classes == tuple(getattr(torchvision.datasets, TORCHVISION_FOLDER[name]).classes)
    assert (len(ds.train_y) + len(ds.val_y), len(ds.test_y)) == (150, 40)
    arrays = mnist_arrays()
    expected = {(TRAIN_TAG, i): int(v) for i, v in enumerate(arrays[IDX_FILES[1]])}
    expected |= {(TEST_TAG, i): int(v) for i, v in enumerate(arrays[IDX_FILES[3]])}
    assert labels_by_origin(ds) == expected  # every image once, with its own label
    first = ds.train_x[0, 0]  # the file's pixels, unchanged at their own size, in every channel
    (tag, index) = origin(ds.train_x[:1])[0]
    assert torch.equal(first, torch.from_numpy(arrays[IDX_FILES[0]][index])) and tag == TRAIN_TAG
    assert torch.equal(ds.train_x[:, 0], ds.train_x[:, 2])


def test_idx_resized_and_capped(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    ds = load_dataset(DataSpec(dataset="mnist", root=str(tmp_path), image_size=32, train_size=50, val_size=20))
    assert_well_formed(ds, 32)
    assert (len(ds.train_y), len(ds.val_y), ds.test_x) == (50, 20, None)
    assert ds.split["train_images"] == 50 and ds.split["val_images"] == 20 and ds.split["test_images"] == 40
    assert torch.bincount(ds.train_y, minlength=10).tolist() == [5] * 10  # class-balanced cap


def test_idx_unzipped_copy_is_preferred(tmp_path: Path) -> None:
    # torchvision's raw folder holds both: the unzipped file is read, a stale .gz beside it is not
    write_mnist(tmp_path, gz=False)
    for name in IDX_FILES:
        write(tmp_path / f"{name}.gz", b"not gzip at all")
    assert load_dataset(DataSpec(dataset="mnist", root=str(tmp_path), image_size=28)).split["test_images"] == 40


def test_torchvision_processed_files(tmp_path: Path) -> None:
    arrays = mnist_arrays()
    processed = tmp_path / "FashionMNIST" / "processed"
    processed.mkdir(parents=True)
    for file, (images, labels) in (("training.pt", IDX_FILES[:2]), ("test.pt", IDX_FILES[2:])):
        pair = (torch.from_numpy(arrays[images]), torch.from_numpy(arrays[labels].astype(np.int64)))
        torch.save(pair, processed / file)
    ds = load_dataset(DataSpec(dataset="fashion_mnist", root=str(tmp_path), image_size=28), test=True)
    assert len(ds.train_y) + len(ds.val_y) == 150 and len(ds.test_y) == 40
    assert {t for t, _ in origin(ds.test_x)} == {TEST_TAG}

    (processed / "test.pt").write_bytes(pickle.dumps({"not": "tensors"}, protocol=2))
    msg = load_error(DataSpec(dataset="fashion_mnist", root=str(tmp_path)), re.escape(f"{processed / 'test.pt'} is"))
    assert "weights_only=True refused it" in msg


# --- broken IDX files: one line naming the file ----------------------------------------------------------------


def spoil(tmp_path: Path, file: str, data: bytes) -> tuple[DataSpec, Path]:
    write_mnist(tmp_path, gz=False)
    path = write(tmp_path / file, data)
    return DataSpec(dataset="fashion_mnist", root=str(tmp_path), image_size=28), path


@pytest.mark.parametrize("test", [False, True])
def test_bad_magic(tmp_path: Path, test: bool) -> None:
    good = idx_bytes(mnist_arrays()[IDX_FILES[2]])
    spec, path = spoil(tmp_path, IDX_FILES[2], bytes([0, 0, 0x0D, 3]) + good[4:])  # 0x0D: floats
    msg = load_error(spec, re.escape(f"{path} is not an IDX file of unsigned bytes"), test=test)
    assert "0000 0d03" not in msg and "00000d03" in msg


def test_wrong_dimensions(tmp_path: Path) -> None:
    labels_as_images = idx_bytes(mnist_arrays()[IDX_FILES[0]])
    spec, path = spoil(tmp_path, IDX_FILES[1], labels_as_images)
    load_error(spec, re.escape(f"{path} has 3 dimensions where 1 were expected"))


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file(tmp_path: Path, gz: bool) -> None:
    good = idx_bytes(mnist_arrays()[IDX_FILES[0]])
    name = IDX_FILES[0] + (".gz" if gz else "")
    write_mnist(tmp_path, gz=False)
    (tmp_path / IDX_FILES[0]).unlink()
    if gz:  # a download cut short: the gzip stream itself ends early
        path = tmp_path / name
        path.write_bytes(gzip.compress(good)[:-500])
        match = re.escape(f"cannot read {path}: ")
    else:
        path = write(tmp_path / name, good[:-100])
        match = re.escape(f"{path} is truncated: {len(good) - 100} bytes where its header")
    load_error(DataSpec(dataset="mnist", root=str(tmp_path), image_size=28), match)


def test_label_count_mismatch(tmp_path: Path) -> None:
    arrays = mnist_arrays()
    spec, path = spoil(tmp_path, IDX_FILES[1], idx_bytes(arrays[IDX_FILES[1]][:-1]))
    load_error(spec, re.escape(f"{path} holds 149 labels but {tmp_path / IDX_FILES[0]} holds 150 images"))
    # the test files are only counted (headers) when the test split is not asked for: a mismatch still shows
    write(path, idx_bytes(arrays[IDX_FILES[1]]))
    test_labels = write(tmp_path / IDX_FILES[3], idx_bytes(arrays[IDX_FILES[3]][:5]))
    load_error(spec, re.escape(f"{test_labels} holds 5 labels but {tmp_path / IDX_FILES[2]} holds 40 images"))


def test_label_out_of_range(tmp_path: Path) -> None:
    labels = mnist_arrays()[IDX_FILES[1]].copy()
    labels[7] = 10
    spec, path = spoil(tmp_path, IDX_FILES[1], idx_bytes(labels))
    load_error(spec, re.escape(f"{path}: a label is outside 0..9"))


# --- CIFAR: the python version, tarball or folder --------------------------------------------------------------


def cifar_expected(batches: dict[str, dict[Any, Any]], hundred: bool) -> dict[tuple[int, int], int]:
    key = "fine_labels" if hundred else "labels"
    expected: dict[tuple[int, int], int] = {}
    for name, batch in batches.items():
        if "meta" in name:
            continue
        b = {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}
        expected |= {tuple(o): label for o, label in zip(origin(torch.from_numpy(b["data"])), b[key], strict=True)}
    return expected


@pytest.mark.parametrize("form", ["tarball", "folder"])
@pytest.mark.parametrize(("name", "hundred", "text_keys"), [("cifar10", False, False), ("cifar100", True, True)])
def test_cifar_forms(name: str, hundred: bool, text_keys: bool, form: str, tmp_path: Path) -> None:
    batches = cifar_batches((150,) if hundred else (30,) * 5, hundred=hundred, text_keys=text_keys)
    (write_cifar_tarball if form == "tarball" else write_cifar_folder)(tmp_path, batches, hundred=hundred)
    spec = DataSpec(dataset=name, root=str(tmp_path), image_size=32, val_fraction=0.25)
    check_data(spec)
    ds = load_dataset(spec, test=True)
    assert_well_formed(ds, 32)
    names = [f"fine{i}" for i in range(100)] if hundred else [n.decode() for n in CIFAR10_NAMES]
    assert ds.classes == tuple(names)
    assert (len(ds.train_y) + len(ds.val_y), len(ds.test_y)) == (150, 40)
    assert labels_by_origin(ds) == cifar_expected(batches, hundred)
    data_key = "data" if text_keys else b"data"
    first_batch = batches["train" if hundred else "data_batch_1"][data_key]
    (tag, index) = origin(ds.train_x[:1])[0]
    assert tag == TRAIN_TAG and index < 30  # (3072,) rows as (3, 32, 32): red, green, blue planes
    assert torch.equal(ds.train_x[0], torch.from_numpy(first_batch[index].reshape(3, 32, 32)))
    assert ds.split["test_images"] == 40 and load_dataset(spec).test_x is None


def test_cifar_tarball_and_folder_agree(tmp_path: Path) -> None:
    batches = cifar_batches()
    write_cifar_tarball(tmp_path / "a", batches)
    write_cifar_folder(tmp_path / "b", batches)
    a = load_dataset(DataSpec(dataset="cifar10", root=str(tmp_path / "a"), image_size=16), test=True)
    b = load_dataset(DataSpec(dataset="cifar10", root=str(tmp_path / "b"), image_size=16), test=True)
    for field in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.split == b.split


class Armed:
    """Unpickling this runs os.mkdir(path): what a malicious batch file could do with os.system."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.path,))


@pytest.mark.parametrize("form", ["tarball", "folder"])
@pytest.mark.parametrize("member", ["data_batch_3", "test_batch", "batches.meta"])
def test_cifar_pickle_naming_code_is_refused(tmp_path: Path, form: str, member: str) -> None:
    marker = tmp_path / "pwned"
    batches: dict[str, Any] = cifar_batches()
    batches[member] = pickle.dumps({b"data": Armed(marker), b"labels": [0]}, protocol=2)
    root = tmp_path / "root"
    (write_cifar_tarball if form == "tarball" else write_cifar_folder)(root, batches)
    where = f"{root / 'cifar-10-python.tar.gz'}:" if form == "tarball" else ""
    where += f"{root / cifar_folder(False) if form == 'folder' else cifar_folder(False)}/{member}"
    msg = load_error(DataSpec(dataset="cifar10", root=str(root)), "refusing to unpickle")
    assert msg == f"refusing to unpickle {os.mkdir.__module__}.mkdir from {where}"
    assert not marker.exists()
    pickle.loads(batches[member])  # the file was a real threat: a plain unpickler runs it
    assert marker.is_dir()


def test_cifar_damaged_files(tmp_path: Path) -> None:
    batches = cifar_batches()
    folder = write_cifar_folder(tmp_path, batches)
    (folder / "data_batch_2").write_bytes(b"")
    msg = load_error(DataSpec(dataset="cifar10", root=str(tmp_path)), "incomplete or corrupted")
    assert str(folder / "data_batch_2") in msg

    wrong_shape = dict(batches["data_batch_2"])
    wrong_shape[b"data"] = wrong_shape[b"data"][:, :1024]
    (folder / "data_batch_2").write_bytes(pickle.dumps(wrong_shape, protocol=2))
    load_error(DataSpec(dataset="cifar10", root=str(tmp_path)), re.escape(f"{folder / 'data_batch_2'}: 'data' must"))

    few_labels = dict(batches["data_batch_2"])
    few_labels[b"labels"] = few_labels[b"labels"][:-1]
    (folder / "data_batch_2").write_bytes(pickle.dumps(few_labels, protocol=2))
    load_error(
        DataSpec(dataset="cifar10", root=str(tmp_path)),
        re.escape(f"{folder / 'data_batch_2'} has 30 images but 29 labels"),
    )


def test_cifar_damaged_tarball(tmp_path: Path) -> None:
    path = write_cifar_tarball(tmp_path, cifar_batches())
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # an interrupted download
    msg = load_error(DataSpec(dataset="cifar10", root=str(tmp_path)), re.escape(str(path)))
    assert "is incomplete or corrupted" in msg  # the archive, or the member it broke off in

    batches = cifar_batches()
    del batches["test_batch"]
    path.unlink()
    write_cifar_tarball(tmp_path, batches)
    load_error(DataSpec(dataset="cifar10", root=str(tmp_path)), re.escape(f"{path} is incomplete: it lacks"))


def test_cifar_tarball_is_read_in_place(tmp_path: Path, snapshot: Any) -> None:
    write_cifar_tarball(tmp_path, cifar_batches())
    before = snapshot(tmp_path)
    load_dataset(DataSpec(dataset="cifar10", root=str(tmp_path)), test=True)
    assert snapshot(tmp_path) == before  # nothing extracted, nothing cached
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz") as tar:
        assert {m.name for m in tar if m.isfile()} == {f"cifar-10-batches-py/{n}" for n in cifar_batches()}


# --- missing files: every layout looked for, from check_data as from load_dataset ------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_missing_idx_names_every_layout(name: str, tmp_path: Path) -> None:
    folder = TORCHVISION_FOLDER[name]
    msg = same_error(DataSpec(dataset=name, root=str(tmp_path)), re.escape(f"{name} not found under {tmp_path}: "))
    for file in IDX_FILES:
        assert f"{file}[.gz]" in msg
    assert f"in {tmp_path} and in {tmp_path / folder / 'raw'}" in msg
    assert str(tmp_path / folder / "processed") in msg and "training.pt" in msg and "test.pt" in msg
    assert msg.endswith("; place them there or set data.download: true")
    assert "has only" not in msg

    write(tmp_path / f"{IDX_FILES[0]}.gz", b"")  # three of four missing in root: said so
    write(tmp_path / folder / "raw" / IDX_FILES[3], b"")
    partial = same_error(DataSpec(dataset=name, root=str(tmp_path)), "not found under")
    assert f"{tmp_path} has only {IDX_FILES[0]}" in partial
    assert f"{tmp_path / folder / 'raw'} has only {IDX_FILES[3]}" in partial

    missing_root = tmp_path / "nowhere"
    same_error(DataSpec(dataset=name, root=str(missing_root)), re.escape(f"{name} not found under {missing_root}"))
    same_error(DataSpec(dataset=name), f"{name} needs data.root")


@pytest.mark.parametrize(("name", "hundred"), [("cifar10", False), ("cifar100", True)])
def test_missing_cifar_names_every_layout(name: str, hundred: bool, tmp_path: Path) -> None:
    msg = same_error(DataSpec(dataset=name, root=str(tmp_path)), re.escape(f"{name} not found under {tmp_path}: "))
    tarball = "cifar-100-python.tar.gz" if hundred else "cifar-10-python.tar.gz"
    assert str(tmp_path / tarball) in msg and str(tmp_path / cifar_folder(hundred)) in msg
    files = ("train", "test", "meta") if hundred else ("data_batch_1", "data_batch_5", "test_batch", "batches.meta")
    assert all(f in msg for f in files)
    assert msg.endswith("; place either there or set data.download: true")

    batches = cifar_batches((150,) if hundred else (30,) * 5, hundred=hundred)
    folder = write_cifar_folder(tmp_path, batches, hundred=hundred)
    (folder / ("meta" if hundred else "batches.meta")).unlink()
    partial = same_error(DataSpec(dataset=name, root=str(tmp_path)), "not found under")
    assert f"{folder} lacks {'meta' if hundred else 'batches.meta'})" in partial


def test_check_data_reads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("check_data read a data file")

    for reader in ("read_idx", "idx_count", "read_cifar"):
        monkeypatch.setattr(published, reader, refuse)
    write_mnist(tmp_path / "m")
    write_cifar_tarball(tmp_path / "c", cifar_batches())
    check_data(DataSpec(dataset="mnist", root=str(tmp_path / "m")))
    check_data(DataSpec(dataset="cifar10", root=str(tmp_path / "c")))
    same_error(DataSpec(dataset="mnist", root=str(tmp_path / "m"), val_fraction=1.0), "val_fraction")


# --- download: torchvision fetches into root, then the copy is read like any other ------------------------------


def test_cifar_download_writes_then_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, str | None, str | None]] = []

    def fake(url: str, root: str, filename: str | None = None, md5: str | None = None, **_: Any) -> None:
        calls.append((url, root, filename, md5))
        write_cifar_tarball(Path(root), cifar_batches())

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", fake)
    root = tmp_path / "new"
    spec = DataSpec(dataset="cifar10", root=str(root), download=True)
    check_data(spec)  # nothing there yet, and that is fine
    ds = load_dataset(spec, test=True)
    cls = torchvision.datasets.CIFAR10
    assert calls == [(cls.url, str(root), cls.filename, cls.tgz_md5)]
    assert len(ds.test_y) == 40 and len(ds.train_y) + len(ds.val_y) == 150
    load_dataset(spec)
    assert len(calls) == 1  # found: never downloaded again


def test_mnist_download_writes_then_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, bool, bool]] = []

    class FakeFashionMNIST:  # torchvision's class, as far as download goes: the four files into root/<Name>/raw
        def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
            calls.append((root, train, download))
            write_mnist(Path(root) / "FashionMNIST" / "raw", gz=False)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    spec = DataSpec(dataset="fashion_mnist", root=str(tmp_path), image_size=28, download=True)
    ds = load_dataset(spec)
    assert calls == [(str(tmp_path), True, True)]
    assert ds.split["test_images"] == 40 and ds.classes[0] == "T-shirt/top"


def test_failed_download_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*_args: object, **_kwargs: object) -> None:
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    msg = load_error(DataSpec(dataset="cifar100", root=str(tmp_path), download=True), "download into")
    assert msg.startswith(f"cifar100: download into {tmp_path} failed (") and "name resolution" in msg

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", lambda *a, **k: None)
    msg = load_error(DataSpec(dataset="cifar100", root=str(tmp_path), download=True), "download finished but")
    assert "cifar100 not found under" in msg

"""Finding and verifying the idx files: every bad source ends in a message saying what to do."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from ei_lightning import fashion_mnist
from ei_lightning.errors import DataSourceError
from ei_lightning.fashion_mnist import FILES, load_fashion_mnist

SHAPES = {
    "train_images": (60_000, 28, 28),
    "train_labels": (60_000,),
    "test_images": (10_000, 28, 28),
    "test_labels": (10_000,),
}


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> None:
    magic = magic if magic is not None else {3: 2051, 1: 2049}[array.ndim]
    header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_dataset(root: Path) -> Path:
    """Idx files with Fashion-MNIST's names and shapes but other pixels (as MNIST would be)."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for key, (name, _) in FILES.items():
        write_idx(raw / name, rng.integers(0, 10, SHAPES[key]))
    return raw


@pytest.fixture(autouse=True)
def no_cache() -> None:
    load_fashion_mnist.cache_clear()


def test_real_data_loads_with_published_shapes() -> None:
    arrays = load_fashion_mnist()

    assert {k: tuple(v.shape) for k, v in arrays.items()} == SHAPES


def test_missing_root_names_the_directory_and_both_ways_to_get_data(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="is not a directory") as err:
        load_fashion_mnist(str(tmp_path / "nowhere"))

    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert "torchvision" in str(err.value)


def test_files_of_another_dataset_fail_the_checksum(tmp_path: Path) -> None:
    fake_dataset(tmp_path)

    with pytest.raises(DataSourceError, match="md5 of the uncompressed content differs"):
        load_fashion_mnist(str(tmp_path))


def test_truncated_file_is_reported_as_truncated(tmp_path: Path) -> None:
    raw = fake_dataset(tmp_path)
    path = raw / FILES["train_images"][0]
    path.write_bytes(path.read_bytes()[:1000])

    with pytest.raises(DataSourceError, match="truncated"):
        load_fashion_mnist(str(tmp_path))


def test_wrong_magic_number_is_not_an_idx_file(tmp_path: Path) -> None:
    raw = fake_dataset(tmp_path)
    write_idx(raw / FILES["train_images"][0], np.zeros((60_000, 28, 28)), magic=1234)

    with pytest.raises(DataSourceError, match="not an idx3 file"):
        load_fashion_mnist(str(tmp_path))


def test_incomplete_directory_lists_the_missing_files(tmp_path: Path) -> None:
    raw = fake_dataset(tmp_path)
    (raw / FILES["test_labels"][0]).unlink()

    with pytest.raises(DataSourceError, match="lacks t10k-labels-idx1-ubyte"):
        load_fashion_mnist(str(tmp_path))


def test_gzipped_copy_in_a_flat_root_is_accepted(tmp_path: Path) -> None:
    for name, _ in FILES.values():
        source = fashion_mnist.DEBIAN_DIR / f"{name}.gz"
        (tmp_path / f"{name}.gz").write_bytes(
            gzip.compress(gzip.decompress(source.read_bytes()), compresslevel=1)
        )

    arrays = load_fashion_mnist(str(tmp_path))

    assert arrays["test_labels"].shape == (10_000,)


def test_no_source_and_no_network_names_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setattr(fashion_mnist, "DOWNLOAD_DIR", tmp_path / "cache")

    def offline(directory: Path) -> None:
        raise DataSourceError(f"download failed. {fashion_mnist.HOW_TO_GET}")

    monkeypatch.setattr(fashion_mnist, "_download", offline)

    with pytest.raises(DataSourceError) as err:
        load_fashion_mnist()

    assert "dataset-fashion-mnist" in str(err.value) and "torchvision" in str(err.value)

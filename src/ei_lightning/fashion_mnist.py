"""Finding, verifying and reading the Fashion-MNIST idx files.

The files are looked for in ``data.root`` (torchvision layout or flat), then in the Debian package
``dataset-fashion-mnist``, then in a previous torchvision download, and only then downloaded with
torchvision. Every file is checked by the md5 of its *uncompressed* bytes, since Debian ships the
same data recompressed.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from ei_lightning.errors import DataSourceError

log = logging.getLogger(__name__)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_DIR = Path.home() / ".cache" / "ei-lightning"
IMAGE_SIDE = 28

# Uncompressed idx files and their md5 sums, as published with the dataset.
FILES = {
    "train_images": ("train-images-idx3-ubyte", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train_labels": ("train-labels-idx1-ubyte", "9018921c3c673c538a1fc5bad174d6f9"),
    "test_images": ("t10k-images-idx3-ubyte", "8181f5470baa50b63fa0f6fddb340f0a"),
    "test_labels": ("t10k-labels-idx1-ubyte", "15d484375f8d13e6eb1aabb0c3f46965"),
}
IDX_MAGIC = {3: 2051, 1: 2049}  # idx3 (images) and idx1 (labels), unsigned bytes

HOW_TO_GET = (
    "Get Fashion-MNIST in one of two ways: on Debian or Ubuntu, "
    "`sudo apt-get install dataset-fashion-mnist` (installs /usr/share/datasets/fashion-mnist); "
    "or let torchvision download it (needs internet access) into ~/.cache/ei-lightning. "
    "Files you already have can be named with data.root=DIR."
)


def _candidates(directory: Path, filename: str) -> list[Path]:
    names = (filename, filename + ".gz")
    dirs = (directory, directory / "FashionMNIST" / "raw")
    return [d / n for d in dirs for n in names]


def _read_bytes(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataSourceError(f"{path} cannot be read as an idx file ({err}).") from err


def _parse_idx(raw: bytes, path: Path, ndim: int) -> np.ndarray:
    """Turn verified idx bytes into an array, checking the header against the payload size."""
    header = np.frombuffer(raw[: 4 + 4 * ndim], dtype=">u4")
    if len(header) < 1 + ndim or header[0] != IDX_MAGIC[ndim]:
        raise DataSourceError(f"{path} is not an idx{ndim} file of unsigned bytes.")
    shape = tuple(int(n) for n in header[1:])
    payload = raw[4 + 4 * ndim :]
    if len(payload) != int(np.prod(shape)):
        raise DataSourceError(f"{path} is truncated: header says {shape}, got {len(payload)} B.")
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def _find(directory: Path, filename: str) -> Path | None:
    return next((p for p in _candidates(directory, filename) if p.is_file()), None)


def _load_file(path: Path, key: str) -> np.ndarray:
    filename, md5 = FILES[key]
    raw = _read_bytes(path)
    array = _parse_idx(raw, path, 3 if key.endswith("images") else 1)
    if hashlib.md5(raw).hexdigest() != md5:
        raise DataSourceError(
            f"{path} does not match Fashion-MNIST's {filename} (md5 of the uncompressed "
            f"content differs: corrupted, or another dataset such as MNIST digits). {HOW_TO_GET}"
        )
    return array


def _load_dir(directory: Path) -> dict[str, np.ndarray] | None:
    """The four arrays from ``directory``, ``None`` if it has none of the files."""
    paths = {key: _find(directory, name) for key, (name, _) in FILES.items()}
    if all(p is None for p in paths.values()):
        return None
    missing = [FILES[k][0] for k, p in paths.items() if p is None]
    if missing:
        raise DataSourceError(f"{directory} lacks {', '.join(missing)}. {HOW_TO_GET}")
    return {key: _load_file(path, key) for key, path in paths.items()}  # type: ignore[arg-type]


def _download(directory: Path) -> None:
    from torchvision.datasets import FashionMNIST

    log.info("Fashion-MNIST not found locally; downloading with torchvision into %s", directory)
    try:
        for train in (True, False):
            FashionMNIST(str(directory), train=train, download=True)
    except Exception as err:  # any network or server failure means the same thing to the user
        reason = " ".join(str(err).split())  # one paragraph: torchvision's message spans lines
        raise DataSourceError(
            f"Fashion-MNIST was not found and torchvision could not download it ({reason}). "
            f"{HOW_TO_GET}"
        ) from err


@functools.lru_cache(maxsize=4)
def load_fashion_mnist(root: str | None = None) -> dict[str, torch.Tensor]:
    """The four Fashion-MNIST arrays as uint8 tensors, from the first source that has them.

    Cached per process, so the jobs of a sweep in one process read and verify the files once.

    Raises:
        DataSourceError: ``root`` is missing or holds bad files, or no source has the data.
    """
    if root is not None:
        directory = Path(root).expanduser()
        if not directory.is_dir():
            raise DataSourceError(f"data.root={root} is not a directory. {HOW_TO_GET}")
        arrays = _load_dir(directory)
        if arrays is None:
            raise DataSourceError(
                f"data.root={root} holds no Fashion-MNIST idx files. {HOW_TO_GET}"
            )
        return _to_tensors(arrays, directory)

    for directory in (DEBIAN_DIR, DOWNLOAD_DIR):
        arrays = _load_dir(directory)
        if arrays is not None:
            return _to_tensors(arrays, directory)

    _download(DOWNLOAD_DIR)
    arrays = _load_dir(DOWNLOAD_DIR)
    if arrays is None:
        raise DataSourceError(f"torchvision left no idx files in {DOWNLOAD_DIR}. {HOW_TO_GET}")
    return _to_tensors(arrays, DOWNLOAD_DIR)


def _to_tensors(arrays: dict[str, np.ndarray], directory: Path) -> dict[str, torch.Tensor]:
    log.info("Fashion-MNIST read and verified from %s", directory)
    return {key: torch.from_numpy(array.copy()) for key, array in arrays.items()}

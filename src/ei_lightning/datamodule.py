"""Fashion-MNIST and its shuffled twins, held as tensors on the training device.

The whole dataset is 47 MB of bytes, so it lives on the device as one tensor and batches are cut
by index: no per-sample Dataset, no worker processes, no per-step host-to-device copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import lightning as L
import torch

from ei_lightning.errors import ConfigError
from ei_lightning.fashion_mnist import IMAGE_SIDE, load_fashion_mnist

log = logging.getLogger(__name__)

N_PIXELS = IMAGE_SIDE * IMAGE_SIDE
N_TRAIN_FULL = 60_000
N_CLASSES = 10
SHUFFLES = (None, "pixels", "labels")


def pixel_permutation(seed: int) -> torch.Tensor:
    """The fixed pixel order of the shuffled task; a function of ``seed`` alone."""
    return torch.randperm(N_PIXELS, generator=torch.Generator().manual_seed(seed))


def label_derangement(seed: int) -> torch.Tensor:
    """A fixed relabelling of the 10 classes that leaves no class on its own label.

    Drawn from ``seed`` alone: candidates are drawn in turn from one generator until one has no
    fixed point, so the result is the same for every model and run seed.
    """
    generator = torch.Generator().manual_seed(seed)
    while True:
        candidate = torch.randperm(N_CLASSES, generator=generator)
        if not (candidate == torch.arange(N_CLASSES)).any():
            return candidate


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Batch boundaries covering all ``n`` samples, never leaving a final batch of one.

    BatchNorm cannot normalise a single sample in training, and dropping it would lose data
    silently, so a lone last sample joins the batch before it.
    """
    bounds = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
        log.info(
            "%d samples in batches of %d: the last sample joins the batch before", n, batch_size
        )
    return bounds


class TensorBatches:
    """Iterates ``(images, labels)`` batches cut from tensors already on their device.

    Images stay uint8 until a batch is cut, then become floats in [0, 1]. With ``seed`` set the
    order is reshuffled each pass from ``(seed, epoch)``, where ``epoch`` comes from
    ``epoch_of`` (the trainer's epoch) when given, so a resumed run sees the same batches as an
    uninterrupted one.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        seed: int | None = None,
        epoch_of: Callable[[], int] | None = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.bounds = batch_bounds(len(labels), batch_size)
        self.seed = seed
        self.epoch_of = epoch_of
        self.passes = 0

    def __len__(self) -> int:
        return len(self.bounds)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = None
        if self.seed is not None:
            epoch = self.epoch_of() if self.epoch_of is not None else self.passes
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(len(self.labels), generator=generator)
            order = order.to(self.labels.device)
            self.passes += 1

        for start, stop in self.bounds:
            index = slice(start, stop) if order is None else order[start:stop]
            yield self.images[index].float().div_(255.0), self.labels[index]


class FashionMNISTDataModule(L.LightningDataModule):
    """Train/validation/test splits of Fashion-MNIST, optionally with a fixed shuffle.

    Args:
        name: label of the task in results (``fmnist``, ``shuffled``).
        shuffle: ``None`` for the original task; ``"pixels"`` for one fixed permutation of the
            784 pixels, identical in every split; ``"labels"`` for one fixed relabelling of the
            classes with no class left in place (the images stay). Both are drawn from
            ``permutation_seed``.
        root: directory with the idx files; ``None`` searches the default places.
        batch_size: training batch size.
        eval_batch_size: batch size for validation and test, which do not depend on it.
        val_size: images held out of the 60k training set for validation.
        split_seed: seed of the train/validation split, independent of the run's seed so every
            run validates on the same images.
        permutation_seed: seed of the shuffle, shared by every model and run seed.
        seed: seed of the training batch order.
    """

    def __init__(
        self,
        name: str = "fmnist",
        shuffle: str | None = None,
        root: str | None = None,
        batch_size: int = 256,
        eval_batch_size: int = 2000,
        val_size: int = 10_000,
        split_seed: int = 0,
        permutation_seed: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_data_args(name, shuffle, batch_size, eval_batch_size, val_size)
        for key, value in (("split_seed", split_seed), ("permutation_seed", permutation_seed)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"data.{key}={value!r} must be a non-negative integer")
        self.name = name
        self.shuffle = shuffle
        self.root = root
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_size = val_size
        self.split_seed = split_seed
        self.permutation_seed = permutation_seed
        self.seed = seed
        self.permutation = pixel_permutation(permutation_seed) if shuffle == "pixels" else None
        self.relabel = label_derangement(permutation_seed) if shuffle == "labels" else None
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.split_index: dict[str, torch.Tensor] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        raw = load_fashion_mnist(self.root)
        order = torch.randperm(
            N_TRAIN_FULL, generator=torch.Generator().manual_seed(self.split_seed)
        )
        self.split_index = {"val": order[: self.val_size], "train": order[self.val_size :]}
        train_index, val_index = self.split_index["train"], self.split_index["val"]
        train_images, train_labels = raw["train_images"], self._labels(raw["train_labels"])
        self.splits = {
            "train": (self._images(train_images[train_index]), train_labels[train_index]),
            "val": (self._images(train_images[val_index]), train_labels[val_index]),
            "test": (self._images(raw["test_images"]), self._labels(raw["test_labels"])),
        }

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        # (n, 28, 28) -> (n, 784), permuted once here so no training step pays for it
        flat = images.reshape(len(images), N_PIXELS)
        return flat[:, self.permutation] if self.permutation is not None else flat.contiguous()

    def _labels(self, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.long()
        return self.relabel[labels] if self.relabel is not None else labels

    def _on_device(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.splits[split]
        device = self.trainer.strategy.root_device if self.trainer is not None else images.device
        if images.device != device:
            images, labels = images.to(device), labels.to(device)
            self.splits[split] = (images, labels)
        return images, labels

    def train_dataloader(self) -> TensorBatches:
        epoch_of = (lambda: self.trainer.current_epoch) if self.trainer is not None else None
        return TensorBatches(*self._on_device("train"), self.batch_size, self.seed, epoch_of)

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(*self._on_device("val"), self.eval_batch_size)

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(*self._on_device("test"), self.eval_batch_size)


def check_data_args(
    name: str, shuffle: str | None, batch_size: int, eval_batch_size: int, val_size: int
) -> None:
    """Reject data settings that cannot work, naming the accepted values."""
    if shuffle not in SHUFFLES:
        raise ConfigError(f"data.shuffle={shuffle!r} is not supported; use one of {SHUFFLES}")
    if name == "fmnist" and shuffle is not None:
        raise ConfigError(
            f"data=fmnist is the original task and takes no data.shuffle={shuffle!r}; "
            f"use data=shuffled data.shuffle={shuffle}"
        )
    if name == "shuffled" and shuffle is None:
        raise ConfigError("data=shuffled needs data.shuffle=pixels or data.shuffle=labels")
    # BatchNorm needs two samples to normalise a training batch
    for key, value, least in (
        ("batch_size", batch_size, 2),
        ("eval_batch_size", eval_batch_size, 1),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"data.{key}={value!r} must be an integer of at least {least}")
    if not isinstance(val_size, int) or not 0 < val_size < N_TRAIN_FULL:
        raise ConfigError(f"data.val_size={val_size!r} must be between 1 and {N_TRAIN_FULL - 1}")

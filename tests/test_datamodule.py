"""Splits, the pixel permutation, and the batches cut from the in-memory tensors."""

from __future__ import annotations

import pytest
import torch

from ei_lightning.datamodule import FashionMNISTDataModule, TensorBatches, batch_bounds


@pytest.fixture(scope="module")
def original() -> FashionMNISTDataModule:
    data = FashionMNISTDataModule(name="fmnist", seed=0)
    data.setup()
    return data


@pytest.fixture(scope="module")
def shuffled() -> FashionMNISTDataModule:
    data = FashionMNISTDataModule(name="shuffled", shuffle="pixels", seed=3)
    data.setup()
    return data


def test_splits_have_the_published_sizes_and_no_overlap(original: FashionMNISTDataModule) -> None:
    sizes = {split: len(labels) for split, (_, labels) in original.splits.items()}
    train, val = original.split_index["train"], original.split_index["val"]

    assert sizes == {"train": 50_000, "val": 10_000, "test": 10_000}
    assert len(set(train.tolist()) | set(val.tolist())) == 60_000


def test_images_are_flat_bytes_and_labels_cover_ten_classes(
    original: FashionMNISTDataModule,
) -> None:
    images, labels = original.splits["train"]

    assert images.shape == (50_000, 784) and images.dtype == torch.uint8
    assert set(labels.unique().tolist()) == set(range(10))


def test_split_does_not_depend_on_the_run_seed(original: FashionMNISTDataModule) -> None:
    other = FashionMNISTDataModule(seed=7)
    other.setup()

    assert torch.equal(other.split_index["val"], original.split_index["val"])


def test_pixel_permutation_is_a_true_permutation_shared_by_all_runs(
    shuffled: FashionMNISTDataModule,
) -> None:
    other_seed = FashionMNISTDataModule(name="shuffled", shuffle="pixels", seed=11)

    assert torch.equal(shuffled.permutation.sort().values, torch.arange(784))
    assert not torch.equal(shuffled.permutation, torch.arange(784))
    assert torch.equal(other_seed.permutation, shuffled.permutation)


def test_permutation_seed_picks_another_permutation(shuffled: FashionMNISTDataModule) -> None:
    other = FashionMNISTDataModule(name="shuffled", shuffle="pixels", permutation_seed=1)

    assert not torch.equal(other.permutation, shuffled.permutation)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_undoing_the_permutation_restores_the_original_images(
    original: FashionMNISTDataModule, shuffled: FashionMNISTDataModule, split: str
) -> None:
    inverse = torch.argsort(shuffled.permutation)
    permuted, permuted_labels = shuffled.splits[split]
    images, labels = original.splits[split]

    assert torch.equal(permuted[:, inverse], images)
    assert torch.equal(permuted_labels, labels)
    assert not torch.equal(permuted, images)


@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (10, 5), (9, 4), (1, 4), (50_000, 256)])
def test_batches_cover_every_sample_once_and_never_leave_one_alone(
    n: int, batch_size: int
) -> None:
    bounds = batch_bounds(n, batch_size)
    covered = [i for start, stop in bounds for i in range(start, stop)]

    assert covered == list(range(n))
    assert n == 1 or all(stop - start > 1 for start, stop in bounds)


def test_a_lone_last_sample_joins_the_previous_batch(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO"):
        bounds = batch_bounds(513, 256)

    assert bounds == [(0, 256), (256, 513)]
    assert "last sample joins" in caplog.text


def test_training_order_is_reproducible_and_changes_each_epoch() -> None:
    images = torch.arange(100, dtype=torch.uint8).reshape(100, 1)
    labels = torch.arange(100)

    def order(seed: int, epoch: int) -> list[int]:
        batches = TensorBatches(images, labels, 16, seed=seed, epoch_of=lambda: epoch)
        return torch.cat([y for _, y in batches]).tolist()

    assert order(0, 3) == order(0, 3)
    assert order(0, 3) != order(0, 4)
    assert order(0, 3) != order(1, 3)
    assert sorted(order(0, 3)) == list(range(100))


def test_batches_are_floats_in_the_unit_interval() -> None:
    images = torch.tensor([[0, 255], [51, 102]], dtype=torch.uint8)

    ((x, _),) = TensorBatches(images, torch.zeros(2, dtype=torch.long), 2)

    assert torch.allclose(x, torch.tensor([[0.0, 1.0], [0.2, 0.4]]))

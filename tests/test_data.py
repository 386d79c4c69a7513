"""Dataset readers (on small files in the standard formats written here), splits, digits, device batches."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from rdnas import data

SPLITS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nb201_splits"


def write_pickle(path, obj):
    with open(path, "wb") as handle:
        pickle.dump(obj, handle)


def fake_rows(rng, n, side):
    return rng.integers(0, 256, size=(n, 3 * side * side), dtype=np.uint8)


def test_cifar10_folder(tmp_path):
    rng = np.random.default_rng(0)
    rows = {}
    for k in range(1, 6):
        rows[k] = fake_rows(rng, 4, 32)
        write_pickle(tmp_path / f"data_batch_{k}", {"data": rows[k], "labels": [k, 0, 1, 9]})
    write_pickle(tmp_path / "test_batch", {"data": fake_rows(rng, 3, 32), "labels": [2, 3, 4]})
    train = data.read_cifar(tmp_path, train=True)
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.tolist()[:4] == [1, 0, 1, 9]
    # Rows are channel-major: the first 1024 bytes are the red plane.
    np.testing.assert_array_equal(train.images[0, 0].numpy().reshape(-1), rows[1][0, :1024])
    np.testing.assert_array_equal(train.images[0, 2].numpy().reshape(-1), rows[1][0, 2048:])
    assert len(data.read_cifar(tmp_path, train=False)) == 3


def test_cifar100_uses_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    write_pickle(tmp_path / "train", {"data": fake_rows(rng, 5, 32), "fine_labels": [99, 0, 5, 7, 3],
                                      "coarse_labels": [0] * 5})
    train = data.read_cifar(tmp_path, train=True, num_classes=100)
    assert train.labels.tolist() == [99, 0, 5, 7, 3] and train.num_classes == 100


def test_imagenet16_keeps_the_first_120_classes(tmp_path):
    rng = np.random.default_rng(2)
    for k in range(1, 11):
        write_pickle(tmp_path / f"train_data_batch_{k}", {"data": fake_rows(rng, 3, 16), "labels": [1, 120, 121]})
    train = data.read_imagenet16(tmp_path, train=True)
    assert train.images.shape == (20, 3, 16, 16)
    assert set(train.labels.tolist()) == {0, 119}


def test_split_file_and_subset(tmp_path):
    path = tmp_path / "split.txt"
    path.write_text(json.dumps({"train": ["int", ["2", "0"]], "valid": ["int", ["1"]]}))
    split = data.read_split(path)
    assert split["train"].tolist() == [2, 0] and split["valid"].tolist() == [1]
    images = data.ImageSet(torch.arange(3, dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 3, 2, 2).contiguous(),
                           torch.tensor([5, 6, 7]), 10, "toy")
    subset = images.subset(split["train"], "toy-train")
    assert subset.labels.tolist() == [7, 5] and subset.name == "toy-train"


@pytest.mark.skipif(not SPLITS.exists(), reason=f"NB201 split files not found at {SPLITS}")
def test_official_cifar_split():
    split = data.read_split(SPLITS / "cifar-split.txt")
    assert len(split["train"]) == len(split["valid"]) == 25000
    assert torch.equal(torch.sort(torch.cat([split["train"], split["valid"]])).values, torch.arange(50000))


def test_digits():
    digits = data.load_digits()
    assert digits.images.shape == (1797, 1, 8, 8) and digits.num_classes == 10
    assert digits.images.max() == 255
    resized = data.load_digits(side=32, channels=3)
    assert resized.images.shape == (1797, 3, 32, 32)
    assert torch.equal(resized.images[:, 0], resized.images[:, 2])


def test_device_batches_cover_the_data_once_per_epoch():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 4, 4).contiguous()
    dataset = data.ImageSet(images, torch.arange(10), 10, "toy")
    batches = data.DeviceBatches(dataset, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert len(batches) == 3
    seen = torch.cat([labels for _, labels in batches])
    assert sorted(seen.tolist()) == list(range(10))
    for x, labels in batches:  # no augmentation: image value = label / 255
        torch.testing.assert_close(x[:, 0, 0, 0], labels.float() / 255)
    assert len(data.DeviceBatches(dataset, batch_size=4, drop_last=True)) == 2


def test_augmentation_crops_and_flips_with_zero_padding():
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4) * 10
    dataset = data.ImageSet(image.expand(64, 1, 4, 4).contiguous(), torch.zeros(64, dtype=torch.long), 1, "toy")
    batches = data.DeviceBatches(dataset, batch_size=64, augment=True, padding=1,
                                 generator=torch.Generator().manual_seed(1))
    x, _ = next(iter(batches))
    original = image.float() / 255
    padded = torch.nn.functional.pad(original, (1, 1, 1, 1))[0, 0]
    windows = {tuple(padded[r:r + 4, c:c + 4].flatten().tolist()) for r in range(3) for c in range(3)}
    windows |= {tuple(padded[r:r + 4, c:c + 4].flip(-1).flatten().tolist()) for r in range(3) for c in range(3)}
    for sample in x:
        assert tuple(sample[0].flatten().tolist()) in windows
    assert len({tuple(s.flatten().tolist()) for s in x}) > 4  # not the same crop every time


def test_normalisation():
    dataset = data.ImageSet(torch.full((2, 3, 2, 2), 255, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), 1, "t")
    x, _ = next(iter(data.DeviceBatches(dataset, 2, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))))
    assert x[0, :, 0, 0].tolist() == [2.0, 1.0, 0.5]


class TestErrors:
    def test_missing_file(self, tmp_path):
        with pytest.raises(data.DatasetError, match=r"missing dataset file .*data_batch_1"):
            data.read_cifar(tmp_path)

    def test_not_a_pickle(self, tmp_path):
        (tmp_path / "test_batch").write_bytes(b"not a pickle")
        with pytest.raises(data.DatasetError, match=r"test_batch is not a readable Python pickle"):
            data.read_cifar(tmp_path, train=False)

    def test_wrong_row_size(self, tmp_path):
        write_pickle(tmp_path / "test_batch", {"data": np.zeros((2, 100), dtype=np.uint8), "labels": [0, 1]})
        with pytest.raises(data.DatasetError, match=r"expected 'data' of shape \[N, 3072\], got \[2, 100\]"):
            data.read_cifar(tmp_path, train=False)

    def test_bad_split(self, tmp_path):
        (tmp_path / "split.txt").write_text("{")
        with pytest.raises(data.DatasetError, match=r"split.txt: not an NB201 split file"):
            data.read_split(tmp_path / "split.txt")

    def test_bad_normalisation(self):
        dataset = data.ImageSet(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.zeros(1, dtype=torch.long), 1, "t")
        with pytest.raises(ValueError, match=r"mean and std need 3 values, got 1 and 1"):
            data.DeviceBatches(dataset, 1, mean=(0.5,), std=(0.5,))

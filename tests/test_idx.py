"""The idx reader (raw and gzipped) and Fashion-MNIST on tiny files written here; the real Debian folder if present."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from rdnas.data.datasets import FASHION_MNIST_DIR, DatasetError, read_fashion_mnist, read_idx


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """``array`` in the idx format: 0x0000, type code, number of dimensions, big-endian sizes, big-endian data."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write(path: Path, payload: bytes) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)
    return path


def write_mnist(folder: Path, prefix: str, n: int, gz: bool, seed: int = 0, labels=None):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8) if labels is None else np.asarray(labels, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write(folder / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(images, 0x08))
    write(folder / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(labels, 0x08))
    return images, labels


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("code", [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E])
def test_read_idx_round_trips_every_type_code(tmp_path, gz, code):
    rng = np.random.default_rng(code)
    array = rng.integers(-100, 100, size=(3, 4, 5)) if code != 0x08 else rng.integers(0, 256, size=(3, 4, 5))
    path = write(tmp_path / ("a.idx3.gz" if gz else "a.idx3"), idx_bytes(array, code))
    result = read_idx(path)
    expected_dtype = {0x08: torch.uint8, 0x09: torch.int8, 0x0B: torch.int16, 0x0C: torch.int32,
                      0x0D: torch.float32, 0x0E: torch.float64}[code]
    assert result.dtype == expected_dtype and result.shape == (3, 4, 5)
    np.testing.assert_array_equal(result.numpy(), array)


def test_read_idx_reads_a_one_dimensional_label_file(tmp_path):
    path = write(tmp_path / "labels-idx1-ubyte", idx_bytes(np.array([3, 1, 4, 1, 5]), 0x08))
    assert read_idx(path).tolist() == [3, 1, 4, 1, 5]


def test_read_idx_rejects_a_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"read_idx: missing file .*nothing-here"):
        read_idx(tmp_path / "nothing-here")


def test_read_idx_rejects_a_bad_magic_number(tmp_path):
    path = write(tmp_path / "bad", b"\x01\x02\x08\x01" + struct.pack(">I", 2) + b"\x00\x00")
    with pytest.raises(DatasetError, match=r"read_idx: .*bad has magic number 0x01020801, expected an idx file"):
        read_idx(path)


def test_read_idx_rejects_an_unknown_type_code(tmp_path):
    path = write(tmp_path / "code", b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"\x00\x00")
    with pytest.raises(DatasetError, match=r"read_idx: .*code has type code 0x07, expected one of 0x08"):
        read_idx(path)


def test_read_idx_rejects_zero_dimensions(tmp_path):
    path = write(tmp_path / "zero", b"\x00\x00\x08\x00")
    with pytest.raises(DatasetError, match=r"declares 0 dimensions, expected at least 1"):
        read_idx(path)


def test_read_idx_rejects_a_short_header(tmp_path):
    with pytest.raises(DatasetError, match=r"has 2 bytes, expected at least a 4-byte idx header"):
        read_idx(write(tmp_path / "tiny", b"\x00\x00"))
    with pytest.raises(DatasetError, match=r"has 8 bytes, expected a 16-byte header for 3 dimensions"):
        read_idx(write(tmp_path / "short", b"\x00\x00\x08\x03" + struct.pack(">I", 2)))


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_rejects_a_truncated_file(tmp_path, gz):
    payload = idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8), 0x08)
    path = write(tmp_path / ("images.gz" if gz else "images"), payload[:-5])
    with pytest.raises(DatasetError, match=r"read_idx: .*images(\.gz)? has 3147 bytes, expected 3152 for "
                                           r"dimensions \[4, 28, 28\] of unsigned byte"):
        read_idx(path)


def test_read_idx_rejects_trailing_bytes(tmp_path):
    path = write(tmp_path / "long", idx_bytes(np.zeros(3, dtype=np.uint8), 0x08) + b"\x00")
    with pytest.raises(DatasetError, match=r"has 12 bytes, expected 11 for dimensions \[3\]"):
        read_idx(path)


def test_read_idx_rejects_a_corrupt_gzip_stream(tmp_path):
    full = tmp_path / "full.gz"
    write(full, idx_bytes(np.zeros((50, 28, 28), dtype=np.uint8), 0x08))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(full.read_bytes()[:20])
    with pytest.raises(DatasetError, match=r"read_idx: .*cut.gz is not a readable gzip file"):
        read_idx(cut)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_fashion_mnist_returns_images_n_1_28_28_and_labels(tmp_path, gz):
    train_images, train_labels = write_mnist(tmp_path, "train", 7, gz, seed=1)
    test_images, test_labels = write_mnist(tmp_path, "t10k", 3, gz, seed=2)
    train = read_fashion_mnist(tmp_path, train=True)
    assert train.images.shape == (7, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.num_classes == 10 and train.name == "fashion-mnist-train"
    np.testing.assert_array_equal(train.images[:, 0].numpy(), train_images)
    assert train.labels.tolist() == train_labels.tolist()
    test = read_fashion_mnist(tmp_path, train=False)
    assert len(test) == 3 and test.name == "fashion-mnist-t10k"
    np.testing.assert_array_equal(test.images[:, 0].numpy(), test_images)
    assert test.labels.tolist() == test_labels.tolist()


def test_read_fashion_mnist_prefers_the_raw_file_over_the_gzipped_one(tmp_path):
    raw_images, _ = write_mnist(tmp_path, "train", 2, gz=False, seed=3)
    write_mnist(tmp_path, "train", 5, gz=True, seed=4)
    np.testing.assert_array_equal(read_fashion_mnist(tmp_path).images[:, 0].numpy(), raw_images)


def test_read_fashion_mnist_rejects_a_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"read_fashion_mnist: folder .*absent does not exist"):
        read_fashion_mnist(tmp_path / "absent")


def test_read_fashion_mnist_rejects_a_missing_file(tmp_path):
    write_mnist(tmp_path, "train", 2, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match=r"read_fashion_mnist: missing .*train-labels-idx1-ubyte \(or "
                                           r"train-labels-idx1-ubyte.gz\)"):
        read_fashion_mnist(tmp_path)


def test_read_fashion_mnist_rejects_different_image_and_label_counts(tmp_path):
    write_mnist(tmp_path, "train", 4, gz=True)
    write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(3, dtype=np.uint8), 0x08))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.gz has 4 images but .*train-labels-idx1-ubyte"
                                           r".gz has 3 labels, expected the same count"):
        read_fashion_mnist(tmp_path)


def test_read_fashion_mnist_rejects_images_of_the_wrong_size(tmp_path):
    write_mnist(tmp_path, "train", 2, gz=False)
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((2, 32, 32), dtype=np.uint8), 0x08))
    with pytest.raises(DatasetError, match=r"holds torch.uint8 \[2, 32, 32\], expected uint8 \[N, 28, 28\]"):
        read_fashion_mnist(tmp_path)


def test_read_fashion_mnist_rejects_labels_that_are_not_bytes(tmp_path):
    write_mnist(tmp_path, "train", 2, gz=False)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(2), 0x0C))
    with pytest.raises(DatasetError, match=r"holds torch.int32 \[2\], expected uint8 \[N\]"):
        read_fashion_mnist(tmp_path)


def test_read_fashion_mnist_rejects_a_label_outside_0_to_9(tmp_path):
    write_mnist(tmp_path, "train", 3, gz=False, labels=[0, 12, 3])
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte has label 12, expected 0..9"):
        read_fashion_mnist(tmp_path)


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(),
                    reason=f"Fashion-MNIST is not installed at {FASHION_MNIST_DIR} (Debian: dataset-fashion-mnist)")
def test_read_fashion_mnist_reads_the_installed_dataset():
    train = read_fashion_mnist(FASHION_MNIST_DIR, train=True)
    test = read_fashion_mnist(FASHION_MNIST_DIR, train=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    for split in (train, test):
        assert split.labels.min() == 0 and split.labels.max() == 9
        # Fashion-MNIST is balanced: 6,000 / 1,000 images per class.
        assert torch.bincount(split.labels).tolist() == [len(split) // 10] * 10
        assert split.images.float().std() > 10  # real pictures, not zeros

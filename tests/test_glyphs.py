"""rdnas.data.glyphs: the synthetic glyph dataset is deterministic, uses only matplotlib's fonts, and round-trips
through an image folder; rdnas.kd.data: task splits of every image source."""

import os

import pytest
import torch

from rdnas.data.datasets import FASHION_MNIST_DIR, DatasetError
from rdnas.data.glyphs import TEXT_FONTS, font_dir, fonts_for, render_glyphs
from rdnas.kd.data import load_task_data, read_image_folder, write_image_folder


def test_the_same_seed_gives_identical_bytes():
    first = render_glyphs("AB+7", 5, side=16, seed=3)
    second = render_glyphs("AB+7", 5, side=16, seed=3)
    assert first.images.dtype == torch.uint8 and first.images.shape == (20, 1, 16, 16)
    assert first.images.numpy().tobytes() == second.images.numpy().tobytes()
    assert torch.equal(first.labels, torch.arange(4).repeat_interleave(5))


def test_different_seeds_give_different_images_and_every_image_differs():
    a = render_glyphs("AB", 6, side=16, seed=0).images
    b = render_glyphs("AB", 6, side=16, seed=1).images
    assert all(not torch.equal(x, y) for x, y in zip(a, b))
    flat = a.flatten(1)
    assert len({bytes(row.numpy()) for row in flat}) == len(flat)


def test_a_class_does_not_depend_on_the_others_or_on_the_count():
    small = render_glyphs("QZ", 3, side=12, seed=5)
    large = render_glyphs("QZ%", 7, side=12, seed=5)
    assert torch.equal(small.images[:3], large.images[:3])  # class Q, first samples
    assert torch.equal(small.images[3:6], large.images[7:10])  # class Z


def test_glyphs_are_drawn_and_classes_differ():
    images = render_glyphs("IO", 20, side=16, seed=0, noise=0.0).images.float()
    assert images.amax(dim=(1, 2, 3)).min() > 150  # ink on every image
    assert (images[:20].mean(0) - images[20:].mean(0)).abs().max() > 40  # an I is not an O


def test_fonts_are_matplotlibs_own():
    import matplotlib

    assert font_dir().startswith(matplotlib.get_data_path())
    assert all(os.path.isfile(os.path.join(font_dir(), name)) for name in TEXT_FONTS)
    assert len(fonts_for("A")) == len(TEXT_FONTS)


def test_bad_arguments_are_named():
    with pytest.raises(DatasetError, match="distinct characters"):
        render_glyphs("AA", 2)
    with pytest.raises(DatasetError, match="per_class >= 1"):
        render_glyphs("AB", 0)
    with pytest.raises(DatasetError, match="no font of 1 holds"):
        render_glyphs("\u4e00B", 1, fonts=("cmr10.ttf",))


def test_glyphs_round_trip_through_an_image_folder(tmp_path):
    glyphs = render_glyphs("A/x", 4, side=16, seed=2)
    root = write_image_folder(glyphs, tmp_path / "glyphs", ["A", "/", "x"])
    assert sorted(p.name for p in root.iterdir()) == ["000-A", "001-U+002F", "002-x"]
    back = read_image_folder(root, 16)
    assert back.images.shape == (12, 3, 16, 16)
    assert torch.equal(back.labels, glyphs.labels)
    for channel in range(3):
        assert torch.equal(back.images[:, channel:channel + 1], glyphs.images)
    subset = read_image_folder(root, 8, classes=["002-x", "000-A"])
    assert subset.images.shape == (8, 3, 8, 8) and subset.labels.tolist() == [1] * 4 + [0] * 4
    with pytest.raises(DatasetError, match="has no class folder 'B'"):
        read_image_folder(root, 16, classes=["B"])


def test_a_folder_task_equals_the_glyph_task_it_was_written_from(tmp_path):
    glyphs = render_glyphs("ABC", 11, side=16, seed=0)  # what a glyphs task of 20 + 10 images draws (ceil(30/3)+1 each)
    write_image_folder(glyphs, tmp_path / "g", ["A", "B", "C"])
    direct = load_task_data("glyphs", ["A", "B", "C"], 16, 20, 10, seed=0)
    folder = load_task_data(f"folder:{tmp_path / 'g'}", [], 16, 20, 10, seed=0, channels=1)
    assert folder.class_names == ("000-A", "001-B", "002-C")
    assert torch.equal(direct.train_y, folder.train_y) and torch.equal(direct.valid_y, folder.valid_y)
    assert torch.allclose(direct.train_x, folder.train_x, atol=1e-5)
    assert torch.allclose(direct.valid_x, folder.valid_x, atol=1e-5)


def test_task_splits_are_stratified_disjoint_seeded_and_normalised():
    data = load_task_data("digits", [3, 1, 8], 12, train=31, valid=15, seed=4)
    assert data.train_x.shape == (31, 1, 12, 12) and data.valid_x.shape == (15, 1, 12, 12)
    assert data.train_y.bincount().tolist() == [11, 10, 10] and data.valid_y.bincount().tolist() == [5, 5, 5]
    assert data.class_names == ("3", "1", "8")
    assert abs(float(data.train_x.mean())) < 1e-5 and float(data.train_x.std()) == pytest.approx(1.0, abs=1e-3)
    train_rows = {bytes(x.numpy()) for x in data.train_x}
    assert not train_rows & {bytes(x.numpy()) for x in data.valid_x}
    again = load_task_data("digits", [3, 1, 8], 12, train=31, valid=15, seed=4)
    assert torch.equal(again.train_x, data.train_x)
    other = load_task_data("digits", [3, 1, 8], 12, train=31, valid=15, seed=5)
    assert not torch.equal(other.train_x, data.train_x)
    with pytest.raises(DatasetError, match="asks for"):
        load_task_data("digits", [3, 1], 8, train=300, valid=100)


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                    reason=f"Fashion-MNIST is not installed ({FASHION_MNIST_DIR}; Debian dataset-fashion-mnist)")
def test_a_fashion_mnist_class_subset_task():
    data = load_task_data("fashion_mnist", [9, 0, 4], 16, train=60, valid=30, seed=1, channels=3)
    assert data.train_x.shape == (60, 3, 16, 16) and data.num_classes == 3
    assert data.train_y.bincount().tolist() == [20, 20, 20]

"""rdnas.atomic_file: the one atomic write behind checkpoints, score tables, sidecars, benchmark tables and --out."""

import pytest

from rdnas.atomic_file import atomic_open, prepare_output_file, write_text_atomic


def test_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old\n")
    write_text_atomic(path, "new\n")
    with atomic_open(tmp_path / "blob.bin", "wb") as handle:
        handle.write(b"\x00\x01")
    assert path.read_text() == "new\n" and (tmp_path / "blob.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "table.csv"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_text("finished epoch 3")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_open(path) as handle:
            handle.write("half of epoch 4")
            raise RuntimeError("disk full")
    assert path.read_text() == "finished epoch 3"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_refuses_a_mode_that_is_not_a_fresh_write(tmp_path):
    with pytest.raises(ValueError, match=r"atomic_open: mode must be 'w' or 'wb', got 'a'"):
        with atomic_open(tmp_path / "x", "a"):
            pass


def test_prepare_output_file_creates_the_folder_and_refuses_a_folder(tmp_path):
    assert prepare_output_file(tmp_path / "new" / "top.json", "--out") == tmp_path / "new" / "top.json"
    assert (tmp_path / "new").is_dir() and not (tmp_path / "new" / "top.json").exists()
    with pytest.raises(ValueError, match=r"^--out must be a file path, got the folder .*new$"):
        prepare_output_file(tmp_path / "new", "--out")

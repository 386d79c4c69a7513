"""DaSS's files: the one kinded-file loader behind the teacher, embeddings and model loaders, and the KD benchmark
shipped as package data (written from a finished build folder, read back by rdnas.kd.bench.load_shipped)."""

import pytest
import torch

from rdnas.kd import load_teacher
from rdnas.kd.bench import read_embeddings
from rdnas.kd.files import load_kinded_file
from rdnas.predictors.dass import load_model


@pytest.mark.parametrize("load,what,written_by", [
    (load_teacher, "a teacher file", "rdnas dass teacher"),
    (read_embeddings, "an embeddings file", "rdnas dass bench"),
    (load_model, "a DaSS model file", "rdnas dass fit"),
])
def test_every_dass_loader_refuses_a_wrong_file_naming_it(tmp_path, load, what, written_by):
    torch.save({"kind": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=rf"other.pt is not {what}: its kind is 'something-else', expected "
                       rf"'rdnas-dass-\w+' \(written by {written_by}\)"):
        load(tmp_path / "other.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=rf"list.pt is not {what}: its kind is None"):
        load(tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=rf"junk.pt is not {what} \(cannot be read as a torch file: \w+\)"):
        load(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match=rf"{what.split(' ', 1)[1]} .*missing.pt does not exist"):
        load(tmp_path / "missing.pt")


def test_a_kinded_file_is_read_with_weights_only(tmp_path):
    torch.save({"kind": "k", "values": torch.arange(3)}, tmp_path / "ok.pt")
    assert torch.equal(load_kinded_file(tmp_path / "ok.pt", "k", "a k file")["values"], torch.arange(3))
    torch.save({"kind": "k", "object": __import__("argparse").Namespace(a=1)}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match=r"pickled.pt is not a k file \(cannot be read as a torch file"):
        load_kinded_file(tmp_path / "pickled.pt", "k", "a k file")

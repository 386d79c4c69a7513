"""rdnas.spaces stands at the bottom: its modules import nothing of rdnas outside rdnas.spaces (not even inside a
function, where a hidden import circle would hide), and the cost models that live there agree with the proxies
that measure the same networks layer by layer."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rdnas.spaces
from rdnas.spaces import get_space, nb201

SPACES_DIR = Path(rdnas.spaces.__file__).resolve().parent
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``: top-level, in functions and classes, relative
    ones resolved against rdnas.spaces, and importlib.import_module / __import__ calls with a literal name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = ["rdnas", "spaces"][:max(0, 3 - node.level)]
                module = ".".join(package + ([node.module] if node.module else []))
            else:
                module = node.module
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names if module == "rdnas"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def _outside_spaces(module: str) -> bool:
    return (module == "rdnas" or module.startswith("rdnas.")) and not (
        module == "rdnas.spaces" or module.startswith("rdnas.spaces."))


@pytest.mark.parametrize("path", sorted(SPACES_DIR.glob("*.py")), ids=lambda p: p.name)
def test_space_modules_import_nothing_of_rdnas_outside_rdnas_spaces(path):
    above = [f"{path.name}:{line}: {module}" for line, module in _imported_modules(path) if _outside_spaces(module)]
    assert not above, "rdnas.spaces must not import from above it:\n" + "\n".join(above)


def test_the_import_scan_sees_function_level_and_relative_imports(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text("from rdnas.spaces import base\n"
                      "def cost():\n    from rdnas.proxies import flops\n"
                      "def other():\n    from .. import supernet\n"
                      "def third():\n    import importlib\n    return importlib.import_module('rdnas.train')\n")
    flagged = [module for _, module in _imported_modules(module) if _outside_spaces(module)]
    assert flagged == ["rdnas.proxies", "rdnas", "rdnas.supernet", "rdnas.train"]


def test_using_every_space_loads_no_rdnas_module_outside_rdnas_spaces(tmp_path):
    code = """
import sys, torch
import rdnas
before = {m for m in sys.modules if m.startswith("rdnas")}
from rdnas.spaces import get_space, space_names
generator = torch.Generator().manual_seed(0)
for name in space_names():
    space = get_space(name)
    archs = space.sample(4, generator)
    space.encode(archs), space.mutate(archs, 1, generator), space.key(archs[0]), space.is_trivial(archs)
    space.from_string(space.to_string(archs[0]))
    space.cost(archs)
loaded = {m for m in sys.modules if m.startswith("rdnas.") and m not in before}
print(",".join(sorted(m for m in loaded if not m.startswith("rdnas.spaces"))))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SPACES_DIR.parents[1]), os.environ.get("PYTHONPATH", "")])}
    # cwd: outside the checkout, whose rdnas/ (first on sys.path for `python -c` run there) may hold no built _C
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("options, image_size", [
    (dict(channels=16, cells_per_stage=5, num_classes=10, in_channels=3), 32),
    (dict(channels=8, cells_per_stage=2, num_classes=5, in_channels=1, bn_affine=False), 16),
    (dict(channels=4, cells_per_stage=1, num_classes=3, in_channels=2), 8),
], ids=["benchmark", "small-no-affine", "tiny"])
def test_nb201_cost_model_equals_what_the_params_and_flops_proxies_measure_on_the_supernet(options, image_size):
    from rdnas.proxies import flops, params, scoring_supernet

    archs = nb201.all_archs()[torch.randperm(nb201.NUM_ARCHS, generator=torch.Generator().manual_seed(0))[:64]]
    archs = torch.cat([archs, nb201.SPACE.largest()[None], nb201.SPACE.smallest()[None],
                       torch.zeros(1, nb201.NUM_EDGES, dtype=torch.long)])
    supernet = scoring_supernet(**options)
    cells = [tuple(arch) for arch in archs.tolist()]
    cost = nb201.SPACE.cost(archs, image_size=image_size, **options)
    assert torch.equal(cost["params"], params(supernet, cells))
    assert torch.equal(cost["trainable_params"], cost["params"])
    assert torch.equal(cost["flops"], flops(supernet, cells, image_size=(image_size, image_size)))


def test_nb201_cost_model_reproduces_the_benchmark_table():
    path = DATA / "nb201_gt.csv"
    if not path.exists():
        pytest.skip(f"the NB201 ground-truth table is not at {path}")
    from rdnas.rank import GroundTruth

    table = GroundTruth.load(path)
    for dataset, options in (("cifar10", {}), ("cifar100", dict(num_classes=100)),
                             ("imagenet16_120", dict(num_classes=120, image_size=16))):
        cost = nb201.SPACE.cost(table.archs, **options)
        for name in ("params", "flops"):
            published = torch.from_numpy(table.column(f"{name}_M_{dataset}")).double()
            assert torch.allclose(cost[name] / 1e6, published, rtol=0, atol=6e-7), (dataset, name)


@pytest.mark.parametrize("name, value, message", [
    ("channels", 0, "channels must be a positive int, got 0"),
    ("cells_per_stage", 1.5, "cells_per_stage must be a positive int, got 1.5"),
    ("image_size", 30, "image_size must be a multiple of 4"),
])
def test_nb201_cost_model_names_a_bad_option(name, value, message):
    with pytest.raises(ValueError, match=f"rdnas.spaces.nb201_cost.network_cost: {message}"):
        nb201.SPACE.cost(nb201.SPACE.largest(), **{name: value})


def test_every_registered_space_with_a_cost_model_gives_float64_params_and_flops_per_architecture():
    for name in rdnas.spaces.space_names():
        space = get_space(name)
        archs = space.sample(3, torch.Generator().manual_seed(1))
        try:
            cost = space.cost(archs)
        except NotImplementedError:  # the cost model is optional
            continue
        for key in ("params", "trainable_params", "flops"):
            assert cost[key].dtype == torch.float64 and cost[key].shape == (3,), (name, key)

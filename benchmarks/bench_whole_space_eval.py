"""Whole-space supernet evaluation: the shared path against the per-subnet path, side by side.

The setting of benchmarks/teacher_curve_experiment.py (issue 27): an NB201 supernet of the digits pipeline (C = 8,
N = 1, 8x8 one-channel images, 10 classes) evaluated with BN recalibrated per cell on 4 training batches of 64,
then on 898 validation images in batches of 512 (random images of those shapes here), 32 cells per pass. The cells
are 256 consecutive classes of the 6,461 in plan order (``rdnas.rank.nb201_accuracy.plan_order``), what each
stretch of a whole-space evaluation sees:

  - ``subnets``: ``supernet_accuracy(..., path="subnets")``, every chunk through ``NB201Supernet.forward_subnets``;
  - ``shared``: ``path="shared"`` (rdnas.rank.nb201_accuracy: the stem and first-cell prefixes once per chunk,
    rows side by side as grouped convolutions, BN folded into the weights once recalibrated).

The accuracies are checked equal (within one validation image, float32 rounding) before timing. Per-cell CPU
time (median of 3 calls / cells) is ``extra_info["seconds_per_cell"]``. Run with OMP_NUM_THREADS=1 for the
one-thread setting of the experiment.
"""

import pytest
import torch

from rdnas.minibench import sample_architectures
from rdnas.rank import supernet_accuracy
from rdnas.rank.nb201_accuracy import plan_order
from rdnas.supernet import NB201Supernet

CELLS = 256
VALID_IMAGES = 898
PATHS = ("shared", "subnets")


def evaluation_case(device):
    torch.manual_seed(0)
    supernet = NB201Supernet(channels=8, cells_per_stage=1, num_classes=10, in_channels=1).to(device).eval()
    generator = torch.Generator().manual_seed(1)
    calibration = [(torch.randn(64, 1, 8, 8, generator=generator).to(device),
                    torch.randint(0, 10, (64,), generator=generator).to(device)) for _ in range(4)]
    images = torch.randn(VALID_IMAGES, 1, 8, 8, generator=generator).to(device)
    labels = torch.randint(0, 10, (VALID_IMAGES,), generator=generator).to(device)
    valid = [(images[i:i + 512], labels[i:i + 512]) for i in range(0, VALID_IMAGES, 512)]
    classes = torch.as_tensor(sample_architectures(6461, seed=0))
    archs = classes[plan_order(classes)][3000:3000 + CELLS]

    def evaluate(path):
        return lambda: supernet_accuracy(supernet, archs, valid, calibration_batches=calibration,
                                         subnets_per_pass=32, path=path)

    return evaluate


@pytest.mark.parametrize("path", PATHS)
def test_whole_space_evaluation(device_benchmark, device, path):
    bench = device_benchmark
    bench.group = f"whole-space-eval-{device}-{CELLS}cells"
    labels = {"shared": "shared path (stem, prefixes, grouped rows)", "subnets": "forward_subnets per chunk"}
    bench.extra_info.update(impl=path, label=labels[path], role="candidate" if path == "shared" else "baseline",
                            cells=CELLS)
    evaluate = evaluation_case(device)
    if path == "shared":
        torch.testing.assert_close(evaluate("shared")(), evaluate("subnets")(), rtol=0, atol=1.5 / VALID_IMAGES)
    median = bench(evaluate(path), rounds=3)  # a call takes seconds: 3 timed calls, no warm-up
    if median is not None:
        bench.extra_info["seconds_per_cell"] = median / CELLS

"""ResNet48Supernet.forward_stacked: K subnets in one eval-mode pass (what ranks DaSS's 1,000 students fast) equals
K single forwards."""

import pytest
import torch

from rdnas.spaces import get_space
from rdnas.supernet import build_supernet
from rdnas.supernet.resnet48 import subnet_plan

SPACE = get_space("resnet48")


def _random_supernet(seed, **options):
    supernet = build_supernet(SPACE, 5, 3, **options).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random weights and BN statistics: a fresh BN is the identity and hides mis-slicing
        for name, tensor in supernet.state_dict().items():
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
                tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values * 0.3)
    return supernet.eval()


@pytest.mark.parametrize("seed,options,side", [(0, {"resnet_stem": "small", "width_divisor": 8}, 16),
                                               (1, {"resnet_stem": "imagenet", "width_divisor": 8}, 32),
                                               (2, {"resnet_stem": "small", "width_divisor": 4}, 8)])
def test_stacked_forward_equals_one_forward_per_subnet(seed, options, side):
    supernet = _random_supernet(seed, **options)
    archs = torch.cat([SPACE.sample(9, torch.Generator().manual_seed(seed)), SPACE.largest().unsqueeze(0),
                       SPACE.smallest().unsqueeze(0)])
    x = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    captured = []
    handles = [block.register_forward_hook(lambda module, args, output: captured.append(output))
               for block in supernet.stages[-1]]
    expected_logits, expected_maps = [], []
    with torch.no_grad():
        for arch in archs:
            captured.clear()
            expected_logits.append(supernet(x, arch))
            expected_maps.append(captured[-1])
    for handle in handles:
        handle.remove()
    for max_rows in (4096, 7):  # all subnets in one group; groups of 2 subnets (7 // 3 rows)
        logits, maps, widths = supernet.forward_stacked(x, archs, return_features=True, max_rows=max_rows)
        assert logits.shape == (len(archs), 3, 5) and maps.shape[:2] == (len(archs), 3)
        assert torch.allclose(logits, torch.stack(expected_logits), rtol=1e-9, atol=1e-9)
        for k, arch in enumerate(archs):
            width = subnet_plan(arch, options["width_divisor"]).stage_widths[-1]
            assert int(widths[k]) == width
            assert torch.allclose(maps[k, :, :width], expected_maps[k], rtol=1e-9, atol=1e-9)
            assert not maps[k, :, width:].any()  # zero past the subnet's width
        assert torch.equal(supernet.forward_stacked(x, archs, max_rows=max_rows), logits)


def test_stacked_forward_needs_eval_mode_and_takes_no_subnets():
    supernet = _random_supernet(0, resnet_stem="small", width_divisor=8)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert supernet.forward_stacked(x, SPACE.sample(0, torch.Generator())).shape == (0, 2, 5)
    with pytest.raises(ValueError, match=r"forward_stacked: needs the supernet in eval mode"):
        supernet.train().forward_stacked(x, SPACE.sample(2, torch.Generator()))

"""Weight-sharing supernets with path-sampled and K-subnet forwards, built per space through a registry."""

from rdnas.spaces.nb201 import NB201Options
from rdnas.spaces.resnet48 import ResNet48Options
from rdnas.supernet.base import (SupernetSpec, build_supernet, move_legacy_network_options, network_option_names,
                                 register_supernet, supernet_spec, taking_space_options, unregister_supernet)
from rdnas.supernet.batchnorm import BNStatistics, SubnetBatchNorm
from rdnas.supernet.nb201 import NB201Network, NB201Supernet, SearchCell, cell_plan
from rdnas.supernet.nb201 import check_image_size as _nb201_image_size
from rdnas.supernet.resnet48 import ResNet48Network, ResNet48Supernet
from rdnas.supernet.resnet48 import check_image_size as _resnet48_image_size

register_supernet(SupernetSpec(
    "nb201", NB201Supernet, NB201Options,
    "NAS-Bench-201 macro network (stem, 3 stages of N cells, basic-block reductions)", _nb201_image_size,
    NB201Network))
register_supernet(SupernetSpec(
    "resnet48", ResNet48Supernet, ResNet48Options,
    "ResNet48 elastic supernet (CVPR 2022 NAS Track 1): elastic depth and width, sliced weights",
    _resnet48_image_size, ResNet48Network))

__all__ = ["BNStatistics", "NB201Network", "NB201Supernet", "ResNet48Network", "ResNet48Supernet", "SearchCell",
           "SubnetBatchNorm", "SupernetSpec", "build_supernet", "cell_plan", "move_legacy_network_options",
           "network_option_names", "register_supernet", "supernet_spec", "taking_space_options", "unregister_supernet"]

"""Weight-sharing supernets with path-sampled and K-subnet forwards."""

from rdnas.supernet.nb201 import NB201Network, NB201Supernet, SearchCell, cell_plan
from rdnas.supernet.nb201_ops import BNStatistics

__all__ = ["BNStatistics", "NB201Network", "NB201Supernet", "SearchCell", "cell_plan"]

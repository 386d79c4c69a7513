"""Mini-benchmarks: ground truth rdnas builds itself (stand-alone training of sampled architectures)."""

from rdnas.minibench.build import (Recipe, benchmark_table, build, read_all_runs, read_runs, reliability,
                                   sample_architectures, train_stack, write_table)
from rdnas.minibench.stacked import NetworkStack, StackedNB201

__all__ = ["NetworkStack", "Recipe", "StackedNB201", "benchmark_table", "build", "read_all_runs", "read_runs", "reliability", "sample_architectures",
           "train_stack", "write_table"]

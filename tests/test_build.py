"""How rdnas._C was built, and what a build without CUDA does with CUDA tensors."""

import pytest
import torch

import rdnas
from rdnas import _extension


def test_built_with_cuda_is_a_bool():
    assert isinstance(rdnas.built_with_cuda(), bool)


@pytest.mark.parametrize("name", _extension.NATIVE_OPS)
def test_every_op_has_cpu_and_cuda_kernels(name):
    qualified = f"rdnas::{name}"
    assert torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CPU")
    # A real kernel in a CUDA build, a clear error otherwise: never the dispatcher's generic message.
    assert torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CUDA")


@pytest.mark.skipif(rdnas.built_with_cuda(), reason="this build has the CUDA kernels")
def test_cpu_only_build_names_the_problem_for_cuda_tensors():
    kernel = _extension._no_cuda_kernel("pairwise_margin_rank_loss")
    with pytest.raises(RuntimeError, match=r"rdnas::pairwise_margin_rank_loss: got CUDA tensors, but this rdnas build "
                                           r"has no CUDA kernels .*RDNAS_FORCE_CUDA=1"):
        kernel()


def test_subpackages_load_on_first_use():
    assert rdnas.spaces.nb201.NUM_ARCHS == 15625
    assert rdnas.supernet.NB201Supernet is not None and rdnas.rank.kendall_tau is not None
    with pytest.raises(AttributeError, match=r"module 'rdnas' has no attribute 'bogus'"):
        rdnas.bogus

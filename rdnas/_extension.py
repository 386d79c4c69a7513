"""Loads the native extension ``rdnas._C`` and reports how it was built."""

import torch
from packaging.version import Version

MIN_TORCH = Version("2.4")

if Version(torch.__version__.split("+")[0]) < MIN_TORCH:
    raise ImportError(f"rdnas needs torch >= {MIN_TORCH}, found {torch.__version__}")

try:
    from rdnas import _C  # noqa: F401  (loading it registers torch.ops.rdnas.*)
except ImportError as error:  # pragma: no cover - only when the package was not built
    raise ImportError(
        "rdnas: the native extension rdnas._C is missing or does not load "
        f"({error}). Install with `pip install --no-build-isolation .` from the rdnas checkout "
        "(see DEVELOPERS.md)."
    ) from error


def built_with_cuda() -> bool:
    """True when rdnas._C contains the CUDA kernels (decided at build time, see setup.py)."""
    return bool(_C.built_with_cuda)


# Op names of every native op, for the no-CUDA error kernels below and for the tests.
NATIVE_OPS = (
    "margin_rank_loss",
    "margin_rank_loss_backward",
    "pairwise_margin_rank_loss",
    "pairwise_margin_rank_loss_backward",
    "multi_tensor_reduce",
    "multi_tensor_abs_",
    "multi_tensor_mul_signs_",
)

if not built_with_cuda():
    # Without this, a CUDA tensor would meet the dispatcher's generic "could not run ... with arguments from the
    # 'CUDA' backend". We raise instead of falling back to the slow reference: a silent fallback would hide a
    # broken install on a GPU machine.
    _no_cuda_library = torch.library.Library("rdnas", "IMPL")

    def _no_cuda_kernel(op_name):
        def kernel(*args, **kwargs):
            raise RuntimeError(
                f"rdnas::{op_name}: got CUDA tensors, but this rdnas build has no CUDA kernels (it was built "
                "without CUDA: torch without CUDA, nvcc not found, or RDNAS_FORCE_CPU=1). Reinstall on the GPU "
                "machine with `RDNAS_FORCE_CUDA=1 pip install --no-build-isolation .` (see DEVELOPERS.md), or "
                "move the tensors to the CPU."
            )

        return kernel

    for _name in NATIVE_OPS:
        _no_cuda_library.impl(_name, _no_cuda_kernel(_name), "CUDA")

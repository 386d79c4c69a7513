"""Builds rdnas and its native extension rdnas._C.

CPU kernels are always built. CUDA kernels are built when the installed torch has CUDA and nvcc is found
(a GPU need not be visible: build hosts often have none). Switches:

  RDNAS_FORCE_CUDA=1  build the CUDA kernels or fail loudly saying why not
  RDNAS_FORCE_CPU=1   build the CPU kernels only

Install with `pip install --no-build-isolation .` so that the torch already installed is the one built against
(an isolated build would download another torch); see DEVELOPERS.md.
"""

import glob
import os
import sys

from packaging.version import Version
from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - exercised only by a misconfigured install
    sys.exit("rdnas: torch must be installed before building rdnas (pip install torch==2.13.0, then "
             "pip install --no-build-isolation .); see DEVELOPERS.md")

MIN_TORCH = Version("2.4")
HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _cuda_decision():
    """Returns (build_cuda, reason)."""
    force_cuda, force_cpu = _flag("RDNAS_FORCE_CUDA"), _flag("RDNAS_FORCE_CPU")
    if force_cuda and force_cpu:
        sys.exit("rdnas: RDNAS_FORCE_CUDA=1 and RDNAS_FORCE_CPU=1 contradict each other; set one of them")
    if force_cpu:
        return False, "RDNAS_FORCE_CPU=1"
    torch_cuda = torch.version.cuda
    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else None
    have_nvcc = nvcc is not None and os.path.exists(nvcc)
    if torch_cuda and have_nvcc:
        return True, f"torch {torch.__version__} has CUDA {torch_cuda} and nvcc is at {nvcc}"
    why = []
    if not torch_cuda:
        why.append(f"torch {torch.__version__} is a CPU-only build")
    if not have_nvcc:
        why.append("nvcc was not found (set CUDA_HOME)")
    if force_cuda:
        sys.exit("rdnas: RDNAS_FORCE_CUDA=1 but the CUDA kernels cannot be built: " + "; ".join(why))
    return False, "; ".join(why)


def _extensions():
    torch_version = Version(torch.__version__.split("+")[0])
    if torch_version < MIN_TORCH:
        sys.exit(f"rdnas: torch >= {MIN_TORCH} is required to build, found {torch.__version__}")
    build_cuda, reason = _cuda_decision()
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cxx_flags = ["-O3", "-DNDEBUG", "-Wno-psabi"]
    link_flags = []
    if "OpenMP" in torch.__config__.parallel_info():
        # at::parallel_for is an inline OpenMP loop: without -fopenmp it silently runs on one thread.
        cxx_flags += ["-fopenmp"]
        link_flags += ["-fopenmp"]
    define_macros = [("Py_LIMITED_API", "0x030A0000")]
    if build_cuda:
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        define_macros.append(("RDNAS_WITH_CUDA", None))
        # --fmad=false keeps (-y * (x1 - x2)) + m rounded as torch's separate kernels round it.
        nvcc_flags = ["-O3", "-DNDEBUG", "--fmad=false", "-lineinfo"]
        extension = CUDAExtension(
            "rdnas._C", sources, define_macros=define_macros, py_limited_api=True,
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags}, extra_link_args=link_flags)
    else:
        extension = CppExtension(
            "rdnas._C", sources, define_macros=define_macros, py_limited_api=True,
            extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags)
    kernels = "CPU + CUDA" if build_cuda else "CPU only"
    print(f"rdnas: building rdnas._C with {kernels} kernels ({reason}); {len(sources)} sources", flush=True)
    return [extension]


setup(
    packages=find_packages(include=["rdnas", "rdnas.*"]),
    package_data={"rdnas.minibench": ["data/*.csv", "data/*.json"],
                  "rdnas.kd": ["shipped/*.csv", "shipped/*.json", "shipped/*.pt"]},  # the KD benchmark (DaSS)
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)

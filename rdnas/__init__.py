"""rdnas: ranking distillation for one-shot neural architecture search.

Importing rdnas loads the native extension ``rdnas._C`` (kernels registered as ``torch.ops.rdnas.*``) and the
Python side of its ops. The other subpackages (``spaces``, ``supernet``, ``data``, ``train``, ``rank``) load on
first use, so ``import rdnas`` stays light.
"""

import importlib

from rdnas._extension import built_with_cuda
from rdnas import ops, nn

__version__ = "0.1.0"
_SUBPACKAGES = ("data", "proxies", "rank", "spaces", "supernet", "train")
__all__ = ["ops", "nn", "built_with_cuda", "__version__", *_SUBPACKAGES]


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"rdnas.{name}")
    raise AttributeError(f"module 'rdnas' has no attribute {name!r}")

"""rdnas: ranking distillation for one-shot neural architecture search.

Importing rdnas loads the native extension ``rdnas._C`` (kernels registered as ``torch.ops.rdnas.*``) and the
Python side of its ops.
"""

from rdnas._extension import built_with_cuda
from rdnas import ops, nn

__version__ = "0.1.0"
__all__ = ["ops", "nn", "built_with_cuda", "__version__"]

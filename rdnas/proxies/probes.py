"""Hooks that let a proxy see inside one K-subnet pass of the supernet.

``NB201Supernet.forward_subnets`` stacks the K subnets' activations subnet-major ([G * B, ...] rows for a group of
G subnets). Every module that receives rows of a subset of subnets takes that subset as its second argument;
:class:`SubnetRows` records it in a forward pre-hook, so a hook on a layer inside can tell which subnet each row
belongs to. :func:`batchnorm_removed` turns every batch-norm layer into the identity (synflow's protocol);
:func:`relu_calls_seen` shows every ReLU a plain network runs, module or functional.
"""

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from rdnas.supernet import NB201Supernet
from rdnas.supernet.batchnorm import SubnetBatchNorm
from rdnas.supernet.nb201_ops import ReLUConvBN, ResNetBasicBlock


class SubnetRows:
    """Which subnet each row of the current layer's input belongs to, during ``forward_subnets`` of K subnets
    with B images each (use as a context manager; hooks are removed on exit)."""

    def __init__(self, supernet: NB201Supernet, num_subnets: int, rows_per_subnet: int):
        self.num_subnets = num_subnets
        self.rows_per_subnet = rows_per_subnet
        self._subnets = None
        self._hooks = [m.register_forward_pre_hook(self._record) for m in supernet.modules()
                       if isinstance(m, (ReLUConvBN, ResNetBasicBlock, SubnetBatchNorm))]

    def _record(self, module, args):
        self._subnets = args[1] if len(args) > 1 else None

    def subnets(self, device) -> Tensor:
        """LongTensor[G]: the subnets whose rows the current layer sees, in row order."""
        if self._subnets is None:
            return torch.arange(self.num_subnets, device=device)
        return self._subnets

    def of_rows(self, device) -> Tensor:
        """LongTensor[G * B]: the subnet of every row of the current layer's input."""
        return self.subnets(device).repeat_interleave(self.rows_per_subnet)

    def __enter__(self) -> "SubnetRows":
        return self

    def __exit__(self, *exc):
        for hook in self._hooks:
            hook.remove()


@contextlib.contextmanager
def hooks_removed(handles: list):
    """Yields ``handles`` (hook handles) and removes every one of them on exit, however the block ends."""
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def batchnorm_removed(model: nn.Module):
    """Inside the block, every batch-norm layer of ``model`` passes its input through unchanged (its output and
    statistics are discarded; gradients flow around it)."""
    with hooks_removed([m.register_forward_hook(lambda m, args, out: args[0]) for m in model.modules()
                        if isinstance(m, nn.modules.batchnorm._BatchNorm)]):
        yield model


_RELUS = (F.relu, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_)


class _ReLUCalls(TorchFunctionMode):
    """Hands every ReLU call to ``on_relu(input, run)`` (see :func:`relu_calls_seen`)."""

    def __init__(self, on_relu):
        super().__init__()
        self.on_relu = on_relu

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELUS:
            return self.on_relu(args[0], lambda: func(*args, **kwargs))
        return func(*args, **kwargs)


@contextlib.contextmanager
def relu_calls_seen(on_relu):
    """Inside the block, every ReLU the code runs (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``x.relu()`` and their
    in-place forms) calls ``on_relu(input, run) -> Tensor``, which must return ``run()`` (the ReLU's output): it
    sees the input before an in-place ReLU overwrites it, and the output. Plain networks apply ReLU as modules or
    as functions (ResNet48Network's blocks call ``F.relu``); a torch function mode sees both."""
    with _ReLUCalls(on_relu):
        yield

"""Parameter remapping (DaSS's ``copy_paste_first``): a student network that starts from its teacher's weights.

The teacher is the largest network of the student family. Student block j of stage s takes teacher block j of
stage s, and every tensor takes the teacher tensor's first entries along each dimension: a convolution
``W_t[:c_out, :c_in]``, a batch norm's first c affine parameters and running statistics, the classifier's first
input columns. That is the slicing of rdnas's elastic supernets, done by the one function both use
(:func:`rdnas.supernet.elastic_ops.sliced_state`), so for a teacher of the same width divisor
``remap(teacher, arch)`` equals ``export(arch)`` of a supernet that holds the teacher's weights; a wider teacher
(a smaller width divisor) is sliced the same way down to the student's widths.

The match is by parameter name: a space's stand-alone networks (``SupernetSpec.network``) name their modules as
the supernet does, so any space whose networks nest that way remaps with no code of its own.
"""

import torch
from torch import nn

from rdnas.supernet import supernet_spec
from rdnas.supernet.elastic_ops import sliced_state


def remap_state(teacher_state: dict, student_state: dict, where: str = "rdnas.kd.remap") -> dict:
    """The student's state dict filled from the teacher's: for every student entry, the teacher entry of the same
    name sliced to the student's shape (``teacher[:n_0, :n_1, ...]``), cloned: the elastic layers' slicing
    (:func:`rdnas.supernet.elastic_ops.sliced_state`, which ``ResNet48Supernet.export`` uses too).

    Args:
        teacher_state (dict of name -> Tensor): the teacher's ``state_dict()``.
        student_state (dict of name -> Tensor): a freshly built student's ``state_dict()`` (only names and shapes
            are used).

    Raises ValueError naming the entry when the teacher lacks it, its number of dimensions differs, or one of
    its dimensions is smaller than the student's.
    """
    return sliced_state(teacher_state, student_state, where, "teacher", "student")


def remap(teacher: nn.Module, arch, space, **options) -> nn.Module:
    """The student ``arch`` of ``space`` (a name or SearchSpace) as a stand-alone network whose weights and BN
    buffers are the teacher's first entries (see the module docstring), on the teacher's device and dtype and in
    its train/eval mode.

    Args:
        teacher (nn.Module): a stand-alone network of ``space`` with a ``config`` dict (its constructor options,
            e.g. a :class:`rdnas.supernet.ResNet48Network` of ``space.largest()``).
        arch: the student's architecture (LongTensor[space.width], a string or a tuple).
        space: the teacher's and student's space.
        **options: network options that differ from the teacher's ``config`` (e.g. ``width_divisor=8`` for
            students narrower than a ``width_divisor=4`` teacher; ``num_classes`` and ``in_channels`` cannot change).

    Returns the student network: ``remap(t, space.largest(), space)(x) == t(x)`` for a teacher of the largest
    architecture.
    """
    spec = supernet_spec(space)
    if spec.network is None:
        raise ValueError(f"rdnas.kd.remap: the {spec.space} space registers no stand-alone network to remap into")
    config = getattr(teacher, "config", None)
    if not isinstance(config, dict):
        raise ValueError("rdnas.kd.remap: the teacher must be a stand-alone network of the space with a config "
                         f"dict (its constructor options), got {type(teacher).__name__}")
    for fixed in ("num_classes", "in_channels"):
        if fixed in options and options[fixed] != config[fixed]:
            raise ValueError(f"rdnas.kd.remap: a student keeps the teacher's {fixed} ({config[fixed]}), got "
                             f"{options[fixed]}")
    student = spec.network(arch, **{**config, **options})
    reference = next(iter(teacher.parameters()))
    student.to(device=reference.device, dtype=reference.dtype)
    student.load_state_dict(remap_state(teacher.state_dict(), student.state_dict()))
    return student.train(teacher.training)


def largest_network(space, num_classes: int, in_channels: int, seed: int | None = None, **options) -> nn.Module:
    """The space's largest architecture as a freshly initialised stand-alone network (a teacher before training;
    with ``seed``, its initial weights come from ``torch.manual_seed(seed)``'s stream, restored afterwards)."""
    spec = supernet_spec(space)
    if spec.network is None:
        raise ValueError(f"rdnas.kd.largest_network: the {spec.space} space registers no stand-alone network")
    from rdnas.spaces import get_space

    arch = get_space(space).largest()
    if seed is None:
        return spec.network(arch, num_classes=num_classes, in_channels=in_channels, **options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return spec.network(arch, num_classes=num_classes, in_channels=in_channels, **options)

"""Argument checks the Python wrappers of the ops run before dispatch (where a clear message is cheapest)."""

from torch import Tensor

REDUCTION_ENUM = {"none": 0, "mean": 1, "sum": 2}


def reduction_enum(op_name: str, reduction: str) -> int:
    """Maps "none" / "mean" / "sum" to 0 / 1 / 2 (at::Reduction); anything else is a ValueError naming the op, as
    torch's losses raise ValueError for a bad reduction."""
    try:
        return REDUCTION_ENUM[reduction]
    except (KeyError, TypeError):
        raise ValueError(
            f"rdnas.ops.{op_name}: {reduction!r} is not a valid value for reduction; expected 'none', 'mean' or 'sum'"
        ) from None


def check_tensors_on_one_device(op_name: str, **tensors: Tensor | None) -> None:
    """Every argument is a Tensor (None allowed for optional ones) and all are on the first one's device."""
    first_name, first = None, None
    for name, value in tensors.items():
        if value is None:
            continue
        if not isinstance(value, Tensor):
            raise TypeError(f"rdnas.ops.{op_name}: {name} must be a Tensor, got {type(value).__name__}")
        if first is None:
            first_name, first = name, value
        elif value.device != first.device:
            raise RuntimeError(
                f"rdnas.ops.{op_name}: {first_name} and {name} must be on the same device, "
                f"got {first.device} and {value.device}"
            )

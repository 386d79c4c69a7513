"""The reduction argument of the loss ops, as the native ops take it (at::Reduction values)."""

REDUCTION_ENUM = {"none": 0, "mean": 1, "sum": 2}


def reduction_enum(op_name: str, reduction: str) -> int:
    """Maps "none" / "mean" / "sum" to 0 / 1 / 2; anything else is a ValueError naming the op (as torch's losses
    raise ValueError for a bad reduction)."""
    try:
        return REDUCTION_ENUM[reduction]
    except (KeyError, TypeError):
        raise ValueError(
            f"rdnas.ops.{op_name}: {reduction!r} is not a valid value for reduction; expected 'none', 'mean' or 'sum'"
        ) from None

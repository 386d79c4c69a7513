"""Search spaces: encodings, enumeration and conversions."""

from rdnas.spaces import nb201

__all__ = ["nb201"]

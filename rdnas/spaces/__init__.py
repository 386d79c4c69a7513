"""Search spaces: the :class:`SearchSpace` interface, its registry, and the spaces (``nb201``, ``resnet48``)."""

from rdnas.spaces.base import (InvalidArchitecture, NetworkOptions, SearchSpace, get_space, option, register_space,
                               space_names, unregister_space)
from rdnas.spaces import nb201
from rdnas.spaces import resnet48

register_space(nb201.SPACE)
register_space(resnet48.SPACE)

__all__ = ["InvalidArchitecture", "NetworkOptions", "SearchSpace", "get_space", "nb201", "option", "register_space",
           "resnet48", "space_names", "unregister_space"]

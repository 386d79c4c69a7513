"""Predictor inputs: per-architecture tokens (NAR) and flat feature vectors (trees, MLP), for any search space.

Structure: each space's own input, through the space interface
(:meth:`rdnas.spaces.SearchSpace.predictor_tokens`, with the options of its ``feature_options``): by default
``space.encode(archs)`` (float32 Tensor[K, F]) cut into tokens of 16 (zero-padded); NB201 gives NAR's cell
tensors (:mod:`rdnas.spaces.nb201_features`: ``cells`` "stages" or the authors' "all", ``edges`` "live" or the
authors' "all"), re-exported here as :func:`nb201_cell_tensors` and :func:`nb201_path_tokens`.

Zero-cost proxy columns (:class:`ProxyFeatures`): any table keyed by architecture string (an ``rdnas proxies``
output, or ``nb201_zc_proxies.csv``); each column is **rank-normalised** over the table's rows (average rank of
ties, scaled to [0, 1]; -inf, e.g. a disconnected cell's score, ranks lowest; NaN becomes 0.5). They add tokens of
16 values (the columns, zero-padded) to NAR's input and columns to the flat vector.
"""

import numpy as np
import torch
from torch import Tensor

from rdnas.spaces import SearchSpace, get_space
from rdnas.spaces.base import to_tokens
from rdnas.spaces.nb201_features import (NB201_CELL_CHANNELS, NB201_CELL_CHOICES, NB201_EDGE_CHOICES,  # noqa: F401
                                         NB201_PATHS, nb201_cell_tensors, nb201_path_tokens)


class ProxyFeatures:
    """Rank-normalised columns of a table keyed by architecture string (module docstring).

    Args:
        keys (list[str]): ``space.to_string`` of each row.
        values (Tensor[R, P]): the rank-normalised values, float32.
        columns (list[str]): the column names.
        space: the search space.
    """

    def __init__(self, keys: list[str], values: Tensor, columns: list[str], space="nb201"):
        self.space = get_space(space)
        self.keys, self.values, self.columns = list(keys), values.float(), list(columns)
        self._row = {key: row for row, key in enumerate(self.keys)}
        self._row_of_index = None
        if self.space.enumerable:  # a tensor lookup: predictors look up the whole space at once
            self._row_of_index = torch.full((self.space.size,), -1, dtype=torch.long)
            archs = torch.stack([self.space.from_string(key) for key in self.keys])
            self._row_of_index[self.space.index(archs)] = torch.arange(len(self.keys))

    @classmethod
    def from_table(cls, path, columns, space="nb201") -> "ProxyFeatures":
        """Reads ``columns`` of a table (``GroundTruth`` format: an ``arch_str`` or ``arch`` column) and
        rank-normalises them. Raises ValueError naming an unknown column or, for an enumerable space, the first
        architecture of the space the table lacks."""
        from rdnas.rank import GroundTruth

        space = get_space(space)
        columns = list(columns)
        if not columns:
            raise ValueError("rdnas.predictors: --features names no column of the feature table")
        table = GroundTruth.load(path, space=space)
        unknown = [name for name in columns if name not in table.columns]
        if unknown:
            raise ValueError(f"rdnas.predictors: the feature table {path} has no column {unknown[0]!r}; it has "
                             f"{', '.join(sorted(table.columns))}")
        if space.enumerable and len(table) < space.size:
            rows = table.rows_of(space.enumerate())
            missing = space.enumerate()[(rows < 0).nonzero()[0, 0]]
            raise ValueError(f"rdnas.predictors: the feature table {path} does not cover the space {space.name}: "
                             f"it has {len(table):,} of {space.size:,} architectures (missing e.g. "
                             f"{space.to_string(missing)})")
        values = torch.from_numpy(np.stack([rank_normalise(table.column(name)) for name in columns], axis=1))
        keys = [space.to_string(arch) for arch in table.archs]
        return cls(keys, values, columns, space)

    def __call__(self, archs) -> Tensor:
        """float32 Tensor[K, P]; ValueError naming the first architecture the table lacks."""
        archs = self.space.validate(archs)
        if self._row_of_index is not None:
            rows = self._row_of_index[self.space.index(archs)]
            if bool((rows < 0).any()):
                missing = archs[(rows < 0).nonzero()[0, 0]]
                raise ValueError(f"rdnas.predictors: the feature table has no row for {self.space.to_string(missing)}")
            return self.values[rows]
        rows = []
        for arch in archs:
            key = self.space.to_string(arch)
            if key not in self._row:
                raise ValueError(f"rdnas.predictors: the feature table has no row for {key}")
            rows.append(self._row[key])
        return self.values[torch.tensor(rows, dtype=torch.long)]

    def state(self) -> dict:
        return {"keys": self.keys, "values": self.values, "columns": self.columns}


def rank_normalise(column: np.ndarray) -> np.ndarray:
    """Average ranks of ``column`` scaled to [0, 1] (higher value, higher rank); -inf lowest, NaN 0.5."""
    from scipy.stats import rankdata

    column = np.asarray(column, dtype=np.float64)
    finite = ~np.isnan(column)
    out = np.full(column.shape, 0.5)
    if finite.sum() > 1:
        ranks = rankdata(column[finite], method="average")  # -inf sorts first
        out[finite] = (ranks - 1) / (finite.sum() - 1)
    return out


class ArchFeatures:
    """The inputs of every predictor for one space, optionally with proxy columns.

    ``tokens(archs)``: float32 Tensor[K, T, 16] (NAR); ``flat(archs)``: float32 Tensor[K, T * 16] (trees, MLP).
    The structure tokens are the space's (:meth:`rdnas.spaces.SearchSpace.predictor_tokens`); ``options`` are its
    ``feature_options`` (NB201: ``cells``, "stages" by default or the authors' "all", and ``edges``, "live" by
    default or the authors' "all": the best measured input of every predictor, README, "Predictors on
    NAS-Bench-201's real ground truth"), each readable as an attribute (``features.cells``). An option the space
    does not take is refused, except the value "all" (the input as the space gives it, which model files of
    every space recorded) or None.
    """

    def __init__(self, space="nb201", proxies: ProxyFeatures | None = None, **options):
        self.space: SearchSpace = get_space(space)
        self.proxies = proxies
        taken = self.space.feature_options
        for option, value in options.items():
            if option not in taken and value not in (None, "all"):
                takers = [name for name in _space_names() if option in get_space(name).feature_options]
                raise ValueError(f"rdnas.predictors: {option}={value!r} is an input option of "
                                 f"{', '.join(takers) or 'no space'}, not of the {self.space.name} space (its "
                                 f"features: {', '.join(taken) or 'its encoding'})")
        self.options = {option: choices[0] if options.get(option) is None else _checked(option, options[option],
                                                                                        tuple(sorted(choices)))
                        for option, choices in taken.items()}

    def __getattr__(self, name):
        options = self.__dict__.get("options", {})
        if name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def tokens(self, archs) -> Tensor:
        tokens = self.space.predictor_tokens(archs, **self.options)
        if self.proxies is not None:
            tokens = torch.cat([tokens, to_tokens(self.proxies(archs))], dim=1)
        return tokens

    def flat(self, archs) -> Tensor:
        return self.tokens(archs).flatten(1)

    @property
    def num_tokens(self) -> int:
        return self.tokens(self.space.sample(1, torch.Generator().manual_seed(0))).shape[1]

    def state(self) -> dict:
        return {"space": self.space.name, "proxies": None if self.proxies is None else self.proxies.state(),
                **self.options}

    @classmethod
    def from_state(cls, state: dict) -> "ArchFeatures":
        proxies = state["proxies"]
        if proxies is not None:
            proxies = ProxyFeatures(proxies["keys"], proxies["values"], proxies["columns"], state["space"])
        space = get_space(state["space"])
        options = {k: v for k, v in state.items() if k not in ("space", "proxies")}
        for option in space.feature_options:  # model files written before these options existed: the authors'
            options.setdefault(option, "all")
        return cls(space, proxies, **options)


def _space_names() -> tuple:
    from rdnas.spaces import space_names

    return space_names()


def _checked(option: str, value: str, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"rdnas.predictors: {option} must be one of {choices}, got {value!r}")
    return value

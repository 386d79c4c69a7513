"""Ground-truth tables in the format of NAS-Bench-201's ``nb201_gt.csv``.

A table has a header, an ``index`` column (the official benchmark index), an ``arch_str`` column (the official
architecture string) and any number of numeric columns (accuracies, parameter counts, FLOPs, ...). The official
index order is whatever order the benchmark's table uses; this class is how rdnas maps between that index and
an architecture.
"""

import csv
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rdnas.spaces import nb201


class MalformedTable(ValueError):
    """A ground-truth table that cannot be read; the message names the file and the line."""


class GroundTruth:
    """A ground-truth table: architectures, their official indices and numeric columns.

    Attributes:
        path (Path): where the table was read from.
        indices (LongTensor[R]): the official index of each row.
        archs (LongTensor[R, 6]): each row's architecture (op indices).
        columns (dict[str, np.ndarray[R]]): every numeric column, float64.
    """

    def __init__(self, path, indices: Tensor, archs: Tensor, columns: dict):
        self.path = Path(path)
        self.indices = indices
        self.archs = archs
        self.columns = columns
        self._row_of_index = {int(index): row for row, index in enumerate(indices.tolist())}
        self._row_of_enumeration = torch.full((nb201.NUM_ARCHS,), -1, dtype=torch.long)
        self._row_of_enumeration[nb201.enumeration_indices(archs)] = torch.arange(len(archs))

    @classmethod
    def load(cls, path) -> "GroundTruth":
        """Reads a CSV table; a malformed one raises MalformedTable naming the file and the line."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"rdnas.rank.GroundTruth: no table at {path}")
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            try:
                header = next(reader)
            except StopIteration:
                raise MalformedTable(f"{path}:1: the table is empty") from None
            for required in ("index", "arch_str"):
                if required not in header:
                    raise MalformedTable(f"{path}:1: the header has no {required!r} column (header: {header})")
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise MalformedTable(f"{path}:1: the header names {repeated} more than once")
            index_at, arch_at = header.index("index"), header.index("arch_str")
            numeric = [(k, name) for k, name in enumerate(header) if k not in (index_at, arch_at)]
            indices, archs, values = [], [], []
            for line_number, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise MalformedTable(f"{path}:{line_number}: expected {len(header)} fields, got {len(row)}")
                try:
                    indices.append(int(row[index_at]))
                except ValueError:
                    raise MalformedTable(f"{path}:{line_number}: index {row[index_at]!r} is not an integer") from None
                try:
                    archs.append(nb201.from_string(row[arch_at]))
                except nb201.InvalidArchitecture as error:
                    raise MalformedTable(f"{path}:{line_number}: {error}") from None
                try:
                    values.append([float(row[k]) if row[k] != "" else math.nan for k, _ in numeric])
                except ValueError as error:
                    raise MalformedTable(f"{path}:{line_number}: a numeric column holds a non-number ({error})") from None
        if not indices:
            raise MalformedTable(f"{path}: the table has a header but no rows")
        if len(set(indices)) != len(indices):
            raise MalformedTable(f"{path}: the index column repeats values")
        if len(set(archs)) != len(archs):
            raise MalformedTable(f"{path}: an architecture appears in more than one row")
        matrix = np.asarray(values, dtype=np.float64).reshape(len(indices), len(numeric))
        columns = {name: matrix[:, k].copy() for k, (_, name) in enumerate(numeric)}
        return cls(path, torch.tensor(indices, dtype=torch.long), torch.tensor(archs, dtype=torch.long), columns)

    def __len__(self) -> int:
        return len(self.indices)

    def column(self, name: str) -> np.ndarray:
        """The values of a numeric column, one per row (float64)."""
        if name not in self.columns:
            raise KeyError(f"rdnas.rank.GroundTruth: {self.path} has no column {name!r}; it has {sorted(self.columns)}")
        return self.columns[name]

    def rows_of(self, archs: Tensor) -> Tensor:
        """Row of each architecture (LongTensor[..., 6] -> LongTensor[...]); -1 where the table lacks it."""
        return self._row_of_enumeration[nb201.enumeration_indices(archs)]

    def values(self, archs: Tensor, name: str) -> np.ndarray:
        """Column ``name`` for each architecture; KeyError naming the first architecture the table lacks."""
        rows = self.rows_of(archs)
        missing = (rows < 0).nonzero()
        if len(missing):
            arch = tuple(archs.reshape(-1, 6)[missing[0, 0]].tolist()) if archs.dim() > 1 else tuple(archs.tolist())
            raise KeyError(f"rdnas.rank.GroundTruth: {self.path} has no row for {nb201.to_string(arch)}")
        return self.column(name)[rows.numpy()]

    def arch_of_index(self, index: int) -> tuple:
        """The architecture with official index ``index``."""
        if int(index) not in self._row_of_index:
            raise KeyError(f"rdnas.rank.GroundTruth: {self.path} has no index {index}")
        return tuple(self.archs[self._row_of_index[int(index)]].tolist())

    def index_of_arch(self, arch) -> int:
        """The official index of an architecture."""
        row = int(self.rows_of(torch.tensor(nb201.validate(arch))))
        if row < 0:
            raise KeyError(f"rdnas.rank.GroundTruth: {self.path} has no row for {nb201.to_string(arch)}")
        return int(self.indices[row])

"""Ground-truth tables in the format of NAS-Bench-201's ``nb201_gt.csv``, for any registered search space.

A table has a header, an architecture column (``arch_str`` or ``arch``: the space's ``to_string``), optionally an
``index`` column (NB201: the official benchmark index; absent: the row number) and any number of numeric columns
(accuracies, parameter counts, FLOPs, ...). The official index order is whatever order the benchmark's table
uses; this class is how rdnas maps between that index and an architecture.
"""

import csv
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rdnas.spaces import InvalidArchitecture, get_space


class MalformedTable(ValueError):
    """A ground-truth table that cannot be read; the message names the file and the line."""


class GroundTruth:
    """A ground-truth table: architectures, their official indices and numeric columns.

    Attributes:
        path (Path): where the table was read from.
        indices (LongTensor[R]): the official index of each row (the row number where the table has none).
        archs (LongTensor[R, space.width]): each row's architecture.
        columns (dict[str, np.ndarray[R]]): every numeric column, float64.
        space (SearchSpace): the space the architectures belong to.
    """

    def __init__(self, path, indices: Tensor, archs: Tensor, columns: dict, space="nb201"):
        self.path = Path(path)
        self.space = get_space(space)
        self.indices = indices
        self.archs = archs
        self.columns = columns
        self._row_of_index = {int(index): row for row, index in enumerate(indices.tolist())}
        if self.space.enumerable:  # a tensor lookup: rows_of is called with thousands of architectures
            self._row_of_enumeration = torch.full((self.space.size,), -1, dtype=torch.long)
            self._row_of_enumeration[self.space.index(archs)] = torch.arange(len(archs))
        else:
            self._row_of_string = {self.space.to_string(arch): row for row, arch in enumerate(archs)}

    @classmethod
    def load(cls, path, space="nb201") -> "GroundTruth":
        """Reads a CSV table of ``space``'s architectures; a malformed one raises MalformedTable naming the file
        and the line."""
        space = get_space(space)
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"rdnas.rank.GroundTruth: no table at {path}")
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            try:
                header = next(reader)
            except StopIteration:
                raise MalformedTable(f"{path}:1: the table is empty") from None
            arch_column = next((name for name in ("arch_str", "arch") if name in header), None)
            if arch_column is None:
                raise MalformedTable(f"{path}:1: the header has no 'arch_str' (or 'arch') column (header: {header})")
            if "index" not in header and space.name == "nb201":
                raise MalformedTable(f"{path}:1: the header has no 'index' column (header: {header})")
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise MalformedTable(f"{path}:1: the header names {repeated} more than once")
            index_at = header.index("index") if "index" in header else None
            arch_at = header.index(arch_column)
            numeric = [(k, name) for k, name in enumerate(header) if k not in (index_at, arch_at)]
            indices, archs, values = [], [], []
            for line_number, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise MalformedTable(f"{path}:{line_number}: expected {len(header)} fields, got {len(row)}")
                try:
                    indices.append(int(row[index_at]) if index_at is not None else line_number - 2)
                except ValueError:
                    raise MalformedTable(f"{path}:{line_number}: index {row[index_at]!r} is not an integer") from None
                try:
                    archs.append(tuple(space.from_string(row[arch_at]).tolist()))
                except InvalidArchitecture as error:
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
        return cls(path, torch.tensor(indices, dtype=torch.long), torch.tensor(archs, dtype=torch.long), columns, space)

    def __len__(self) -> int:
        return len(self.indices)

    def column(self, name: str) -> np.ndarray:
        """The values of a numeric column, one per row (float64)."""
        if name not in self.columns:
            raise KeyError(f"rdnas.rank.GroundTruth: {self.path} has no column {name!r}; it has {sorted(self.columns)}")
        return self.columns[name]

    def rows_of(self, archs: Tensor) -> Tensor:
        """Row of each architecture (LongTensor[..., space.width] -> LongTensor[...]); -1 where the table lacks it."""
        archs = torch.as_tensor(archs, dtype=torch.long)
        if self.space.enumerable:
            return self._row_of_enumeration[self.space.index(archs.reshape(-1, self.space.width)).view(archs.shape[:-1])]
        flat = archs.reshape(-1, self.space.width)
        rows = [self._row_of_string.get(self.space.to_string(arch), -1) for arch in flat]
        return torch.tensor(rows, dtype=torch.long).view(archs.shape[:-1])

    def values(self, archs: Tensor, name: str) -> np.ndarray:
        """Column ``name`` for each architecture; KeyError naming the first architecture the table lacks."""
        rows = self.rows_of(archs)
        missing = (rows < 0).nonzero()
        if len(missing):
            arch = archs.reshape(-1, self.space.width)[missing[0, 0]] if archs.dim() > 1 else archs
            raise KeyError(f"rdnas.rank.GroundTruth: {self.path} has no row for {self.space.to_string(arch)}")
        return self.column(name)[rows.numpy()]

    def arch_of_index(self, index: int) -> tuple:
        """The architecture with official index ``index``."""
        if int(index) not in self._row_of_index:
            raise KeyError(f"rdnas.rank.GroundTruth: {self.path} has no index {index}")
        return tuple(self.archs[self._row_of_index[int(index)]].tolist())

    def index_of_arch(self, arch) -> int:
        """The official index of an architecture."""
        arch = self.space.validate(arch)[0]
        row = int(self.rows_of(arch))
        if row < 0:
            raise KeyError(f"rdnas.rank.GroundTruth: {self.path} has no row for {self.space.to_string(arch)}")
        return int(self.indices[row])

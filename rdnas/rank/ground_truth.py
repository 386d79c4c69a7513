"""Ground-truth tables in the format of NAS-Bench-201's ``nb201_gt.csv``, for any registered search space.

A table has a header, an architecture column (``arch_str`` or ``arch``: the space's ``to_string``), optionally an
``index`` column (NB201: the official benchmark index; absent: the row number) and any number of numeric columns
(accuracies, parameter counts, FLOPs, ...). The official index order is whatever order the benchmark's table
uses; this class is how rdnas maps between that index and an architecture.

Rows are matched by architecture, never by position: :meth:`GroundTruth.rows_of` and :meth:`GroundTruth.values`
look architectures up, so the rows may come in any order (the official index order, rdnas's enumeration order, a
score table's, a merge's). Every table rdnas writes with an architecture column reads here: ``nb201_gt.csv``,
``rdnas proxies`` outputs (``index,arch,<proxy>,...``, with or without ``--gt``), merged shards, mini-benchmark
tables and ``rdnas predictor rank`` rankings (``arch,score``; no index column, see :attr:`GroundTruth.has_index`).

The tables rdnas ships (``rdnas/minibench/data/*.csv``: the digits mini-benchmarks, NB201's whole space on digits)
are read by name wherever a table path goes: ``shipped:nb201_digits_full`` (:func:`shipped_tables` lists them).
"""

import csv
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rdnas.spaces import InvalidArchitecture, get_space


SHIPPED_PREFIX = "shipped:"


def shipped_tables() -> dict:
    """The ground-truth tables shipped with rdnas: {name: Path}, e.g. ``nb201_digits`` (240 NB201 cells on
    digits), ``nb201_digits_full`` (every NB201 cell on digits, once built), ``resnet48_digits``."""
    from importlib import resources

    folder = Path(str(resources.files("rdnas.minibench") / "data"))
    return {path.stem: path for path in sorted(folder.glob("*.csv"))}


def table_path(path) -> Path:
    """``path`` as a Path; ``shipped:<name>`` is the shipped table of that name (:func:`shipped_tables`), and an
    unknown name raises FileNotFoundError naming the shipped ones."""
    text = str(path)
    if not text.startswith(SHIPPED_PREFIX):
        return Path(path)
    name = text[len(SHIPPED_PREFIX):]
    tables = shipped_tables()
    if name not in tables:
        raise FileNotFoundError(f"rdnas.rank.GroundTruth: no shipped table {name!r} ({text}); shipped: "
                                f"{', '.join(SHIPPED_PREFIX + n for n in tables)}")
    return tables[name]


class MalformedTable(ValueError):
    """A ground-truth table that cannot be read; the message names the file and the line."""


class MissingColumn(KeyError, ValueError):
    """A column a table does not have. A KeyError (a table's columns are a mapping) and a ValueError (bad input:
    the command line reports it as a usage error, not a traceback); the message names the table and its columns."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class GroundTruth:
    """A ground-truth table: architectures, their official indices and numeric columns.

    Attributes:
        path (Path): where the table was read from.
        indices (LongTensor[R]): the official index of each row (the row number where the table has none).
        archs (LongTensor[R, space.width]): each row's architecture.
        columns (dict[str, np.ndarray[R]]): every numeric column, float64.
        space (SearchSpace): the space the architectures belong to.
        has_index (bool): whether the table has an ``index`` column; without one (e.g. an ``arch,score`` ranking)
            :meth:`index_of_arch` and :meth:`arch_of_index` raise ValueError rather than pass row numbers off as
            official indices.
    """

    def __init__(self, path, indices: Tensor, archs: Tensor, columns: dict, space="nb201", has_index: bool = True):
        self.path = Path(path)
        self.space = get_space(space)
        self.has_index = bool(has_index)
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
        """Reads a CSV table of ``space``'s architectures, in any row order; a malformed one raises MalformedTable
        (a ValueError) naming the file and the line: no architecture column, a bad architecture, a non-number in a
        numeric column, an index or an architecture in two rows (both lines named), or an interrupted score table
        (one with a ``.meta.json`` sidecar whose last line is incomplete). ``path``: a file, or ``shipped:<name>``
        for a table shipped with rdnas (:func:`shipped_tables`)."""
        space = get_space(space)
        path = table_path(path)
        if not path.exists():
            raise FileNotFoundError(f"rdnas.rank.GroundTruth: no table at {path}")
        if Path(str(path) + ".meta.json").is_file() and path.stat().st_size:  # a score table: see rdnas.proxies
            with open(path, "rb") as handle:
                handle.seek(-1, 2)
                if handle.read(1) != b"\n":
                    raise MalformedTable(f"{path}: the last line is incomplete (an rdnas proxies run writing it was "
                                         "interrupted); resume it (same command) before reading the table")
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            try:
                header = next(reader)
            except StopIteration:
                raise MalformedTable(f"{path}:1: the table is empty") from None
            arch_column = next((name for name in ("arch_str", "arch") if name in header), None)
            if arch_column is None:
                raise MalformedTable(f"{path}:1: the header has no 'arch_str' (or 'arch') column (header: {header})")
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise MalformedTable(f"{path}:1: the header names {repeated} more than once")
            index_at = header.index("index") if "index" in header else None
            arch_at = header.index(arch_column)
            numeric = [(k, name) for k, name in enumerate(header) if k not in (index_at, arch_at)]
            indices, archs, values, lines = [], [], [], []
            for line_number, row in enumerate(reader, start=2):
                lines.append(line_number)
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
        _refuse_repeats(path, indices, lines, "index")
        _refuse_repeats(path, archs, lines, "architecture", space)
        matrix = np.asarray(values, dtype=np.float64).reshape(len(indices), len(numeric))
        columns = {name: matrix[:, k].copy() for k, (_, name) in enumerate(numeric)}
        return cls(path, torch.tensor(indices, dtype=torch.long), torch.tensor(archs, dtype=torch.long), columns, space,
                   has_index=index_at is not None)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def names(self) -> list[str]:
        """The numeric columns, in the table's order."""
        return list(self.columns)

    def require_columns(self, names) -> None:
        """Checks, before any work, that the table has every column of ``names`` (a name or a sequence of names):
        ValueError naming the table, the first missing column and the columns it has."""
        names = [names] if isinstance(names, str) else list(names)
        missing = [name for name in names if name not in self.columns]
        if missing:
            raise MissingColumn(f"the table {self.path} has no column {missing[0]!r}; its columns: "
                                f"{', '.join(self.columns) or '(none)'}")

    def require_common(self, archs, what: str = "the architectures") -> Tensor:
        """The row of each of ``archs`` (LongTensor[K, space.width] -> LongTensor[K], -1 where the table lacks it);
        ValueError naming the table when it holds none of them (a table of another run, space or subset: nothing
        to compare against)."""
        archs = self.space.validate(archs)
        rows = self.rows_of(archs)
        if len(archs) and not bool((rows >= 0).any()):
            raise ValueError(f"the table {self.path} holds none of {what} ({len(archs):,} {self.space.name} "
                             f"architectures, e.g. {self.space.to_string(archs[0])}); it has {len(self):,} other "
                             "rows: pass the table of this space and these architectures")
        return rows

    def column(self, name: str) -> np.ndarray:
        """The values of a numeric column, one per row (float64), in the table's row order (match rows to
        architectures with :meth:`rows_of`, or use :meth:`values`)."""
        if name not in self.columns:
            raise MissingColumn(f"rdnas.rank.GroundTruth: {self.path} has no column {name!r}; it has "
                                f"{sorted(self.columns)}")
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

    def _require_index(self) -> None:
        if not self.has_index:
            raise ValueError(f"rdnas.rank.GroundTruth: {self.path} has no index column (its rows are matched by "
                             "architecture only), so it gives no official index")

    def arch_of_index(self, index: int) -> tuple:
        """The architecture with official index ``index``."""
        self._require_index()
        if int(index) not in self._row_of_index:
            raise KeyError(f"rdnas.rank.GroundTruth: {self.path} has no index {index}")
        return tuple(self.archs[self._row_of_index[int(index)]].tolist())

    def index_of_arch(self, arch) -> int:
        """The official index of an architecture."""
        self._require_index()
        arch = self.space.validate(arch)[0]
        row = int(self.rows_of(arch))
        if row < 0:
            raise KeyError(f"rdnas.rank.GroundTruth: {self.path} has no row for {self.space.to_string(arch)}")
        return int(self.indices[row])


def _refuse_repeats(path: Path, keys: list, lines: list[int], what: str, space=None) -> None:
    """MalformedTable naming both lines of the first ``what`` (index or architecture) that two rows share."""
    seen = {}
    for key, line in zip(keys, lines):
        if key in seen:
            shown = space.to_string(torch.tensor(key)) if space is not None else key
            raise MalformedTable(f"{path}:{line}: {what} {shown} is also on line {seen[key]} (each {what} belongs "
                                 "to one row)")
        seen[key] = line

"""The score-table file format: :class:`ScoreTable`, its CSV + ``.meta.json`` sidecar, and :func:`merge_tables`.

A score table is what :func:`rdnas.proxies.score_space` writes (``index,arch,<proxy>,...``; one row per
architecture, rows in increasing ``index``):

- ``index``: NB201: the official index when the run was given a ground-truth table (``gt``), otherwise
  :func:`rdnas.spaces.nb201.enumeration_index` (the position in :func:`nb201.all_archs`, NOT the official index).
  A space that cannot be enumerated (resnet48): the position of the architecture in the ``archs`` given (its
  rows keep that order). Which of the three a table holds is its sidecar's ``settings.order`` ("official",
  "enumeration" or "position"); :attr:`ScoreTable.order` gives it.
- ``arch``: the space's string of the architecture (NB201's official string; ResNet48's 52-digit code).
- one column per proxy, each value written as ``repr(float(v))`` so that reading it back gives the same float64
  bit for bit (``inf``, ``-inf`` and ``nan`` included).

The index serves resume, sharding and merging within one run. Across tables and runs an architecture is identified
by its ``arch`` string only: every reader in rdnas matches rows by architecture (:meth:`ScoreTable.rows_of`,
:class:`rdnas.rank.GroundTruth`, :meth:`rdnas.train.Teacher.from_table`), never by row position.

A JSON sidecar ``<out>.meta.json`` records the settings that determine the values (proxies, minibatch, init,
seed, architectures and their order, chunking, shard, device type, rdnas version); resuming with other settings is
an error, and :func:`merge_tables` merges only tables whose settings agree apart from the shard.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from rdnas.atomic_file import prepare_output_file, write_text_atomic
from rdnas.rank.ground_truth import MissingColumn

META_SUFFIX = ".meta.json"


class ScoreTable:
    """Proxy scores of N architectures, rows in increasing index.

    Attributes:
        indices (LongTensor[N]): the index of each row (official NB201 index or enumeration index; see
            :func:`score_space`).
        archs (list[str]): the official architecture string of each row.
        columns (dict[str, np.ndarray[N]]): float64 scores per proxy, in column order.
        info (dict): what produced the table; :func:`score_space` fills ``path``, ``written`` (rows scored by this
            call), ``already_present`` (rows found when resuming), ``seconds`` and ``shard``.
    """

    def __init__(self, indices, archs: list[str], columns: dict, info: dict | None = None):
        self.indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        self.archs = list(archs)
        self.columns = {name: np.asarray(values, dtype=np.float64).reshape(-1) for name, values in columns.items()}
        self.info = dict(info or {})
        self._row_of_arch = None  # (space, row per enumeration index or {arch string: row}), built by rows_of
        n = len(self.indices)
        if len(self.archs) != n or any(len(values) != n for values in self.columns.values()):
            raise ValueError(f"rdnas.proxies.ScoreTable: {n} indices but {len(self.archs)} archs and column lengths "
                             f"{ {name: len(v) for name, v in self.columns.items()} }")

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"ScoreTable({len(self)} rows, columns {list(self.columns)})"

    @property
    def names(self) -> list[str]:
        """The proxy columns, in order."""
        return list(self.columns)

    @property
    def order(self) -> str | None:
        """What ``index`` is, as the table's sidecar records it: "official" (NB201 with ``gt``), "enumeration"
        (NB201 without), "position" (the order of the ``archs`` given); None without a sidecar."""
        return self.info.get("order")

    def require_columns(self, names) -> None:
        """Checks, before any work, that the table has every column of ``names`` (a name or a sequence):
        ValueError naming the table, the first missing column and the columns it has."""
        names = [names] if isinstance(names, str) else list(names)
        missing = [name for name in names if name not in self.columns]
        if missing:
            where = self.info.get("path") or "the score table"
            raise MissingColumn(f"{where} has no column {missing[0]!r}; its columns: {', '.join(self.columns)}")

    def column(self, name: str) -> np.ndarray:
        """The scores of proxy ``name`` (float64 [N]), in row order: match rows to architectures with
        :meth:`rows_of` (or by :attr:`archs`), never by position."""
        if name not in self.columns:
            raise MissingColumn(f"rdnas.proxies.ScoreTable: {self.info.get('path') or 'the table'} has no column "
                                f"{name!r}; columns: {list(self.columns)}")
        return self.columns[name]

    def rows_of(self, archs, space) -> torch.Tensor:
        """The row of each architecture, matched by the space's string: LongTensor[K, space.width] (or a sequence
        of the space's strings) -> LongTensor[K], -1 where the table lacks it. A row whose ``arch`` is not a valid
        architecture of ``space``, or two rows of one architecture, are a ValueError naming the table."""
        from rdnas.spaces import get_space

        space = get_space(space)
        path = self.info.get("path")

        def where(row: int) -> str:  # the file's line (the header is line 1), or the row of a table in memory
            return f"{path}:{row + 2}" if path else f"row {row + 1}"

        if self._row_of_arch is None or self._row_of_arch[0] is not space:
            parsed = []
            for row, text in enumerate(self.archs):
                try:
                    parsed.append(space.from_string(text))
                except ValueError as error:
                    raise ValueError(f"rdnas.proxies.ScoreTable: {where(row)}: {error}") from None
            parsed = torch.stack(parsed) if parsed else torch.zeros(0, space.width, dtype=torch.long)
            # enumerable spaces: a tensor over the enumeration index (whole-space look-ups); others: by string
            keys = space.index(parsed).tolist() if space.enumerable else [space.to_string(a) for a in parsed]
            row_of = {}
            for row, key in enumerate(keys):
                if key in row_of:
                    raise ValueError(f"rdnas.proxies.ScoreTable: {where(row)}: architecture {self.archs[row]} is also "
                                     f"at {where(row_of[key])} (each architecture belongs to one row)")
                row_of[key] = row
            if space.enumerable:
                lookup = torch.full((space.size,), -1, dtype=torch.long)
                lookup[torch.tensor(keys, dtype=torch.long)] = torch.arange(len(keys))
                row_of = lookup
            self._row_of_arch = (space, row_of)
        row_of = self._row_of_arch[1]
        if isinstance(archs, (list, tuple)) and archs and isinstance(archs[0], str):
            archs = torch.stack([space.from_string(a) for a in archs])
        archs = space.validate(archs)
        if space.enumerable:
            return row_of[space.index(archs)]
        return torch.tensor([row_of.get(space.to_string(a), -1) for a in archs], dtype=torch.long)

    def identical_to(self, other: "ScoreTable") -> bool:
        """Same rows, columns and values bit for bit (NaN equal to NaN)."""
        return (torch.equal(self.indices, other.indices) and self.archs == other.archs
                and list(self.columns) == list(other.columns)
                and all(_same_floats(self.columns[n], other.columns[n]) for n in self.columns))

    @classmethod
    def read(cls, path) -> "ScoreTable":
        """Reads a table written by :func:`score_space` or :meth:`write`. A file whose last line is incomplete
        (a run was killed) is an error: resume the run first."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"rdnas.proxies.ScoreTable.read: no score table at {path}")
        header, rows, _, partial = _scan(path)
        if header is None:
            raise ValueError(f"rdnas.proxies.ScoreTable.read: {path} is empty (no header line)")
        if partial:
            raise ValueError(f"rdnas.proxies.ScoreTable.read: {path} ends with an incomplete line (a run was "
                             "interrupted); resume it (same command) before reading it")
        info = {"path": str(path)}
        if meta_path(path).is_file():
            try:
                info["order"] = _recorded_settings(meta_path(path), "rdnas.proxies.ScoreTable.read").get("order")
            except ValueError:
                pass  # a broken sidecar is for resuming and merging to report; the rows are keyed by arch anyway
        return _table(header, rows, info=info)

    def write(self, path) -> None:
        """Writes the table as CSV, atomically (a temporary file renamed over ``path``)."""
        text = _header_line(self.names) + "".join(
            _row_line(int(i), a, [self.columns[n][r] for n in self.columns])
            for r, (i, a) in enumerate(zip(self.indices.tolist(), self.archs)))
        write_text_atomic(Path(path), text)


def _same_floats(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


# ----------------------------------------------------------------------------------------------- CSV and sidecar


def _header_line(names: list[str]) -> str:
    return ",".join(["index", "arch", *names]) + "\n"


def _row_line(index: int, arch: str, values) -> str:
    return ",".join([str(index), arch, *(repr(float(v)) for v in values)]) + "\n"


def _scan(path: Path):
    """(header fields or None, [(line number, fields)], bytes up to the last newline, whether a partial line
    follows them)."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    lines = data[:end].decode("utf-8").splitlines()
    if not lines:
        return None, [], end, len(data) > end
    header = lines[0].split(",")
    if header[:2] != ["index", "arch"] or len(header) < 3:
        raise ValueError(f"rdnas.proxies: {path}:1: not a score table (header must be index,arch,<proxy>,...; "
                         f"got {lines[0]!r})")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split(",")
        if len(fields) != len(header):
            raise ValueError(f"rdnas.proxies: {path}:{number}: expected {len(header)} fields, got {len(fields)}")
        rows.append((number, fields))
    return header, rows, end, len(data) > end


def _parse_row(path: Path, number: int, fields: list[str]) -> tuple[int, str, list[float]]:
    try:
        return int(fields[0]), fields[1], [float(v) for v in fields[2:]]
    except ValueError as error:
        raise ValueError(f"rdnas.proxies: {path}:{number}: malformed row ({error})") from None


def _table(header: list[str], rows: list, info: dict) -> ScoreTable:
    path = Path(info.get("path", "?"))
    parsed = [_parse_row(path, number, fields) for number, fields in rows]
    values = np.array([v for _, _, v in parsed], dtype=np.float64).reshape(len(parsed), len(header) - 2)
    return ScoreTable([i for i, _, _ in parsed], [a for _, a, _ in parsed],
                      {name: values[:, k].copy() for k, name in enumerate(header[2:])}, info)


def meta_path(out) -> Path:
    """The metadata sidecar of a score table: ``<out>.meta.json``."""
    return Path(str(out) + META_SUFFIX)


def _compact(value) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else repr(value)


def _first_difference(recorded: dict, wanted: dict, ignore=()) -> tuple[str, object, object] | None:
    """(dotted key, recorded value, wanted value) of the first differing setting, in ``wanted``'s key order
    (nested dicts are compared key by key), or None."""
    for key in [*wanted, *(k for k in recorded if k not in wanted)]:
        old, new = recorded.get(key), wanted.get(key)
        if key in ignore or old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            inner = _first_difference(old, new)
            return (f"{key}.{inner[0]}", inner[1], inner[2]) if inner else (key, old, new)
        return key, old, new
    return None


def _recorded_settings(sidecar: Path, where: str) -> dict:
    """The ``settings`` of a ``.meta.json`` sidecar; anything else there is an error naming the file."""
    try:
        recorded = json.loads(sidecar.read_text())["settings"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{where}: {sidecar} is not a score-table sidecar (expected JSON with a 'settings' "
                         f"object; {type(error).__name__}: {error})") from None
    if not isinstance(recorded, dict):
        raise ValueError(f"{where}: {sidecar} is not a score-table sidecar (its 'settings' is a "
                         f"{type(recorded).__name__}, expected an object)")
    return recorded


# ------------------------------------------------------------------------------------------------ merging


def merge_tables(paths, out=None, *, expect_complete: bool = False, expected_indices=None) -> ScoreTable:
    """Merges score tables (typically the shards of one run) into one table sorted by index.

    Args:
        paths (sequence of paths): the tables; all must have the same columns. Where every one has a
            ``.meta.json`` sidecar, their settings must agree apart from the shard.
        out (path, optional): write the merged table here (atomically), with a sidecar when the inputs had them
            (recorded as shard (0, 1), so the merged file resumes like an unsharded run's).
        expect_complete (bool): require the merged table to be complete: every index of ``expected_indices``
            when given (the error reports how many are missing and the first of them); otherwise every
            architecture of the run the tables come from, as their ``.meta.json`` sidecars record it (its
            architecture count, in any space: the whole NB201 space, a ``limit``, a ResNet48 ``archs`` list).
            Tables without sidecars need ``expected_indices``.
        expected_indices (iterable of int, optional): the indices a complete table holds.

    Raises:
        ValueError: different columns, one index with different architectures or values in two rows (identical
            repeats are merged into one row), one architecture under two indices (tables of two index orders),
            or missing indices under ``expect_complete``.
    """
    where = "rdnas.proxies.merge_tables"
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise ValueError(f"{where}: no tables to merge")
    if out is not None:
        prepare_output_file(out, f"{where}: out")
    tables = [ScoreTable.read(p) for p in paths]
    names = tables[0].names
    for path, table in zip(paths[1:], tables[1:]):
        if table.names != names:
            raise ValueError(f"{where}: {path} has columns {table.names} but {paths[0]} has {names}")
    sidecars = [meta_path(p) for p in paths]
    settings = None
    if all(s.is_file() for s in sidecars):
        recorded = [_recorded_settings(sidecar, where) for sidecar in sidecars]
        for path, other in zip(paths[1:], recorded[1:]):
            difference = _first_difference(recorded[0], other, ignore=("shard",))
            if difference is not None:
                key, first, this = difference
                raise ValueError(f"{where}: {paths[0]} was written with {key}={_compact(first)} but {path} with "
                                 f"{key}={_compact(this)}; merge only the shards of one run")
        settings = dict(recorded[0], shard=[0, 1])
    rows = {}  # index -> (arch, values, path)
    index_of_arch = {}  # arch -> (index, path): one architecture under two indices means two index orders
    for path, table in zip(paths, tables):
        matrix = np.stack([table.columns[n] for n in names], axis=1) if names else np.zeros((len(table), 0))
        for index, arch, values in zip(table.indices.tolist(), table.archs, matrix):
            index_seen, path_seen = index_of_arch.setdefault(arch, (index, path))
            if index_seen != index:
                raise ValueError(f"{where}: architecture {arch} has index {index_seen} in {path_seen} but {index} in "
                                 f"{path}: the tables number architectures differently (e.g. one written with --gt, "
                                 "official NB201 indices, one without, enumeration indices); merge only the shards "
                                 "of one run")
            if index in rows:
                arch_seen, values_seen, path_seen = rows[index]
                if arch_seen != arch or not _same_floats(values_seen, values):
                    differing = [n for n, a, b in zip(names, values_seen, values)
                                 if not _same_floats(np.array([a]), np.array([b]))]
                    what = f"architectures {arch_seen} and {arch}" if arch_seen != arch else f"values of {differing}"
                    raise ValueError(f"{where}: index {index} appears in {path_seen} and {path} with different "
                                     f"{what}")
                continue
            rows[index] = (arch, values, path)
    order = sorted(rows)
    if expect_complete and expected_indices is not None:
        expected = {int(i) for i in expected_indices}
        missing = sorted(expected - rows.keys())
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            raise ValueError(f"{where}: the merged table misses {len(missing)} of {len(expected)} expected indices "
                             f"({shown}); a shard is missing or unfinished")
    matrix = np.array([rows[i][1] for i in order], dtype=np.float64).reshape(len(order), len(names))
    merged = ScoreTable(order, [rows[i][0] for i in order], {n: matrix[:, k] for k, n in enumerate(names)},
                        {"path": None if out is None else str(out), "merged_from": [str(p) for p in paths]})
    if expect_complete and expected_indices is None:
        if settings is None:
            raise ValueError(f"{where}: expect_complete (--complete) needs every table's .meta.json sidecar (it "
                             "records how many architectures the run scores) or expected_indices")
        count = settings["archs"]["count"]
        if len(rows) < count:  # every row comes from this run (the sidecars agree), so fewer rows = missing ones
            raise ValueError(f"{where}: the merged table misses {count - len(rows)} of the run's {count} "
                             f"{settings['space']} architectures; a shard is missing or unfinished")
    if out is not None:
        out = Path(out)
        if settings is None:
            meta_path(out).unlink(missing_ok=True)  # never leave a stale sidecar beside the new table
        else:
            write_text_atomic(meta_path(out), json.dumps({"settings": settings, "info": {
                "merged_from": [str(p) for p in paths], "torch_version": torch.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}, indent=2) + "\n")
        merged.write(out)
    return merged


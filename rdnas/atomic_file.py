"""Files that a crash cannot leave half-written: written to a temporary file beside the target, flushed to disk,
then renamed over it, so a reader sees the old file or the new one, never part of one."""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """``open(path, mode)`` for writing (``"w"`` or ``"wb"``), made atomic: the handle writes to a hidden temporary
    file in the same folder (``.<name>.tmp<pid>``, so processes writing side by side never share one), which
    replaces ``path`` when the block ends. If the block raises, ``path`` is left as it was and the temporary file is
    removed."""
    if mode not in ("w", "wb"):
        raise ValueError(f"rdnas.atomic_file.atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(temporary, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def prepare_output_file(path, what: str) -> Path:
    """Checks before any work that ``path`` can take an output file, so a finished run is never lost at its final
    write: a folder is refused (``"<what> must be a file path, ..."``) and the parent folder is created."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} must be a file path, got the folder {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_text_atomic(path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path) as handle:
        handle.write(text)

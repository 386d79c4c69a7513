"""DaSS's torch files and the one loader that checks them.

Every file DaSS writes with ``torch.save`` is a dict of plain data (tensors, numbers, strings, lists, dicts) read
back with ``weights_only=True`` (nothing is unpickled), whose ``kind`` says what it is:

- ``rdnas-dass-teacher``: :func:`rdnas.kd.save_teacher` writes it, :func:`rdnas.kd.load_teacher` reads it;
- ``rdnas-dass-embeddings``: :func:`rdnas.kd.bench.write_embeddings`, :func:`rdnas.kd.bench.read_embeddings`;
- ``rdnas-dass-model``: :func:`rdnas.predictors.dass.save_model`, :func:`rdnas.predictors.dass.load_model`.

:func:`load_kinded_file` reads any of them, so a wrong file (missing, not a torch file, another kind) is refused the
same way everywhere, with a message that names the file and what was expected.
"""

from pathlib import Path

import torch


def load_kinded_file(path, kind: str, what: str, written_by: str | None = None) -> dict:
    """The payload (a dict) of the torch file ``path`` whose ``kind`` field is ``kind``, read on the CPU with
    ``weights_only=True``.

    Args:
        path: the file.
        kind (str): the expected ``kind`` field, e.g. ``"rdnas-dass-teacher"``.
        what (str): the file's name in messages, with its article: ``"a teacher file"``.
        written_by (str, optional): what writes such files (``"rdnas dass teacher"``), added to the wrong-kind
            message.

    Raises ValueError naming ``path`` and ``what`` when the file does not exist (``teacher file x.pt does not
    exist``), cannot be read as a torch file (``x.pt is not a teacher file (cannot be read as a torch file:
    UnpicklingError)``) or has another kind (``x.pt is not a teacher file: its kind is 'other', expected
    'rdnas-dass-teacher' (written by rdnas dass teacher)``).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what.split(' ', 1)[-1]} {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user error
        raise ValueError(f"{path} is not {what} (cannot be read as a torch file: {type(error).__name__})") from None
    found = payload.get("kind") if isinstance(payload, dict) else None
    if found != kind:
        origin = f" (written by {written_by})" if written_by else ""
        raise ValueError(f"{path} is not {what}: its kind is {found!r}, expected {kind!r}{origin}")
    return payload

"""Checkpoints that a crash cannot corrupt: written to a temporary file, flushed to disk, then renamed."""

from dataclasses import fields
from pathlib import Path

import torch

from rdnas.atomic_file import atomic_open


def save_checkpoint(path, state: dict) -> None:
    """Writes ``state`` to ``path`` atomically: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)


def load_checkpoint(path) -> dict:
    """Reads a checkpoint written by save_checkpoint onto the CPU (tensors and plain Python values only)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"rdnas.train: no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types (KeyError, UnpicklingError, ...) for what it cannot read
        raise ValueError(f"rdnas.train.load_checkpoint: {path} is not a readable rdnas checkpoint (truncated, "
                         f"corrupt or not a torch.save file; torch.load raised {type(error).__name__})") from None


def config_from_dict(cls, values: dict, owner: str):
    """The dataclass ``cls`` from the dict a checkpoint or JSON file saved; a field ``cls`` does not have is a
    ValueError naming ``owner`` (e.g. "rdnas.train.TrainConfig")."""
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"{owner}: unknown fields {sorted(unknown)}")
    return cls(**values)

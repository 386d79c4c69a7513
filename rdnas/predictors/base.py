"""The predictor interface, its registry, and the model file format.

A predictor learns from a few (architecture, accuracy) pairs and scores any architecture of its space, higher =
better::

    predictor = get_predictor("nar")(space="nb201", seed=0)
    predictor.fit(archs, accuracy)          # LongTensor[N, space.width], Tensor[N] (or a sequence)
    scores = predictor.predict(archs)       # LongTensor[K, space.width] -> float64 Tensor[K]
    predictor.save("model.pt"); load_predictor("model.pt").predict(archs)  # identical scores

A model file is ``torch.save`` of plain tensors, numbers, strings, lists and dicts (read back with
``weights_only=True``; nothing is unpickled): ``{"format", "model", "options", "features", "state"}``.
It is written atomically (:mod:`rdnas.atomic_file`).
"""

from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import Tensor

from rdnas.atomic_file import atomic_open
from rdnas.predictors.features import ArchFeatures

FORMAT = "rdnas.predictor/1"


class NotFitted(RuntimeError):
    """predict or save before fit."""


class Predictor(ABC):
    """Base class (module docstring). Subclasses set ``name``, take their options as keyword arguments (recorded in
    ``self.options`` and saved) and implement ``_fit``, ``_predict``, ``_state`` and ``_load_state``.

    Args:
        space: search space name or object (default ``"nb201"``); ignored when ``features`` is given.
        features (ArchFeatures, optional): the inputs (default: the space's structure features, no proxies).
        seed (int): every random draw of ``fit`` (initialisation, batches, dropout) comes from it.
        progress (bool): a tqdm progress bar while fitting.
    """

    name: str = ""

    def __init__(self, space="nb201", features: ArchFeatures | None = None, seed: int = 0, progress: bool = False,
                 **options):
        self.features = features if features is not None else ArchFeatures(space)
        self.space = self.features.space
        self.seed = int(seed)
        self.progress = progress
        self.options = options
        self.fitted = False

    # -- the interface ------------------------------------------------------------------------------------------
    def fit(self, archs, accuracy) -> "Predictor":
        """Learns from ``archs`` (LongTensor[N, space.width]) and their ``accuracy`` (Tensor[N], higher = better).
        Deterministic on the CPU for a given seed. Returns self."""
        archs = self.space.validate(archs)
        accuracy = torch.as_tensor(accuracy, dtype=torch.float64).flatten()
        if len(accuracy) != len(archs):
            raise ValueError(f"rdnas.predictors.{self.name}.fit: {len(archs)} architectures but {len(accuracy)} "
                             "accuracies")
        if not bool(torch.isfinite(accuracy).all()):
            raise ValueError(f"rdnas.predictors.{self.name}.fit: an accuracy is NaN or infinite")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self._fit(archs, accuracy)
        self.fitted = True
        return self

    def predict(self, archs, batch_size: int = 1024) -> Tensor:
        """Scores of ``archs`` (LongTensor[K, space.width]): float64 Tensor[K], higher = predicted better. Needs
        nothing but the architectures (no labels)."""
        if not self.fitted:
            raise NotFitted(f"rdnas.predictors.{self.name}: predict before fit (or load)")
        archs = self.space.validate(archs)
        with torch.no_grad():
            parts = [self._predict(archs[start:start + batch_size]) for start in range(0, len(archs), batch_size)]
        return torch.cat(parts).double() if parts else torch.zeros(0, dtype=torch.float64)

    def save(self, path) -> None:
        """Writes the fitted predictor to ``path`` atomically (module docstring)."""
        if not self.fitted:
            raise NotFitted(f"rdnas.predictors.{self.name}: save before fit")
        payload = {"format": FORMAT, "model": self.name, "seed": self.seed, "options": dict(self.options),
                   "features": self.features.state(), "state": self._state()}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as handle:
            torch.save(payload, handle)

    @classmethod
    def load(cls, path) -> "Predictor":
        """A predictor saved by :meth:`save` (any registered kind; ``Predictor.load`` = :func:`load_predictor`)."""
        return load_predictor(path)

    # -- what a kind implements ---------------------------------------------------------------------------------
    @abstractmethod
    def _fit(self, archs: Tensor, accuracy: Tensor) -> None:
        """archs: validated LongTensor[N, width]; accuracy: float64 Tensor[N]. The global RNG is seeded."""

    @abstractmethod
    def _predict(self, archs: Tensor) -> Tensor:
        """archs: validated LongTensor[K, width] -> Tensor[K] (called under no_grad)."""

    @abstractmethod
    def _state(self) -> dict:
        """What :meth:`_load_state` needs to rebuild the fitted predictor (plain types and tensors only)."""

    @abstractmethod
    def _load_state(self, state: dict) -> None:
        """Rebuilds the fitted predictor from :meth:`_state`'s dict."""


class ModulePredictor(Predictor):
    """A predictor whose fitted state is one ``nn.Module`` (``self.model``, made by ``_build()``): saved as its
    state dict and rebuilt in eval mode on load."""

    @abstractmethod
    def _build(self):
        """A fresh model of this predictor's configuration."""

    def _state(self) -> dict:
        return {"model": self.model.state_dict()}

    def _load_state(self, state: dict) -> None:
        self.model = self._build()
        self.model.load_state_dict(state["model"])
        self.model.eval()


PREDICTORS: dict[str, type[Predictor]] = {}


def register_predictor(cls: type[Predictor]) -> type[Predictor]:
    """Class decorator: adds a Predictor subclass to the registry under ``cls.name``."""
    if not cls.name or cls.name in PREDICTORS:
        raise ValueError(f"rdnas.predictors.register_predictor: missing or repeated name {cls.name!r}")
    PREDICTORS[cls.name] = cls
    return cls


def get_predictor(name: str) -> type[Predictor]:
    """The registered predictor class called ``name``."""
    if name not in PREDICTORS:
        raise ValueError(f"rdnas.predictors: unknown predictor {name!r}; registered: {', '.join(PREDICTORS)}")
    return PREDICTORS[name]


def load_predictor(path) -> Predictor:
    """Reads a model file written by :meth:`Predictor.save`; ValueError for a file that is not one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"rdnas.predictors: no model file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises several types for a file that is not a torch archive; its text is not quoted
        raise ValueError(f"rdnas.predictors: {path} is not a predictor file: not a model file that rdnas predictor "
                         "fit writes (a torch file of tensors and plain values), or truncated") from None
    if isinstance(payload, dict) and isinstance(payload.get("config"), dict) and isinstance(payload.get("model"), dict):
        raise ValueError(f"rdnas.predictors: {path} is a supernet checkpoint (rdnas train), not a predictor model "
                         "file (rdnas predictor fit --out)")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"rdnas.predictors: {path} is a torch file but not a predictor file (format {FORMAT})")
    predictor = get_predictor(payload["model"])(features=ArchFeatures.from_state(payload["features"]),
                                                seed=payload["seed"], **payload["options"])
    predictor._load_state(payload["state"])
    predictor.fitted = True
    return predictor

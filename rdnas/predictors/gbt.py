"""Gradient-boosted regression trees (scikit-learn) on the predictors' flat features: the baseline that shows what
NAR's transformer and tiers add on the same inputs and splits.

The trees regress the accuracy (``GradientBoostingRegressor``, squared error, seeded). A model file stores the
training set and the options, not the trees (no pickle): :func:`rdnas.predictors.load_predictor` refits them,
deterministically, in well under a second for the training sizes of the NB201 protocol.
"""

import numpy as np
import torch
from torch import Tensor

from rdnas.predictors.base import Predictor, register_predictor


@register_predictor
class GBTPredictor(Predictor):
    """Options: ``n_estimators`` (300), ``learning_rate`` (0.05), ``max_depth`` (3), ``subsample`` (0.8),
    ``min_samples_leaf`` (2)."""

    name = "gbt"
    DEFAULTS = {"n_estimators": 300, "learning_rate": 0.05, "max_depth": 3, "subsample": 0.8, "min_samples_leaf": 2}

    def __init__(self, space="nb201", features=None, seed: int = 0, progress: bool = False, **options):
        unknown = set(options) - set(self.DEFAULTS)
        if unknown:
            raise ValueError(f"rdnas.predictors.gbt: unknown option(s) {sorted(unknown)}; options: "
                             f"{sorted(self.DEFAULTS)}")
        super().__init__(space, features, seed, progress, **{**self.DEFAULTS, **options})
        self.trees = None
        self.train_archs = self.train_accuracy = None

    def _fit(self, archs: Tensor, accuracy: Tensor) -> None:
        from sklearn.ensemble import GradientBoostingRegressor

        self.train_archs, self.train_accuracy = archs.clone(), accuracy.clone()
        self.trees = GradientBoostingRegressor(random_state=self.seed, **self.options)
        self.trees.fit(self.features.flat(archs).double().numpy(), accuracy.numpy())

    def _predict(self, archs: Tensor) -> Tensor:
        return torch.from_numpy(np.asarray(self.trees.predict(self.features.flat(archs).double().numpy())))

    def _state(self) -> dict:
        return {"archs": self.train_archs, "accuracy": self.train_accuracy}

    def _load_state(self, state: dict) -> None:
        self._fit(state["archs"], state["accuracy"])

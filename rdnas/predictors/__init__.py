"""Learned rankers: fit on a few (architecture, accuracy) pairs, score the whole space (see base.py)."""

from rdnas.predictors.base import (
    PREDICTORS, NotFitted, Predictor, get_predictor, load_predictor, register_predictor,
)
from rdnas.predictors.features import (
    ArchFeatures, ProxyFeatures, nb201_cell_tensors, nb201_path_tokens, rank_normalise,
)
from rdnas.predictors.nar import NARModel, NARPredictor, tier_assignment
from rdnas.predictors.gbt import GBTPredictor
from rdnas.predictors.mlp import MLPPredictor

__all__ = [
    "PREDICTORS", "ArchFeatures", "GBTPredictor", "MLPPredictor", "NARModel", "NARPredictor", "NotFitted",
    "Predictor", "ProxyFeatures", "get_predictor", "load_predictor", "nb201_cell_tensors", "nb201_path_tokens",
    "rank_normalise", "register_predictor", "tier_assignment",
]

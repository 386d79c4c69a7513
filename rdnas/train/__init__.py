"""Training: SPOS (this module), samplers, checkpoints."""

from rdnas.train.checkpoint import load_checkpoint, save_checkpoint
from rdnas.train.samplers import UniformSampler
from rdnas.train.spos import SPOSTrainer, TrainConfig, load_data

__all__ = ["SPOSTrainer", "TrainConfig", "UniformSampler", "load_checkpoint", "load_data", "save_checkpoint"]

"""Training: the one-shot trainer (SPOS, RD-NAS, baselines), samplers, the RD-NAS teacher, checkpoints."""

from rdnas.train.checkpoint import load_checkpoint, save_checkpoint
from rdnas.train.samplers import FairSampler, HammingPairSampler, MarginSubnetSampler, SandwichSampler, UniformSampler
from rdnas.train.teacher import Teacher, rank_average
from rdnas.train.trainer import METHODS, OneShotTrainer, TrainConfig, load_data, rank_weight

__all__ = ["FairSampler", "HammingPairSampler", "METHODS", "MarginSubnetSampler", "OneShotTrainer", "SandwichSampler",
           "Teacher", "TrainConfig", "UniformSampler", "load_checkpoint", "load_data", "rank_average", "rank_weight",
           "save_checkpoint"]

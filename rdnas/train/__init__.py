"""Training: the one-shot trainer (SPOS, RD-NAS, baselines), samplers, the RD-NAS teacher, checkpoints."""

from rdnas.train.checkpoint import load_checkpoint, save_checkpoint
from rdnas.train.samplers import (FairSampler, HammingPairSampler, MarginSubnetSampler, MinHammingPairSampler,
                                  SandwichSampler, UniformSampler)
from rdnas.train.teacher import SampledTeacher, Teacher, rank_average
from rdnas.data import load_data  # re-exported: older code imports it from here
from rdnas.train.trainer import METHODS, OneShotTrainer, TrainConfig, make_teacher, rank_weight

__all__ = ["FairSampler", "HammingPairSampler", "METHODS", "MarginSubnetSampler", "MinHammingPairSampler",
           "OneShotTrainer", "SampledTeacher", "SandwichSampler", "Teacher", "TrainConfig", "UniformSampler",
           "load_checkpoint", "load_data", "make_teacher", "rank_average", "rank_weight", "save_checkpoint"]

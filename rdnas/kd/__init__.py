"""Knowledge distillation for DaSS: parameter remapping of students from their teacher, the KD loss, student
training with cached teacher logits, teachers, KD tasks and the KD mini-benchmark builder."""

from rdnas.kd.loss import ALPHA, TEMPERATURE, kd_loss
from rdnas.kd.remap import largest_network, remap, remap_state
from rdnas.kd.train import StudentRecipe, evaluate, predict_logits, teacher_logits, train_student

__all__ = ["ALPHA", "TEMPERATURE", "StudentRecipe", "evaluate", "kd_loss", "largest_network", "predict_logits",
           "remap", "remap_state", "teacher_logits", "train_student"]

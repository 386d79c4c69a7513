"""Knowledge distillation for DaSS: parameter remapping of students from their teacher, the KD loss, student
training with cached teacher logits, teachers, KD tasks and the KD mini-benchmark builder."""

from rdnas.kd.loss import ALPHA, TEMPERATURE, kd_loss
from rdnas.kd.remap import largest_network, remap, remap_state
from rdnas.kd.train import StudentRecipe, evaluate, predict_logits, teacher_logits, train_student
from rdnas.kd.data import DATASET_SPECS, TaskData, load_task_data, read_image_folder, write_image_folder
from rdnas.kd.tasks import TaskFile, TaskSpec, TeacherRecipe, read_tasks, write_tasks
from rdnas.kd.teacher import Teacher, load_teacher, save_teacher, train_teacher

__all__ = ["ALPHA", "DATASET_SPECS", "TEMPERATURE", "StudentRecipe", "TaskData", "TaskFile", "TaskSpec", "Teacher",
           "TeacherRecipe", "evaluate", "kd_loss", "largest_network", "load_task_data", "load_teacher",
           "predict_logits", "read_image_folder", "read_tasks", "remap", "remap_state", "save_teacher",
           "teacher_logits", "train_student", "train_teacher", "write_image_folder", "write_tasks"]

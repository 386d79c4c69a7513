"""The knowledge-distillation loss of DaSS's KD labels (Hinton et al.'s, with DaSS's weights)."""

import torch.nn.functional as F
from torch import Tensor

ALPHA = 0.5
"""Weight of the cross-entropy term (the KL term gets 1 - ALPHA)."""
TEMPERATURE = 6.0
"""Softmax temperature of the KL term."""


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, alpha: float = ALPHA,
            temperature: float = TEMPERATURE) -> Tensor:
    """``(1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + alpha * CE(z_s, y)``, both terms averaged
    over the batch (the KL summed over classes per example, then the batch mean).

    Args:
        student_logits (Tensor[B, C]): z_s, differentiable.
        teacher_logits (Tensor[B, C]): z_t (no gradient flows into it).
        labels (LongTensor[B]): y in 0..C-1.
        alpha (float): weight of the cross-entropy, in [0, 1].
        temperature (float): T > 0.

    Returns a scalar Tensor in the logits' dtype.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(f"rdnas.kd.kd_loss: student_logits and teacher_logits must both be [B, C], got "
                         f"{list(student_logits.shape)} and {list(teacher_logits.shape)}")
    if labels.shape != student_logits.shape[:1]:
        raise ValueError(f"rdnas.kd.kd_loss: labels must be [B] = [{student_logits.shape[0]}], got "
                         f"{list(labels.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"rdnas.kd.kd_loss: alpha must lie in [0, 1], got {alpha}")
    if not temperature > 0.0:
        raise ValueError(f"rdnas.kd.kd_loss: temperature must be positive, got {temperature}")
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits.detach().to(student_logits.dtype) / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return (1.0 - alpha) * temperature**2 * kl + alpha * F.cross_entropy(student_logits, labels)

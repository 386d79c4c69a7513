"""DaSS (Lee, An, Kim, Hwang, ICLR 2023): a meta-predictor of the accuracy a student reaches when it is trained
with knowledge distillation from a task's teacher, adapted to the task through the teacher alone.

Inputs of one student on one task (:mod:`rdnas.kd.bench` computes them):

- S: the last-stage activation map of the remapped student on a fixed N(0, 1) probe, [C, H, W] (channels
  zero-padded to ``channels``), through a conv encoder (3x3 stride 2, ReLU, 3x3 stride 2, ReLU, global average
  pool) to ``width`` features;
- T: the teacher's map on the same probe through a second encoder of the same shape;
- A: the space's architecture encoding (``space.encode``, [F]) through a linear layer to ``arch_width`` features.

``concat(S, A, T) -> Linear(., 64) -> tanh -> Linear(64, 1)`` predicts the accuracy as a fraction (KD validation
accuracy / 100). Teacher-guided adaptation (Meta-SGD): before predicting on a task, one gradient step on the
task's single free label, the teacher itself (its own map as S and T, its architecture as A, its validation
accuracy as the label), with a learned step size per parameter (initialised to 0.005):
``theta' = theta - alpha * grad_theta MSE(f_theta(teacher), acc_teacher)``. Meta-training differentiates the query
loss (MSE on the task's students) through that step (second order) into theta and alpha.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

STEP_INIT = 0.005
"""Initial value of every per-parameter inner step size (DaSS's Meta-SGD)."""


class ConvEncoder(nn.Module):
    """conv 3x3 stride 2 -> ReLU -> conv 3x3 stride 2 -> ReLU -> global average pool: [B, C, H, W] -> [B, width]."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, 2, 1)
        self.conv2 = nn.Conv2d(width, width, 3, 2, 1)

    def forward(self, maps: Tensor) -> Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(maps)))).mean(dim=(2, 3))


class DaSSNet(nn.Module):
    """The DaSS network (module docstring): ``forward(student_maps [B, channels, H, W], teacher_maps [B, channels,
    H, W], arch_features [B, arch_features]) -> predicted accuracy fraction [B]``.

    Args:
        channels (int): channels of the activation maps (maps with fewer are zero-padded by :func:`pad_channels`).
        arch_features (int): the space's encoding width (``space.encode(...).shape[1]``).
        width (int): each encoder's output features (DaSS: 256).
        arch_width (int): features of the linear architecture encoding.
        hidden (int): the head's hidden units (DaSS: 64).
        use_student, use_teacher, use_arch (bool): ablations: a left-out input is replaced by zeros.
    """

    def __init__(self, channels: int, arch_features: int, width: int = 256, arch_width: int = 32, hidden: int = 64,
                 use_student: bool = True, use_teacher: bool = True, use_arch: bool = True):
        super().__init__()
        self.channels = channels
        self.use = (use_student, use_arch, use_teacher)
        self.student_encoder = ConvEncoder(channels, width)
        self.teacher_encoder = ConvEncoder(channels, width)
        self.arch_encoder = nn.Linear(arch_features, arch_width)
        self.hidden = nn.Linear(2 * width + arch_width, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, student_maps: Tensor, teacher_maps: Tensor, arch_features: Tensor) -> Tensor:
        s = self.student_encoder(student_maps)
        a = self.arch_encoder(arch_features)
        t = self.teacher_encoder(teacher_maps)
        s, a, t = (x if keep else torch.zeros_like(x) for x, keep in zip((s, a, t), self.use))
        return self.out(torch.tanh(self.hidden(torch.cat([s, a, t], 1)))).squeeze(1)


def pad_channels(maps: Tensor, channels: int) -> Tensor:
    """Activation maps [B, C, H, W] with C <= ``channels`` zero-padded to [B, channels, H, W]; ValueError naming
    both counts when C is larger (a teacher wider than the predictor was built for)."""
    if maps.shape[1] > channels:
        raise ValueError(f"rdnas.predictors.dass: activation maps have {maps.shape[1]} channels, the predictor takes "
                         f"at most {channels} (build it with channels >= the widest teacher's last stage)")
    return F.pad(maps, (0, 0, 0, 0, 0, channels - maps.shape[1]))


class MetaSGD(nn.Module):
    """A :class:`DaSSNet` with one learned inner step size per parameter (Meta-SGD).

    ``adapt(support)`` returns the adapted parameters ``theta - alpha * grad MSE(f_theta(support))`` as a dict
    (differentiable into theta and alpha when ``create_graph``); ``predict(params, batch)`` runs the network with
    given parameters. A batch is a tuple (student_maps, teacher_maps, arch_features[, targets]).
    """

    def __init__(self, net: DaSSNet, step_init: float = STEP_INIT):
        super().__init__()
        self.net = net
        self.steps = nn.ParameterDict({name.replace(".", "__"): nn.Parameter(torch.full_like(p, step_init))
                                       for name, p in net.named_parameters()})

    def parameters_dict(self) -> dict:
        return dict(self.net.named_parameters())

    def predict(self, params: dict, student_maps: Tensor, teacher_maps: Tensor, arch_features: Tensor) -> Tensor:
        """Predicted accuracy fractions [B] with parameters ``params`` (a dict name -> Tensor)."""
        return functional_call(self.net, params, (student_maps, teacher_maps, arch_features))

    def support_loss(self, params: dict, support) -> Tensor:
        """MSE of the prediction on the support set (the teacher): support = (S [1, C, H, W], T, A [1, F], y [1])."""
        *inputs, target = support
        return F.mse_loss(self.predict(params, *inputs), target)

    def adapt(self, support, create_graph: bool = True, params: dict | None = None) -> dict:
        """One Meta-SGD step on ``support``: ``{name: theta - alpha_name * dL_support/dtheta}``."""
        params = self.parameters_dict() if params is None else params
        loss = self.support_loss(params, support)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
        return {name: p - self.steps[name.replace(".", "__")] * g for (name, p), g in zip(params.items(), grads)}


def episode_loss(model: MetaSGD, support, query, adapt: bool = True) -> Tensor:
    """The outer loss of one task: MSE of the (adapted) predictions on the query students,
    query = (S [Q, C, H, W], T [Q, C, H, W], A [Q, F], y [Q])."""
    params = model.adapt(support) if adapt else model.parameters_dict()
    *inputs, target = query
    return F.mse_loss(model.predict(params, *inputs), target)

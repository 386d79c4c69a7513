"""DaSS's functional embeddings: one fixed N(0, 1) probe image through a task's teacher and through many students
of it at once.

- :func:`probe_image`: the probe; :func:`last_stage_map`: a network's last-stage activation map on it;
- :func:`remapped_supernet`: a supernet holding the teacher's first entries, whose subnet ``arch`` is the student
  :func:`rdnas.kd.remap` would build (DaSS's ``copy_paste_first``), so no network is built per student;
- :func:`random_supernet`: a freshly initialised supernet of the students' family, whose subnets are the randomly
  initialised students of the random-embedding ablation (sliced the same way, untrained weights);
- :func:`supernet_last_stage_maps`: every subnet's map in one batched eval-mode pass (the space's
  ``forward_stacked``), or one forward per subnet (``batched=False``, the reference it is tested against);
- :func:`task_embeddings`: one task's teacher, remapped-student and random-student maps, as the KD build
  (:func:`rdnas.kd.bench.write_embeddings`) and ``rdnas dass rank`` compute them.
"""

import torch
from torch import Tensor, nn

from rdnas.kd.tasks import TaskSpec
from rdnas.kd.teacher import Teacher


def probe_image(in_channels: int, image_size: int, seed: int) -> Tensor:
    """The fixed probe: one N(0, 1) image [1, in_channels, image_size, image_size] from
    ``torch.Generator().manual_seed(seed)``."""
    return torch.randn(1, in_channels, image_size, image_size, generator=torch.Generator().manual_seed(seed))


def feature_module(network: nn.Module) -> nn.Module:
    """The module whose output is the last stage's activation map: the last block of ``network.stages[-1]``."""
    stages = getattr(network, "stages", None)
    if not isinstance(stages, nn.ModuleList) or not len(stages) or not len(stages[-1]):
        raise ValueError(f"rdnas.kd.feature_module: {type(network).__name__} has no stages (ModuleList of block "
                         "lists) whose last block gives the last-stage activation map")
    return stages[-1][-1]


@torch.no_grad()
def last_stage_map(network: nn.Module, probe: Tensor) -> Tensor:
    """The last stage's activation map [C, H, W] of ``network`` (eval mode) on ``probe`` [1, C_in, S, S], in the
    network's dtype, on the CPU."""
    captured = []
    handle = feature_module(network).register_forward_hook(lambda module, args, output: captured.append(output))
    was_training = network.training
    try:
        network.eval()
        network(probe)
    finally:
        handle.remove()
        network.train(was_training)
    return captured[0][0].detach().cpu()


def remapped_supernet(teacher: nn.Module, space, **options) -> nn.Module:
    """A supernet of ``space`` (eval mode) at the students' widths (the teacher's ``config`` overridden by
    ``options``) holding the teacher's first entries: ``remapped_supernet(t, space, **o)(x, arch)`` equals
    ``remap(t, arch, space, **o).eval()(x)`` with no network built per student."""
    from rdnas.kd.remap import remap_state
    from rdnas.supernet import build_supernet, supernet_spec

    spec = supernet_spec(space)
    config = {**teacher.config, **options}
    supernet = build_supernet(space, config["num_classes"], config["in_channels"],
                              **{k: v for k, v in config.items() if k in spec.option_names})
    reference = next(iter(teacher.parameters()))
    supernet.to(device=reference.device, dtype=reference.dtype)
    supernet.load_state_dict(remap_state(teacher.state_dict(), supernet.state_dict(), "rdnas.kd.embeddings"))
    return supernet.eval()


RANDOM_STUDENTS_SEED = 0
"""The initialisation seed of the randomly initialised students (the random-embedding ablation's inputs)."""


def random_supernet(space, num_classes: int, in_channels: int, seed: int = RANDOM_STUDENTS_SEED,
                    **options) -> nn.Module:
    """A freshly initialised supernet of ``space`` (eval mode; the zero-cost proxies' scoring supernet,
    :func:`rdnas.proxies.scoring_supernet`: default PyTorch initialisation from ``seed``) at the students' network
    ``options``: its subnet ``arch`` is the randomly initialised student of the random-embedding ablation, sliced
    exactly as a remapped student is sliced from its teacher, with untrained weights in place of the teacher's."""
    from rdnas.proxies import scoring_supernet
    from rdnas.spaces import get_space

    return scoring_supernet(num_classes=num_classes, in_channels=in_channels, seed=seed,
                            space=get_space(space).name, **options).eval()


@torch.no_grad()
def supernet_last_stage_maps(supernet: nn.Module, archs, probe: Tensor, batched: bool = True) -> list[Tensor]:
    """The last-stage maps [C_k, H, W] (the supernet's dtype, on the CPU) of the subnets ``archs`` of the
    eval-mode ``supernet`` on ``probe`` [1, C_in, S, S], each equal to ``last_stage_map(supernet.export(arch),
    probe)``. Where the supernet has a batched eval-mode pass (``forward_stacked``) every subnet runs in that one
    pass; otherwise (or with ``batched=False``: the reference the batched pass is tested and timed against) one
    forward per subnet, the map taken from the last block the subnet ran."""
    stacked = getattr(supernet, "forward_stacked", None) if batched else None
    if stacked is not None:  # the space's batched eval-mode pass: every subnet in one go
        _, features, widths = stacked(probe, archs, return_features=True)
        return [features[k, 0, :int(widths[k])].detach().cpu() for k in range(len(features))]
    blocks = getattr(supernet, "stages", None)
    if not isinstance(blocks, nn.ModuleList) or not len(blocks):
        raise ValueError(f"rdnas.kd.embeddings: the {type(supernet).__name__} supernet has no stages whose blocks give "
                         "the last-stage activation map")
    captured = []
    handles = [block.register_forward_hook(lambda module, args, output: captured.append(output))
               for block in blocks[-1]]
    maps = []
    try:
        for arch in archs:
            captured.clear()
            supernet(probe, arch)
            maps.append(captured[-1][0].detach().cpu())  # the last block the subnet ran
    finally:
        for handle in handles:
            handle.remove()
    return maps


def remapped_last_stage_maps(teacher: nn.Module, archs, space, probe: Tensor, **options) -> list[Tensor]:
    """The last-stage maps [C_k, H, W] of the students ``archs`` remapped from ``teacher`` (with ``options`` as in
    :func:`rdnas.kd.remap`) on ``probe``, equal to ``last_stage_map(remap(teacher, arch, space, **options),
    probe)`` but computed through one :func:`remapped_supernet` (:func:`supernet_last_stage_maps`), so no network
    is built per student (building them is most of the cost of ranking many students)."""
    return supernet_last_stage_maps(remapped_supernet(teacher, space, **options), archs, probe)


def _padded(maps: list[Tensor], channels: int) -> Tensor:
    """Maps [C_k, H, W] as one float32 Tensor[K, channels, H, W], channels past each C_k zero."""
    out = torch.zeros(len(maps), channels, *maps[0].shape[1:]) if maps else torch.zeros(0, channels, 1, 1)
    for k, m in enumerate(maps):
        out[k, :m.shape[0]] = m
    return out


def task_embeddings(teacher: Teacher, task: TaskSpec, archs: list, probe_seed: int,
                    random_students: bool = True) -> dict:
    """The functional embeddings of one task (float32): ``probe`` [1, C_in, S, S]; ``teacher`` [C_t, H, W] (the
    teacher's last-stage map); ``students`` [K, C_t, H, W] (each remapped student's, channels zero-padded to the
    teacher's); ``random`` [K, C_t, H, W] (the randomly initialised students' of :func:`random_supernet`, the same
    for every task of these students' options: the random-embedding ablation's input; zeros without
    ``random_students``, which halves the work where only the remapped students count); ``archs`` (K strings),
    ``teacher_arch``, ``teacher_valid_acc``, ``teacher_digest``, ``split``. Both kinds of students run as one
    batched pass each (:func:`supernet_last_stage_maps`)."""
    from rdnas.spaces import get_space

    space = get_space(teacher.space)
    config = teacher.network.config
    reference = next(iter(teacher.network.parameters()))
    probe = probe_image(config["in_channels"], task.image_size, probe_seed)
    on_device = probe.to(device=reference.device, dtype=reference.dtype)
    teacher_map = last_stage_map(teacher.network, on_device).float()
    channels = teacher_map.shape[0]
    archs = [tuple(a) for a in space.validate(archs).tolist()]
    students = remapped_last_stage_maps(teacher.network, archs, space, on_device, **task.student_options)
    if random_students:
        fresh = random_supernet(space, config["num_classes"], config["in_channels"],
                                **task.student_network_options()).to(device=reference.device, dtype=reference.dtype)
        randoms = _padded(supernet_last_stage_maps(fresh, archs, on_device), channels)
    else:
        randoms = torch.zeros(len(archs), *teacher_map.shape)
    return {"split": task.split, "probe": probe, "teacher": teacher_map, "students": _padded(students, channels),
            "random": randoms, "archs": [space.to_string(torch.as_tensor(a)) for a in archs],
            "teacher_arch": space.to_string(space.largest()), "teacher_valid_acc": float(teacher.valid_acc),
            "teacher_digest": teacher.digest()}

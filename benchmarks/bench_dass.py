"""DaSS on a new task: ranking 1,000 students (``rdnas dass rank`` without its file I/O), on the CPU.

Issue 26's target: under 30 s on 2 cores. A round is what ``rdnas dass rank --archs 1000`` does after reading its
files: sample 1,000 ResNet48 students, take the functional embedding of each (the fixed probe through the student
remapped from the teacher), adapt the model on the teacher (one Meta-SGD step) and predict every student. The
setting is the KD benchmark's (benchmarks/dass_tasks/tasks.json): a / 4 teacher (small stem, 1 channel, 5
classes, 16 px) and / 8 students; the teacher's and the model's weights are random (the time does not depend on
them). Two implementations of the embeddings side by side in one group:

- ``stacked``: every student in one batched eval-mode pass (``ResNet48Supernet.forward_stacked``), what rdnas uses;
- ``per-student``: one supernet forward per student (the earlier path, kept here as the baseline).

Before timing, the two are checked to give the same last-stage maps of 40 students (float64), and the candidate's
ranking to cover 1,000 distinct students with finite scores.
Run on an idle machine with the target's 2 threads::

    OMP_NUM_THREADS=2 PYTHONPATH=. python -m pytest benchmarks/bench_dass.py --benchmark-json=/tmp/bench_dass.json
    PYTHONPATH=. python -m pytest benchmarks/bench_dass.py --benchmark-disable -q      # CI: each runs once
"""

import pytest
import torch

from rdnas.kd import TaskSpec, TeacherRecipe, largest_network
from rdnas.kd import embeddings as kd_embeddings
from rdnas.kd.teacher import Teacher
from rdnas.minibench.build import sample_architectures
from rdnas.predictors.dass import DaSSNet, MetaSGD, predict_for_teacher
from rdnas.spaces import get_space

SPACE = get_space("resnet48")
STUDENTS = 1000
TARGET_S = 30.0


@pytest.fixture(scope="module")
def task():
    """(teacher, model, config) of a new task at the KD benchmark's sizes, random weights and BN statistics."""
    recipe = TeacherRecipe(options={"resnet_stem": "small", "width_divisor": 4})
    spec = TaskSpec("bench", "fashion_mnist", (0, 1, 2, 3, 4), 16, 2000, 1000, split="meta-test", teacher=recipe,
                    student_options={"width_divisor": 8})
    network = largest_network(SPACE, 5, 1, seed=0, **recipe.options)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a fresh BN is the identity: give it statistics so that slicing mistakes show
        for name, tensor in network.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith("running_mean"):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    teacher = Teacher(network.eval(), "resnet48", spec.data_dict(), recipe, 80.0, 0.6, (0.5,), (0.25,))
    maps = kd_embeddings.last_stage_map(teacher.network, kd_embeddings.probe_image(1, 16, 0))
    features = SPACE.encode(SPACE.largest().unsqueeze(0)).shape[1]
    torch.manual_seed(0)
    model = MetaSGD(DaSSNet(maps.shape[0], features))  # DaSS's sizes: 256-wide encoders, hidden 64
    config = {"space": "resnet48", "probe_seed": 0, "image_sides": [list(maps.shape[1:])], "embedding": "remap",
              "student_options": {"width_divisor": 8}, "channels": maps.shape[0]}
    return teacher, model, config


def _per_student_maps(teacher, archs, space, probe, **options):
    """The baseline: the remapped supernet run once per student, the last stage's output caught by a hook."""
    supernet = kd_embeddings.remapped_supernet(teacher, space, **options)
    return kd_embeddings.supernet_last_stage_maps(supernet, archs, probe, batched=False)


def _rank(task, maps_of=None):
    """The ranking of ``rdnas dass rank --archs 1000``: (architecture strings best first, scores)."""
    teacher, model, config = task
    archs = sample_architectures(STUDENTS, seed=0, space=SPACE)
    if maps_of is None:
        names, scores = predict_for_teacher(model, config, teacher, archs)
    else:
        original = kd_embeddings.remapped_last_stage_maps
        kd_embeddings.remapped_last_stage_maps = maps_of
        try:
            names, scores = predict_for_teacher(model, config, teacher, archs)
        finally:
            kd_embeddings.remapped_last_stage_maps = original
    order = torch.argsort(scores, descending=True, stable=True)
    return [names[k] for k in order.tolist()], scores[order]


def test_the_two_paths_agree(task):
    teacher, _, _ = task
    archs = sample_architectures(40, seed=1, space=SPACE)
    double = teacher.network.double()
    try:
        probe = kd_embeddings.probe_image(1, 16, 0).double()
        stacked = kd_embeddings.remapped_last_stage_maps(double, archs, SPACE, probe, width_divisor=8)
        looped = _per_student_maps(double, archs, SPACE, probe, width_divisor=8)
    finally:
        teacher.network.float()
    assert len(stacked) == len(looped) == 40
    for a, b in zip(stacked, looped):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["stacked", "per-student"])
def test_rank_1000_students_of_a_new_task(device_benchmark, task, impl):
    bench = device_benchmark
    if bench.device != "cpu":
        pytest.skip("DaSS ranks on the CPU")
    bench.group = f"dass-rank-cpu-{STUDENTS}"
    bench.extra_info.update(impl=impl, label=f"rank {STUDENTS} students ({impl} embeddings)", students=STUDENTS,
                            role="candidate" if impl == "stacked" else "baseline", target_s=TARGET_S,
                            threads=torch.get_num_threads())
    maps_of = None if impl == "stacked" else _per_student_maps
    if impl == "stacked":  # the baseline's maps are test_the_two_paths_agree's
        names, scores = _rank(task)
        assert len(names) == len(set(names)) == STUDENTS and bool(torch.isfinite(scores).all())
    seconds = bench(lambda: _rank(task, maps_of), rounds=3 if impl == "stacked" else 1)
    if seconds is not None:
        bench.extra_info["under_target"] = seconds < TARGET_S

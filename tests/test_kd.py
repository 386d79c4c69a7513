"""rdnas.kd: parameter remapping, the KD loss against a float64 reference, KD training with cached teacher logits."""

import math

import pytest
import torch

from rdnas.kd import StudentRecipe, kd_loss, largest_network, remap, teacher_logits, train_student
from rdnas.spaces import get_space
from rdnas.supernet import ResNet48Supernet

SPACE = get_space("resnet48")
OPTIONS = dict(resnet_stem="small", width_divisor=8)


def _trained_like(network: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights and BN statistics everywhere (a fresh network's BN is the identity, which would hide a
    mis-sliced running statistic)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
                if name.endswith("running_var"):
                    values = values.abs() + 0.5
                tensor.copy_(values * (0.3 if name.endswith("weight") and tensor.dim() == 4 else 1.0))
    return network


def _teacher(seed: int = 0, **options) -> torch.nn.Module:
    return _trained_like(largest_network(SPACE, num_classes=5, in_channels=1, **{**OPTIONS, **options}), seed).eval()


def test_remapping_the_largest_architecture_reproduces_the_teacher_exactly():
    teacher = _teacher()
    student = remap(teacher, SPACE.largest(), SPACE)
    x = torch.randn(4, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    assert student.arch == teacher.arch
    assert not student.training
    assert torch.equal(student(x), teacher(x))
    for name, value in teacher.state_dict().items():
        assert torch.equal(student.state_dict()[name], value), name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_remap_equals_the_export_of_a_supernet_holding_the_teachers_weights(seed):
    teacher = _teacher(seed)
    supernet = ResNet48Supernet(num_classes=5, in_channels=1, **OPTIONS)
    supernet.load_state_dict(teacher.state_dict())  # the largest network's state dict is the whole supernet's
    supernet.eval()
    x = torch.randn(3, 1, 10, 10, generator=torch.Generator().manual_seed(seed))
    for arch in SPACE.sample(4, torch.Generator().manual_seed(seed)):
        student, exported = remap(teacher, arch, SPACE), supernet.export(arch)
        assert student.state_dict().keys() == exported.state_dict().keys()
        for name, value in exported.state_dict().items():
            assert torch.equal(student.state_dict()[name], value), name
        assert torch.equal(student(x), supernet(x, arch))


def test_remap_from_a_wider_teacher_takes_the_first_channels():
    teacher = _teacher(width_divisor=4)
    arch = SPACE.sample(1, torch.Generator().manual_seed(5))[0]
    student = remap(teacher, arch, SPACE, width_divisor=8)
    assert student.config["width_divisor"] == 8
    conv = student.stages[2][0].conv1.weight
    assert torch.equal(conv, teacher.stages[2][0].conv1.weight[:conv.shape[0], :conv.shape[1]])
    fc = student.classifier.weight
    assert torch.equal(fc, teacher.classifier.weight[:, :fc.shape[1]])
    assert torch.equal(student.classifier.bias, teacher.classifier.bias)
    bn = student.stages[3][1].bn2
    assert torch.equal(bn.running_var, teacher.stages[3][1].bn2.running_var[:len(bn.running_var)])


def test_remap_refuses_a_narrower_teacher_or_another_class_count():
    teacher = _teacher(width_divisor=8)
    with pytest.raises(ValueError, match="at least as wide"):
        remap(teacher, SPACE.largest(), SPACE, width_divisor=4)
    with pytest.raises(ValueError, match="keeps the teacher's num_classes"):
        remap(teacher, SPACE.largest(), SPACE, num_classes=7)
    shallow = SPACE.largest().clone()  # full widths, two blocks per stage
    shallow[1:5] = 2
    for slot in (2, 3, 4, 7, 8, 9, 12, 13, 14, 15, 16, 17, 20, 21, 22):
        shallow[6 + 2 * slot:8 + 2 * slot] = 0
    small = remap(teacher, shallow, SPACE)
    with pytest.raises(ValueError, match="the teacher has no parameter or buffer"):
        remap(small, SPACE.largest(), SPACE)


def _kd_reference(student, teacher, labels, alpha, temperature):
    """The formula written out in float64: (1 - a) T^2 mean_b sum_c p_t (log p_t - log p_s) + a mean_b -log q_y."""
    s, t = student.double().tolist(), teacher.double().tolist()
    total_kl, total_ce = 0.0, 0.0
    for row_s, row_t, y in zip(s, t, labels.tolist()):
        zs = [v / temperature for v in row_s]
        zt = [v / temperature for v in row_t]
        log_zs = math.log(sum(math.exp(v) for v in zs))
        log_zt = math.log(sum(math.exp(v) for v in zt))
        log_ps = [v - log_zs for v in zs]
        log_pt = [v - log_zt for v in zt]
        total_kl += sum(math.exp(lt) * (lt - ls) for lt, ls in zip(log_pt, log_ps))
        log_q = row_s[y] - math.log(sum(math.exp(v) for v in row_s))
        total_ce += -log_q
    n = len(s)
    return (1 - alpha) * temperature**2 * total_kl / n + alpha * total_ce / n


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alpha,temperature", [(0.5, 6.0), (0.0, 1.0), (1.0, 4.0), (0.3, 2.5)])
def test_kd_loss_matches_the_float64_reference(seed, alpha, temperature):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(7, 5, generator=generator, dtype=torch.float64) * 3
    teacher = torch.randn(7, 5, generator=generator, dtype=torch.float64) * 3
    labels = torch.randint(0, 5, (7,), generator=generator)
    got = kd_loss(student, teacher, labels, alpha, temperature)
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(_kd_reference(student, teacher, labels, alpha, temperature), rel=1e-12)
    got32 = kd_loss(student.float(), teacher.float(), labels, alpha, temperature)
    assert float(got32) == pytest.approx(float(got), rel=1e-5)


def test_kd_loss_defaults_are_dass_and_its_gradient_ignores_the_teacher():
    generator = torch.Generator().manual_seed(3)
    student = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 2, 1, 1])
    loss = kd_loss(student, teacher, labels)
    reference = _kd_reference(student.detach(), teacher.detach(), labels, 0.5, 6.0)
    assert float(loss.detach()) == pytest.approx(reference, rel=1e-12)
    loss.backward()
    assert teacher.grad is None and student.grad is not None
    assert torch.autograd.gradcheck(lambda s: kd_loss(s, teacher.detach(), labels),
                                    (student.detach().requires_grad_(),))


def test_kd_loss_of_a_student_equal_to_its_teacher_is_the_weighted_cross_entropy():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 0])
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert float(kd_loss(logits, logits, labels)) == pytest.approx(0.5 * float(ce), rel=1e-12)


def test_kd_loss_checks_its_arguments():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="student_logits and teacher_logits"):
        kd_loss(z, torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be"):
        kd_loss(z, z, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="alpha"):
        kd_loss(z, z, torch.zeros(2, dtype=torch.long), alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(z, z, torch.zeros(2, dtype=torch.long), temperature=0.0)


def _toy_task(n=128, side=8, classes=3):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    images = torch.randn(n, 1, side, side, generator=generator) * 0.5
    images[:, :, :classes, 0] += torch.nn.functional.one_hot(labels, classes).float().view(n, 1, classes) * 2
    return images[:96], labels[:96], images[96:], labels[96:]


def test_kd_training_uses_the_cached_teacher_logits_and_is_reproducible():
    train_x, train_y, valid_x, valid_y = _toy_task()
    teacher = largest_network(SPACE, num_classes=3, in_channels=1, seed=0, **OPTIONS)
    logits = teacher_logits(teacher, train_x)
    assert logits.shape == (96, 3) and teacher.training  # mode restored
    recipe = StudentRecipe(epochs=2, batch_size=32)
    arch = SPACE.smallest()
    results = []
    for _ in range(2):
        student = remap(teacher, arch, SPACE)
        results.append(train_student(student, train_x, train_y, valid_x, valid_y, recipe, seed=4,
                                     cached_teacher_logits=logits))
    assert results[0]["valid_acc"] == results[1]["valid_acc"]
    assert results[0]["train_loss"] == results[1]["train_loss"]
    ce = train_student(remap(teacher, arch, SPACE), train_x, train_y, valid_x, valid_y, recipe, seed=4)
    assert ce["train_loss"] != results[0]["train_loss"]  # another loss
    wrong = torch.zeros(95, 3)
    with pytest.raises(ValueError, match="cached_teacher_logits has 95 rows"):
        train_student(remap(teacher, arch, SPACE), train_x, train_y, valid_x, valid_y, recipe, 0, wrong)


def test_kd_training_with_an_alpha_of_one_is_cross_entropy_training():
    train_x, train_y, valid_x, valid_y = _toy_task()
    teacher = largest_network(SPACE, num_classes=3, in_channels=1, seed=1, **OPTIONS)
    arch = SPACE.smallest()
    recipe = StudentRecipe(epochs=1, batch_size=32, alpha=1.0)
    kd = train_student(remap(teacher, arch, SPACE), train_x, train_y, valid_x, valid_y, recipe, 2,
                       teacher_logits(teacher, train_x))
    ce = train_student(remap(teacher, arch, SPACE), train_x, train_y, valid_x, valid_y, recipe, 2)
    assert kd["train_loss"] == pytest.approx(ce["train_loss"], rel=1e-5)
    assert kd["valid_loss"] == pytest.approx(ce["valid_loss"], rel=1e-4)


def test_student_recipe_rejects_bad_values():
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        StudentRecipe(epochs=0)
    with pytest.raises(ValueError, match="lr must be a finite"):
        StudentRecipe(lr=float("nan"))
    with pytest.raises(ValueError, match="alpha <= 1"):
        StudentRecipe(alpha=2.0)
    with pytest.raises(ValueError, match="unknown fields"):
        StudentRecipe.from_dict({"epoch": 3})

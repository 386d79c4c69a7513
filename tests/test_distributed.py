"""Several processes (gloo on the CPU): training equals one process with the same global batch (SPOS, RD-NAS,
ResNet48; resumed in the middle, also on another number of processes), evaluation and search are identical, the
mini-benchmark build shards into per-rank run files, a failing rank stops the job with its name, and the
helpers of rdnas.distributed.

The float64 section: 2 processes against 1 in both parallel modes (subnet- and batch-parallel) for every method
on both spaces after 14 steps, within 1e-9; resume across process counts and modes; float32 after one step; and
`rdnas demo`'s pipeline on 2 processes. Its one-process references run in the two spawned processes before they
join the process group, half on each.

Two processes are started by two torch.multiprocessing spawns and five torchrun launches; keep the runs tiny (the
file takes about 3.5 minutes of CPU time on two cores).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rdnas import distributed
from rdnas.data import DeviceBatches, load_data
from rdnas.rank import recalibrated_accuracy_fn, supernet_accuracy
from rdnas.search import evolution_search
from rdnas.spaces import get_space, nb201
from rdnas.train import OneShotTrainer, Teacher, TrainConfig, load_checkpoint
from spawning import free_port, spawn

TINY = dict(data="digits", image_size=8, channels=4, cells_per_stage=1, batch_size=128, epochs=2)
RESNET = dict(space="resnet48", resnet_stem="small", width_divisor=8, data="digits", image_size=8, batch_size=256,
              epochs=1)
# Max |w_2 - w_1| over every float tensor of the state dict, 2 processes (global-batch BN) against 1 (measured:
# NB201 4e-7 after 2 epochs = 14 steps; ResNet48 4.5e-5 after 3 steps). The tiny ResNet48 is ill-conditioned
# (a 1e-7 relative change of its initial weights grows to 1e-2 within 7 steps in one process), so it is compared
# after 3 steps only.
NB201_TOLERANCE = 1e-5
RESNET_TOLERANCE = 1e-3
REPO = Path(__file__).resolve().parent.parent


def random_teacher():
    scores = torch.rand(nb201.NUM_ARCHS, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    scores[~nb201.connected(nb201.all_archs())] = float("-inf")
    return Teacher(scores.numpy(), 5, "random")


def config(method, out, **overrides):
    values = {**TINY, "method": method, "out_dir": str(out), **overrides}
    if method == "rdnas":
        values["paths_per_step"] = 3
    return TrainConfig(**values)


def trainer(cfg, evaluate=None):
    return OneShotTrainer(cfg, progress=False, teacher=random_teacher() if cfg.method == "rdnas" else None,
                          evaluate=evaluate)


class Interrupted(Exception):
    pass


def stop_before_epoch_two_is_saved(copy_epoch_one_to=None):
    """An evaluate hook: after epoch 2 is trained, before its checkpoint: the folder holds epoch 1's."""
    def hook(t):
        if t.epoch == 2:
            if copy_epoch_one_to is not None and t.world.is_main:
                shutil.copytree(t.out_dir, copy_epoch_one_to)
            raise Interrupted()
        return {}
    return hook


EVAL_ARCHS = nb201.all_archs()[torch.randperm(nb201.NUM_ARCHS, generator=torch.Generator().manual_seed(1))[:40]]


def evaluate_archs(model, data, distributed_flag):
    fitness = recalibrated_accuracy_fn(model, data, "cpu", calibration_batch_size=128, subnets_per_pass=8,
                                       distributed=distributed_flag)
    return fitness(EVAL_ARCHS)


def search(model, data, distributed_flag):
    fitness = recalibrated_accuracy_fn(model, data, "cpu", calibration_batch_size=128, subnets_per_pass=8,
                                       distributed=distributed_flag)
    history = evolution_search(fitness, 24, seed=3, population=8, batch=8)
    return history.archs, history.scores


def resnet_eval(model, data, distributed_flag):
    archs = get_space("resnet48").sample(6, torch.Generator().manual_seed(2))
    batches = data.evaluation_batches("valid", 256, "cpu", limit=256)
    return supernet_accuracy(model, archs, batches, bn="batch", subnets_per_pass=2, distributed=distributed_flag)


def two_process_worker(rank, port, root):
    """Rank ``rank`` of 2: every distributed scenario of the spawn test, results under ``root``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    root = Path(root)
    try:
        for method in ("spos", "rdnas"):
            cfg = config(method, root / f"two_{method}")
            try:  # interrupted after epoch 1, then resumed on two processes
                trainer(cfg, stop_before_epoch_two_is_saved(root / f"two_to_one_{method}")).fit()
            except Interrupted:
                pass
            trainer(cfg).fit(resume=True)
            trainer(config(method, root / f"one_to_two_{method}")).fit(resume=True)  # a 1-process epoch 1
        trainer(TrainConfig(**{**RESNET, "out_dir": str(root / "two_resnet48")})).fit()
        trainer(config("spos", root / "per_rank", epochs=1, bn_statistics="per_rank")).fit()
        try:
            trainer(config("spos", root / "odd", batch_size=127))
        except ValueError as error:
            odd = str(error)
        reference = OneShotTrainer(config("spos", root / "unused"), progress=False)
        reference.model.load_state_dict(load_checkpoint(root / "ref_spos" / "checkpoint.pt")["model"])
        results = {"odd": odd, "eval": evaluate_archs(reference.model, reference.data, True),
                   "search": search(reference.model, reference.data, True)}
        resnet = OneShotTrainer(TrainConfig(**{**RESNET, "out_dir": str(root / "unused")}), progress=False)
        resnet.model.load_state_dict(load_checkpoint(root / "ref_resnet48" / "checkpoint.pt")["model"])
        results["resnet_eval"] = resnet_eval(resnet.model, resnet.data, True)
        if rank == 0:
            torch.save(results, root / "results.pt")
        dist.barrier()  # as rdnas.distributed.shutdown(finished=True): nobody tears down while the other works
    finally:
        dist.destroy_process_group()


def spawn_workers(worker, root: Path, nprocs: int = 2) -> None:
    """``mp.spawn(worker, (port, root))``, where rank 0 writes ``root/results.pt`` after its last collective (a
    SIGABRT in gloo's teardown after that is tolerated: :func:`spawning.spawn`)."""
    spawn(worker, (free_port(), str(root)), nprocs, root / "results.pt")


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for name in a:
        if a[name].is_floating_point():
            worst = max(worst, float((a[name] - b[name]).abs().max()))
        else:
            assert torch.equal(a[name], b[name]), name
    return worst


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One-process references, then the two-process scenarios in one spawn (2 ranks, gloo)."""
    root = tmp_path_factory.mktemp("distributed")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        refs = {}
        for method in ("spos", "rdnas"):
            def copy_epoch_one(t, m=method):  # at epoch 2's evaluation the folder holds epoch 1's checkpoint
                if t.epoch == 2:
                    shutil.copytree(t.out_dir, root / f"one_to_two_{m}")
                return {}

            ref = trainer(config(method, root / f"ref_{method}"), copy_epoch_one)
            ref.fit()
            refs[method] = ref
        refs["resnet48"] = trainer(TrainConfig(**{**RESNET, "out_dir": str(root / "ref_resnet48")}))
        refs["resnet48"].fit()
        one = {"eval": evaluate_archs(refs["spos"].model, refs["spos"].data, False),
               "search": search(refs["spos"].model, refs["spos"].data, False),
               "resnet_eval": resnet_eval(refs["resnet48"].model, refs["resnet48"].data, False)}
        spawn_workers(two_process_worker, root)
        two = torch.load(root / "results.pt", weights_only=False)
        resumed_on_one = {}
        for method in ("spos", "rdnas"):
            t = trainer(config(method, root / f"two_to_one_{method}"))
            t.fit(resume=True)
            resumed_on_one[method] = t
    finally:
        torch.set_num_threads(threads)
    return root, refs, one, two, resumed_on_one


@pytest.mark.parametrize("method", ["spos", "rdnas"])
def test_two_processes_resumed_in_the_middle_end_with_the_weights_of_one(two_processes, method):
    root, refs, _, _, resumed_on_one = two_processes
    ref = refs[method].model.state_dict()
    for run in (f"two_{method}", f"one_to_two_{method}"):
        state = load_checkpoint(root / run / "checkpoint.pt")
        assert state["epoch"] == 2 and state["world_size"] == 2
        assert max_difference(ref, state["model"]) <= NB201_TOLERANCE, run
        assert [r["train_loss"] for r in state["history"]] == pytest.approx(
            [r["train_loss"] for r in refs[method].history], abs=1e-5)
    assert load_checkpoint(root / f"two_to_one_{method}" / "checkpoint.pt")["world_size"] == 1
    assert max_difference(ref, resumed_on_one[method].model.state_dict()) <= NB201_TOLERANCE
    # rank 0 wrote the files, atomically: nothing else in the run folder
    assert sorted(p.name for p in (root / f"two_{method}").iterdir()) == ["checkpoint.pt", "config.json",
                                                                          "metrics.jsonl"]
    assert len((root / f"two_{method}" / "metrics.jsonl").read_text().splitlines()) == 2


def test_resnet48_on_two_processes_ends_with_the_weights_of_one(two_processes):
    root, refs, _, _, _ = two_processes
    state = load_checkpoint(root / "two_resnet48" / "checkpoint.pt")
    assert max_difference(refs["resnet48"].model.state_dict(), state["model"]) <= RESNET_TOLERANCE


def test_per_rank_batch_norm_statistics_keep_the_replicas_equal(two_processes):
    root, refs, _, _, _ = two_processes
    state = load_checkpoint(root / "per_rank" / "checkpoint.pt")
    assert state["config"]["bn_statistics"] == "per_rank" and state["epoch"] == 1  # check_replicas passed


def test_evaluation_and_search_on_two_processes_are_identical_to_one(two_processes):
    _, _, one, two, _ = two_processes
    assert torch.equal(one["eval"], two["eval"])
    assert one["search"] == two["search"]
    assert torch.equal(one["resnet_eval"], two["resnet_eval"])


def test_a_global_batch_that_does_not_split_evenly_is_a_clear_error(two_processes):
    assert "batch_size 127 (the global batch) does not split into equal shares for WORLD_SIZE=2" in \
        two_processes[3]["odd"]


# ------------------------------------------------------------------------- float64: subnet- and batch-parallel


# Every method on both spaces, 2 processes in both parallel modes against 1, in float64 (OneShotTrainer(dtype=...)),
# where rounding stays near 1e-15 over many steps and any real difference shows (in float32 these small networks
# amplify rounding erratically: one process at 1 against 2 threads already differs by up to 1e-2 after 14 steps).
# Batch 64 for one epoch: 14 steps, and the digits' partial last batch (898 = 14 x 64 + 2) is dropped on both sides.
EXACT = dict(data="digits", image_size=8, batch_size=64, epochs=1)
NB201_EXACT = dict(channels=4, cells_per_stage=1)  # the NB201 network's options (the cases without a space)
RESNET_EXACT = dict(space="resnet48", resnet_stem="small", width_divisor=8)
EXACT_CASES = {
    "spos": dict(method="spos", paths_per_step=2, image_size=16),
    "rdnas_margin": dict(method="rdnas", paths_per_step=4),
    "rdnas_sandwich": dict(method="rdnas", sampler="sandwich", paths_per_step=4, distill=True),
    "fairnas": dict(method="fairnas"),  # K = 5 on 2 processes: 2 and 3 subnets
    "sandwich": dict(method="sandwich", paths_per_step=4, distill=True),
    "resnet48_rdnas": dict(RESNET_EXACT, method="rdnas", paths_per_step=2, teacher_proxies="flops",
                           teacher_samples=100),
    "resnet48_sandwich": dict(RESNET_EXACT, method="sandwich", paths_per_step=2, distill=True),
}
# Resumed across process counts and modes: 2 epochs of 7 steps, the interruption after the first.
RESUMED = dict(EXACT, **NB201_EXACT, batch_size=128, epochs=2, method="rdnas", paths_per_step=2)
# float32 after one step (both modes): within 1e-6.
ONE_STEP_CASES = ("rdnas_margin", "resnet48_sandwich")
EXACT_TOLERANCE = 1e-9
ONE_STEP_TOLERANCE = 1e-6


def exact_trainer(name_or_values, out, dtype=torch.float64, evaluate=None, **overrides):
    values = EXACT_CASES[name_or_values] if isinstance(name_or_values, str) else name_or_values
    network = NB201_EXACT if values.get("space", "nb201") == "nb201" else {}
    cfg = TrainConfig(**{**EXACT, **network, **values, "out_dir": str(out), **overrides})
    teacher = random_teacher() if cfg.method == "rdnas" and cfg.space == "nb201" else None
    return OneShotTrainer(cfg, progress=False, teacher=teacher, evaluate=evaluate, dtype=dtype)


def final_state(t) -> dict:
    return {"model": {k: v.clone() for k, v in t.model.state_dict().items()}, "history": t.history,
            "layout": (t.layout.mode, t.layout.subnet_groups, t.layout.first, t.layout.stop)}


def one_step(name, out, parallel="auto") -> dict:
    t = exact_trainer(name, out, dtype=torch.float32, parallel=parallel)
    images, labels = next(iter(t.batches))
    step = t.train_step(images, labels)
    return {"model": {k: v.clone() for k, v in t.model.state_dict().items()}, "loss": float(step["loss"])}


def demo_config(out):
    """A small `rdnas demo` pipeline: ResNet48 (its teacher needs no table), 1 epoch of 3 steps, K = 4, 4 cells."""
    from rdnas.pipeline import PipelineConfig

    return PipelineConfig(space="resnet48", epochs=1, batch_size=256, eval_archs=4, calibration_steps=1,
                          proxies="flops,params", teacher_proxies="flops", teacher_samples=200, out_dir=str(out))


def exact_worker(rank, port, root):
    """Rank ``rank`` of 2: first, its half of the one-process references (no process group yet); then every
    two-process run of the float64 comparison."""
    torch.set_num_threads(1)
    root = Path(root)
    jobs = [(f"ref_{name}", name) for name in EXACT_CASES] + [("ref_resumed", None)] + \
        [(f"ref_step_{name}", name) for name in ONE_STEP_CASES] + [("ref_demo", None)]
    for i, (label, name) in enumerate(jobs):
        if i % 2 != rank:
            continue
        if label == "ref_resumed":
            def copy_epoch_one(t):
                if t.epoch == 2:
                    shutil.copytree(t.out_dir, root / "one_then_two_subnets")
                return {}
            t = exact_trainer(RESUMED, root / label, evaluate=copy_epoch_one)
            t.fit()
            torch.save(final_state(t), root / f"{label}.pt")
        elif label == "ref_demo":
            from rdnas.demo import run_demo

            torch.save(run_demo(demo_config(root / "demo_one"), progress=False), root / f"{label}.pt")
        elif label.startswith("ref_step_"):
            torch.save(one_step(name, root / label), root / f"{label}.pt")
        else:
            t = exact_trainer(name, root / label)
            t.fit()
            torch.save(final_state(t), root / f"{label}.pt")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    dist.init_process_group("gloo")
    deals = []
    balanced = distributed.StepLayout.balanced

    def recorded(layout, costs):  # every step's deal of this rank's subnets, as the trainer makes it
        dealt = balanced(layout, costs)
        deals.append(dealt.members)
        return dealt

    distributed.StepLayout.balanced = recorded
    try:
        results = {}
        for name in EXACT_CASES:
            for parallel in ("subnets", "batch"):
                deals.clear()
                t = exact_trainer(name, root / f"two_{name}_{parallel}", parallel=parallel)
                t.fit()
                results[name, parallel] = final_state(t)
                results["deals", name, parallel] = list(deals)
        results["gradient_sums"] = gradient_sums(rank)
        for name in ONE_STEP_CASES:
            for parallel in ("subnets", "batch"):
                results["step", name, parallel] = one_step(name, root / f"two_step_{name}_{parallel}", parallel)
        # subnets for epoch 1 (copied for a one-process resume), then batch; and a one-process epoch 1 resumed in
        # subnet-parallel mode (the folder the reference copied)
        try:
            exact_trainer(RESUMED, root / "two_subnets_then_batch", parallel="subnets",
                          evaluate=stop_before_epoch_two_is_saved(root / "two_subnets_then_one")).fit()
        except Interrupted:
            pass
        for folder, parallel in (("two_subnets_then_batch", "batch"), ("one_then_two_subnets", "subnets")):
            t = exact_trainer(RESUMED, root / folder, parallel=parallel)
            t.fit(resume=True)
            results[folder] = final_state(t)
        from rdnas.demo import run_demo

        demo = run_demo(demo_config(root / "demo_two"), progress=False)  # `rdnas demo` under torchrun runs this
        demos = [None, None]
        dist.all_gather_object(demos, demo)
        results["demo"] = demos
        if rank == 0:
            torch.save(results, root / "results.pt")
        dist.barrier()
    finally:
        distributed.StepLayout.balanced = balanced
        dist.destroy_process_group()


def gradient_sums(rank) -> list:
    """Three calls of sum_gradients on the same parameters (one buffer, reused) with different gradients: rank 0
    has gradients for a and b, rank 1 for b and c, then for a only, then none; d never has one. Returns, per call,
    each parameter's gradient after it (None where it has none) and the first call's gradient of b again after the
    later calls (it must not change with them), then the riders of the first call after it (rank r's
    [r + 1, 10 (r + 1), 0], summed in place)."""
    params = [torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64)) for shape in ((2,), (2, 3), (4,), (1,))]
    world, calls = distributed.current(), []
    owned = [((0, 1), (1, 2)), ((0,), (0,)), ((), ())]  # per call: (rank 0's, rank 1's) parameters with a gradient
    first_b = None
    for step, (mine_0, mine_1) in enumerate(owned):
        for i, p in enumerate(params):
            p.grad = torch.full(p.shape, 10.0 ** step * (i + 1) * (rank + 1), dtype=torch.float64) \
                if i in (mine_0 if rank == 0 else mine_1) else None
        riders = torch.tensor([rank + 1.0, 10.0 * (rank + 1), 0.0], dtype=torch.float64) if step == 0 else None
        reduced = distributed.sum_gradients(params, world, same_subnets=False, riders=riders)
        if step == 0:
            summed_riders = riders.clone()
        calls.append((reduced, [None if p.grad is None else p.grad.clone() for p in params]))
        if step == 0:
            first_b = params[1].grad
            params[1].grad = None  # the next calls must leave the tensor handed out here alone
    return calls + [first_b.clone(), summed_riders]


@pytest.fixture(scope="module")
def exact_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("exact")
    spawn_workers(exact_worker, root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = exact_trainer(RESUMED, root / "two_subnets_then_one")
        t.fit(resume=True)
        resumed_on_one = final_state(t)
    finally:
        torch.set_num_threads(threads)
    refs = {path.stem[4:]: torch.load(path, weights_only=False) for path in root.glob("ref_*.pt")}
    return root, refs, torch.load(root / "results.pt", weights_only=False), resumed_on_one


def assert_same_run(one: dict, two: dict, tolerance: float, what: str):
    assert max_difference(one["model"], two["model"]) <= tolerance, what
    for a, b in zip(one["history"], two["history"], strict=True):
        for key in ("train_loss", "train_acc", "rank_loss"):
            assert a.get(key, 0.0) == pytest.approx(b.get(key, 0.0), abs=tolerance), (what, key)


@pytest.mark.parametrize("parallel", ["subnets", "batch"])
@pytest.mark.parametrize("name", list(EXACT_CASES))
def test_two_processes_in_float64_end_14_steps_with_the_weights_and_metrics_of_one(exact_runs, name, parallel):
    _, refs, two, _ = exact_runs
    run = two[name, parallel]
    assert run["layout"][:2] == ((parallel, 2) if parallel == "subnets" else ("batch", 1))
    assert refs[name]["history"][0]["epoch"] == 1 and len(refs[name]["history"]) == 1
    assert_same_run(refs[name], run, EXACT_TOLERANCE, f"{name} {parallel}")


def test_fairnas_splits_its_five_subnets_two_and_three(exact_runs):
    assert exact_runs[2]["fairnas", "subnets"]["layout"] == ("subnets", 2, 0, 2)  # rank 0's share
    assert {len(members) for members in exact_runs[2]["deals", "fairnas", "subnets"]} == {2}


@pytest.mark.parametrize("name", ["rdnas_margin", "rdnas_sandwich", "fairnas", "sandwich"])
def test_subnet_parallel_steps_deal_the_subnets_by_cost_and_still_equal_one_process(exact_runs, name):
    """The float64 runs above (equal to one process) really dealt subnets out of their positions: rank 0 of 2 ran
    other subnets than its contiguous share on some of the 14 steps."""
    deals = exact_runs[2]["deals", name, "subnets"]
    assert len(deals) == 14
    contiguous = tuple(range(len(deals[0])))
    assert any(members != contiguous for members in deals)
    assert exact_runs[2]["deals", name, "batch"] == []  # batch-parallel: every rank every subnet, nothing to deal


def test_the_gradient_sum_reuses_its_buffer_hands_out_tensors_of_their_own_and_sums_riders(exact_runs):
    *calls, first_b, riders = exact_runs[2]["gradient_sums"]
    assert riders.tolist() == [3.0, 30.0, 0.0]  # summed in the gradients' all-reduce, not counted in n0
    a, b, c, d = 1.0, 2.0, 3.0, 4.0
    (n0, g0), (n1, g1), (n2, g2) = calls
    # call 0: rank 0 a, b; rank 1 b, c (each rank's gradient is (index + 1) * (rank + 1))
    assert n0 == 2 + 6 + 4
    assert g0[0].tolist() == [a * 1] * 2 and g0[1].tolist() == [[b * 1 + b * 2] * 3] * 2
    assert g0[2].tolist() == [c * 2] * 4 and g0[3] is None
    # call 1 (x10): both ranks a; b was set to None on both, c keeps its summed gradient from call 0 on rank 0
    assert g1[0].tolist() == [10 * a * 1 + 10 * a * 2] * 2 and g1[1] is None and g1[3] is None
    assert n1 == 2
    # call 2: nobody has a gradient: nothing changes, nothing is reduced
    assert n2 == 0 and g2[0] is None and g2[1] is None
    assert first_b.tolist() == [[b * 3] * 3] * 2  # the tensor handed out in call 0, untouched by the later calls


def test_a_run_resumed_across_process_counts_and_modes_ends_with_the_weights_of_one(exact_runs):
    _, refs, two, resumed_on_one = exact_runs
    ref = refs["resumed"]
    assert len(ref["history"]) == 2
    assert_same_run(ref, two["two_subnets_then_batch"], EXACT_TOLERANCE, "2 subnets -> 2 batch")
    assert_same_run(ref, two["one_then_two_subnets"], EXACT_TOLERANCE, "1 -> 2 subnets")
    assert_same_run(ref, resumed_on_one, EXACT_TOLERANCE, "2 subnets -> 1")
    assert two["two_subnets_then_batch"]["layout"][0] == "batch"


def without_timings(value):
    """A report without its wall-clock entries (``seconds``, ``eval_seconds``), which differ from rank to rank."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not k.endswith("seconds")}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def test_the_demo_on_two_processes_trains_and_evaluates_there_and_rank_zero_writes(exact_runs):
    root, refs, two, _ = exact_runs
    one, (first, second) = refs["demo"], two["demo"]
    assert without_timings(first) == without_timings(second)  # every rank returns the same report
    assert sorted(p.name for p in (root / "demo_two").iterdir()) == [
        "estimate_vs_truth.png", "rdnas_seed0", "report.json", "spos_seed0", "tau_per_epoch.png"]
    for method in ("spos", "rdnas"):
        run, ref = first["supernets"][method], one["supernets"][method]
        assert run["config"]["parallel"] == "auto" and run["history"][0]["epoch"] == 1
        assert load_checkpoint(root / "demo_two" / f"{method}_seed0" / "checkpoint.pt")["world_size"] == 2
        # float32, 3 steps of the ill-conditioned tiny ResNet48 (subnet-parallel: K = 4 on 2 processes): the same
        # supernet up to rounding, as RESNET_TOLERANCE states for it
        checkpoints = [load_checkpoint(root / folder / f"{method}_seed0" / "checkpoint.pt")["model"]
                       for folder in ("demo_one", "demo_two")]
        assert max_difference(*checkpoints) <= RESNET_TOLERANCE
        assert run["history"][0]["train_loss"] == pytest.approx(ref["history"][0]["train_loss"], abs=1e-4)
        assert run["estimates"] == pytest.approx(ref["estimates"], abs=0.02)


@pytest.mark.parametrize("parallel", ["subnets", "batch"])
@pytest.mark.parametrize("name", ONE_STEP_CASES)
def test_two_processes_in_float32_after_one_step_equal_one(exact_runs, name, parallel):
    _, refs, two, _ = exact_runs
    one, run = refs[f"step_{name}"], two["step", name, parallel]
    assert max_difference(one["model"], run["model"]) <= ONE_STEP_TOLERANCE
    assert one["loss"] == pytest.approx(run["loss"], abs=ONE_STEP_TOLERANCE)


HYBRID = dict(method="sandwich", paths_per_step=2, distill=True)  # P = 4 > K = 2: 2 groups of 2 processes


def four_steps(out, parallel="auto") -> dict:
    t = exact_trainer(HYBRID, out, parallel=parallel)
    batches = iter(t.batches)
    for _ in range(4):
        step = t.train_step(*next(batches))
    return {"model": {k: v.clone() for k, v in t.model.state_dict().items()}, "loss": float(step["loss"]),
            "layout": (t.layout.mode, t.layout.subnet_groups, t.layout.batch_ranks, t.layout.first,
                       t.layout.batch_rank)}


def hybrid_worker(rank, port, root):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="4",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        torch.save(four_steps(Path(root) / f"rank{rank}", "subnets"), Path(root) / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_four_processes_on_two_subnets_form_subnet_by_batch_groups_equal_to_one(tmp_path):
    """Each subnet on a group of 2 processes that split the batch (BN over the group), the largest subnet's logits
    shared for distillation: float64, 4 steps, within 1e-9 of one process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = four_steps(tmp_path / "one")
    finally:
        torch.set_num_threads(threads)
    mp.spawn(hybrid_worker, args=(free_port(), str(tmp_path)), nprocs=4)
    runs = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(4)]
    assert [run["layout"] for run in runs] == [("subnets", 2, 2, 0, 0), ("subnets", 2, 2, 0, 1),
                                               ("subnets", 2, 2, 1, 0), ("subnets", 2, 2, 1, 1)]
    for run in runs:
        assert max_difference(one["model"], run["model"]) <= EXACT_TOLERANCE
        assert run["loss"] == pytest.approx(one["loss"], abs=EXACT_TOLERANCE)


def test_subnet_parallel_step_layouts():
    layout = distributed.step_layout
    four = [layout("subnets", 4, distributed.World(r, 2)) for r in range(2)]
    assert [(x.mode, x.first, x.stop, x.batch_ranks) for x in four] == [("subnets", 0, 2, 1), ("subnets", 2, 4, 1)]
    assert layout("auto", 3, distributed.World(0, 2)).mode == "batch"  # 2 does not divide 3
    assert layout("auto", 4, distributed.World(0, 2)).mode == "subnets"
    one = layout("subnets", 1, distributed.World(1, 2))
    assert (one.mode, one.batch_ranks, one.batch_rank) == ("batch", 2, 1)  # one subnet: every rank shares its batch
    five = [layout("subnets", 5, distributed.World(r, 3)) for r in range(3)]
    assert [(x.first, x.stop) for x in five] == [(0, 1), (1, 3), (3, 5)]
    single = layout("auto", 4, distributed.World())
    assert (single.first, single.stop, single.batch_ranks) == (0, 4, 1)
    with pytest.raises(ValueError, match=r"'subnets' on more processes than subnets \(WORLD_SIZE=3, K = 2\)"):
        layout("subnets", 2, distributed.World(0, 3))
    with pytest.raises(ValueError, match="parallel must be one of"):
        layout("rows", 2, distributed.World(0, 2))
    padded = four[1].pad(torch.tensor([1.0, 2.0]), 4)
    assert padded.tolist() == [0.0, 0.0, 1.0, 2.0]
    assert four[0].pad(torch.tensor([5.0]), 3, -1).tolist() == [5.0, 0.0, 0.0]  # subnet 1's distillation term
    # dealt by cost: each rank keeps its count, the costliest goes with the cheapest; the deal is the same on
    # every rank and covers every subnet once
    dealt = [x.balanced([5.0, 4.0, 1.0, 2.0]) for x in four]
    assert [x.members for x in dealt] == [(0, 2), (1, 3)] and dealt[1].first == 1
    assert dealt[0].subnets.tolist() == [0, 2]
    assert dealt[0].pad(torch.tensor([1.0, 2.0]), 4).tolist() == [1.0, 0.0, 2.0, 0.0]
    assert dealt[0].pad(torch.tensor([7.0]), 3, -1).tolist() == [0.0, 7.0, 0.0]  # subnet 2's term; 0 has none
    assert dealt[1].pad(torch.tensor([7.0, 8.0]), 3, -1).tolist() == [7.0, 0.0, 8.0]
    with pytest.raises(ValueError, match=r"pad: 1 values for the 2 positions \[0, 2\] of this rank"):
        dealt[1].pad(torch.tensor([7.0]), 3, -1)
    assert [x.balanced(None) for x in four] == four  # no estimate: the contiguous shares
    five_dealt = [x.balanced([1.0, 1.0, 9.0, 1.0, 1.0]) for x in five]
    assert sorted(m for x in five_dealt for m in x.members) == list(range(5))
    assert [len(x.members) for x in five_dealt] == [1, 2, 2]
    groups = [layout("subnets", 2, distributed.World(r, 2)) for r in range(2)]
    assert [x.balanced([1.0, 9.0]) for x in groups] == groups  # one subnet each: nothing to deal
    assert single.balanced([3.0, 1.0, 2.0, 4.0]) is single  # one group: every subnet
    with pytest.raises(ValueError, match="parallel must be one of"):
        TrainConfig(**TINY, parallel="rows").check()


def test_balanced_shares_deal_the_costliest_first_to_the_cheapest_group_with_room():
    assert distributed.balanced_shares([3.0, 1.0, 2.0, 4.0], [2, 2]) == [[1, 3], [0, 2]]  # 4 + 1 and 3 + 2
    assert distributed.balanced_shares([4.0, 3.0, 2.0, 1.0], [2, 2]) == [[0, 3], [1, 2]]
    assert distributed.balanced_shares([5.0, 4.0, 3.0, 2.0, 1.0], [2, 3]) == [[0, 3], [1, 2, 4]]
    assert distributed.balanced_shares([1.0] * 4, [2, 2]) == [[0, 2], [1, 3]]  # ties by position
    assert distributed.balanced_shares([9.0, 1.0, 1.0, 1.0], [1, 3]) == [[0], [1, 2, 3]]
    with pytest.raises(ValueError, match=r"balanced_shares: the counts \[2, 1\] do not add up to the 4 items"):
        distributed.balanced_shares([1.0] * 4, [2, 1])


def test_subnet_costs_come_from_the_supernet_then_the_space_cost_model():
    from rdnas.supernet import build_supernet

    nb = build_supernet("nb201", 10, 1, channels=4, cells_per_stage=2)
    none, skip, c1, c3, pool = range(5)
    cells = [(skip,) * 6, (c3,) * 6, (c1,) * 6, (pool,) * 6, (c3, none, none, none, none, none),
             (none, none, none, c3, c3, c3)]  # the last two: a disconnected cell, and a live edge 0->3 with dead ones
    costs = distributed.subnet_costs(nb, nb201.SPACE, torch.tensor(cells))
    assert costs[1] > costs[2] > costs[3] > costs[0] > costs[4]  # conv3x3 > conv1x1 > pool > skip > nothing
    assert costs[5] == distributed.subnet_costs(nb, nb201.SPACE, torch.tensor([[none, none, none, c3, none, none]]))[0]
    assert all(isinstance(c, float) for c in costs)
    resnet_space = get_space("resnet48")
    archs = resnet_space.sample(3, torch.Generator().manual_seed(0))
    resnet = build_supernet("resnet48", 10, 1, resnet_stem="small", width_divisor=8)
    assert distributed.subnet_costs(resnet, resnet_space, archs) == resnet_space.cost(archs)["flops"].tolist()

    class NoCostModel:  # a space without a cost model and a supernet without an estimate: no deal by cost
        def cost(self, archs):
            raise NotImplementedError("no cost model")

    assert distributed.subnet_costs(torch.nn.Linear(1, 1), NoCostModel(), archs) is None


# ------------------------------------------------------------------------------------------------ torchrun


# The ranks import the rdnas this test imports (the installed package in CI, the checkout with PYTHONPATH in a
# development tree), and run outside the checkout: `python -m rdnas` from the checkout would import its source
# tree, which has no compiled extension after a plain `pip install .`.
RDNAS_ROOT = Path(distributed.__file__).resolve().parent.parent


def torchrun(args, timeout=120, cwd=None):
    env = {**os.environ, "PYTHONPATH": f"{RDNAS_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), *args]
    with tempfile.TemporaryDirectory() as outside:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd or outside)


TRAIN_ARGS = ["train", "--data", "digits", "--image-size", "8", "--channels", "4", "--cells", "1", "--batch-size",
              "128", "--epochs", "2", "--quiet"]


def test_torchrun_rdnas_train_writes_one_run_from_rank_zero(tmp_path):
    out = tmp_path / "run"
    result = torchrun(["-m", "rdnas", *TRAIN_ARGS, "--out", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("rdnas train: 2 epochs") == 1  # rank 0 reports
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl"]
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 2 and state["world_size"] == 2


def test_a_rank_that_raises_stops_the_job_with_its_name(tmp_path):
    start = time.perf_counter()
    result = torchrun([str(REPO / "tests" / "distributed_worker.py"), "fail", "1", "3", "--", *TRAIN_ARGS,
                       "--out", str(tmp_path / "run")], timeout=90)
    assert result.returncode != 0
    assert "rdnas train: rank 1 of 2 failed: RuntimeError: injected failure" in result.stderr
    assert time.perf_counter() - start < 90
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # it failed in epoch 1


def test_torchrun_bench_build_shards_into_per_rank_files_that_merge(tmp_path):
    out = tmp_path / "bench"
    args = ["-m", "rdnas", "bench", "build", "--archs", "4", "--seeds", "2", "--epochs", "1", "--channels", "4",
            "--train-images", "64", "--valid-images", "64", "--batch-size", "32", "--networks-per-stack", "2",
            "--out", str(out), "--quiet"]
    result = torchrun(args)
    assert result.returncode == 0, result.stderr[-3000:]
    from rdnas.minibench import read_all_runs, read_runs

    shards = [read_runs(out / f"runs.{i}of2.csv") for i in range(2)]
    assert [len(s) for s in shards] == [4, 4]
    pairs = [(r["arch_str"], r["seed"]) for s in shards for r in s]
    assert len(set(pairs)) == 8 and len(read_all_runs(out)) == 8
    table = (out / "nb201_digits.csv").read_text().splitlines()
    assert len(table) == 1 + 4 and result.stdout.count("rdnas bench build:") == 1
    again = torchrun(args)  # resumed: nothing left to train, nothing repeated
    assert again.returncode == 0, again.stderr[-3000:]
    assert [len(read_runs(out / f"runs.{i}of2.csv")) for i in range(2)] == [4, 4]


def test_torchrun_bench_build_refuses_a_second_way_of_sharding(tmp_path):
    result = torchrun(["-m", "rdnas", "bench", "build", "--shard", "0/2", "--out", str(tmp_path)], timeout=60)
    assert result.returncode != 0 and "both split the runs; leave --shard out under torchrun" in result.stderr


# ----------------------------------------------------------------------------------------- one process


def test_a_single_process_world_has_no_collectives():
    world = distributed.current()
    assert world == distributed.World() and world.is_main and not world.distributed
    values = torch.arange(3.0)
    assert distributed.global_mean(values, world) is values and distributed.sum_disjoint(values, world) is values
    assert distributed.init("cpu") == (distributed.World(), "cpu")


def test_chunks_cover_every_architecture_once_in_the_single_process_chunks():
    for count, chunk, size in ((40, 8, 2), (41, 8, 3), (5, 8, 2), (0, 4, 2)):
        starts = sorted(s for rank in range(size) for s in distributed.my_chunks(count, chunk,
                                                                                  distributed.World(rank, size)))
        assert starts == list(range(0, count, chunk))


def test_the_ranks_shares_of_a_batch_are_the_batch():
    data = load_data(TrainConfig(**TINY))
    def batches(share):
        return list(data.training_batches(128, "cpu", torch.Generator().manual_seed(5), share=share))
    whole = batches((0, 1))
    parts = [batches((i, 2)) for i in range(2)]
    assert len(whole) == len(parts[0]) == 7
    for (images, labels), (a, la), (b, lb) in zip(whole, *parts):
        assert torch.equal(images, torch.cat([a, b])) and torch.equal(labels, torch.cat([la, lb]))
    with pytest.raises(ValueError, match="batch_size 128 does not split into 3 equal shares"):
        DeviceBatches(data.train, 128, share=(0, 3))
    with pytest.raises(ValueError, match=r"share \(i, n\) needs 0 <= i < n, got \(2, 2\)"):
        DeviceBatches(data.train, 128, share=(2, 2))


def test_parse_shard_and_its_errors(monkeypatch):
    assert distributed.parse_shard("1/4", "x") == (1, 4) and distributed.parse_shard((0, 2), "x") == (0, 2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert distributed.parse_shard("env", "x") == (1, 3)
    with pytest.raises(ValueError, match=r"x: shard must be \(i, n\), 'i/n' or 'env', got 'a/b'"):
        distributed.parse_shard("a/b", "x")
    with pytest.raises(ValueError, match=r"x: shard \(i, n\) needs 0 <= i < n, got \(3, 3\)"):
        distributed.parse_shard("3/3", "x")
    monkeypatch.delenv("RANK")
    with pytest.raises(ValueError, match="x: shard='env' reads RANK and WORLD_SIZE .* RANK is not set"):
        distributed.parse_shard("env", "x")


def test_a_command_that_runs_in_one_process_refuses_torchrun(monkeypatch, capsys, tmp_path):
    from rdnas.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["merge-tables", str(tmp_path / "a.csv"), "--out", str(tmp_path / "b.csv")]) == 2
    assert "rdnas merge-tables: error: this command runs in one process, but WORLD_SIZE=2" in capsys.readouterr().err
    assert not (tmp_path / "b.csv").exists()


def test_a_device_index_under_torchrun_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="--device cuda:1 names one GPU, but WORLD_SIZE=2 processes share the job"):
        distributed.init("cuda:1")


def test_the_multi_tensor_sgd_step_gives_bitwise_the_per_tensor_steps_weights(tmp_path):
    """Every rank repeats the optimizer step, so the trainer takes torch's multi-tensor SGD (not the CPU's default):
    after 6 steps its weights and momentum buffers are bitwise those of the per-tensor update."""
    def trained(foreach):
        config = TrainConfig(data="digits", image_size=8, batch_size=32, method="spos", paths_per_step=2, epochs=1,
                             channels=4, cells_per_stage=1, out_dir=str(tmp_path / f"run{foreach}"))
        trainer = OneShotTrainer(config, progress=False)
        assert trainer.optimizer.defaults["foreach"] is True
        if not foreach:
            trainer.optimizer.defaults["foreach"] = False
            for group in trainer.optimizer.param_groups:
                group["foreach"] = False
        for step, (images, labels) in zip(range(6), trainer.batches):
            trainer.train_step(images, labels, 0.0)
        buffers = [trainer.optimizer.state[p].get("momentum_buffer") for p in trainer.model.parameters()]
        return list(trainer.model.state_dict().values()), buffers

    (weights, buffers), (reference, reference_buffers) = trained(True), trained(False)
    assert all(torch.equal(a, b) for a, b in zip(weights, reference))
    assert [b is None for b in buffers] == [b is None for b in reference_buffers]
    assert all(torch.equal(a, b) for a, b in zip(buffers, reference_buffers) if a is not None)
    assert sum(b is not None for b in buffers) > 0

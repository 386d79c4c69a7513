"""An RD-NAS training step against an SPOS step with the same K subnets (target: at most 1.5x the time).

Both steps are ``OneShotTrainer.train_step`` on the same batch, supernet and K: the SPOS-K step is K subnets'
summed cross-entropy in one ``forward_subnets`` pass; the RD-NAS step adds the teacher lookup (an index into a
precomputed [15625] table on the device), the margin subnet sampler and the fused all-pairs margin loss. Two
macro networks: the digits mini-benchmark's (C=8, N=1, 8x8 images) and NAS-Bench-201's (C=16, N=5, 32x32).

``extra_info["rank_share"]`` (RD-NAS only) is the share of the step's profiled CPU time spent in the teacher
lookup, the sampler and the pair loss (their profiler record_function ranges): they must not show up.
"""

import pytest
import torch

from rdnas.spaces import nb201
from rdnas.train import OneShotTrainer, Teacher, TrainConfig

K = 4
NETWORKS = {"digits-C8-N1-8px": dict(channels=8, cells_per_stage=1, image_size=8),
            "nb201-C16-N5-32px": dict(channels=16, cells_per_stage=5, image_size=32)}
LABELS = {"rdnas": "RD-NAS step (K=4)", "spos": "SPOS step (K=4, no ranking loss)"}
ROLES = {"rdnas": "candidate", "spos": "baseline"}


def make_trainer(device, network, method, tmp_path):
    teacher = Teacher(torch.rand(nb201.NUM_ARCHS, generator=torch.Generator().manual_seed(0),
                                 dtype=torch.float64).numpy(), 5, "random")
    config = TrainConfig(data="digits", batch_size=64, method=method, paths_per_step=K, device=device,
                         out_dir=str(tmp_path / method), **NETWORKS[network])
    trainer = OneShotTrainer(config, progress=False, teacher=teacher if method == "rdnas" else None)
    images, labels = next(iter(trainer.batches))  # digits resized to the network's image size
    return trainer, images, labels


@pytest.mark.parametrize("method", ["rdnas", "spos"])
@pytest.mark.parametrize("network", list(NETWORKS))
def test_training_step(device_benchmark, device, network, method, tmp_path):
    bench = device_benchmark
    bench.group = f"train-step-{device}-{network}-K{K}"
    trainer, images, labels = make_trainer(device, network, method, tmp_path)
    bench.extra_info.update(impl=method, label=LABELS[method], role=ROLES[method], K=K, network=network)

    def step():
        return trainer.train_step(images, labels, progress=0.0)

    if method == "rdnas":
        step()
        from torch.profiler import profile

        with profile() as prof:
            for _ in range(3):
                step()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        rank = sum(e.cpu_time_total for e in events if e.key in ("rdnas.rank_term", "rdnas.sample"))
        bench.extra_info["rank_share"] = rank / total if total else None
    bench(step)

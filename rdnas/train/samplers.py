"""Architecture samplers for one-shot training, over any registered search space.

Every sampler's ``sample()`` returns LongTensor[K, space.width] on the CPU (where supernets read architectures),
is seeded, and checkpoints its random state (``state_dict`` / ``load_state_dict``). ``num_paths`` is that K, the
same every step: subnet-parallel training (:func:`rdnas.distributed.step_layout`) splits the step's subnets over
the processes by it before the first draw, and every process draws the same K from its own copy of the sampler. ``space`` defaults to
``"nb201"``; on NB201 every sampler draws exactly the random stream it drew before spaces were generic.
"""

import math

import torch
from torch import Tensor

from rdnas.spaces import get_space


class UniformSampler:
    """SPOS: K architectures per step from the space's own uniform distribution (``space.sample``; NB201: every
    edge's op uniform and independent).

    ``sample()`` returns LongTensor[K, space.width] on the CPU, where the supernet reads architectures. By default the draws
    happen on the CPU (microseconds, no device involved). With ``device`` set, they happen on that device in blocks
    of ``block_steps`` steps and reach the host in one copy per block, so a GPU run synchronises once per block
    rather than once per step. Seeded and checkpointable (``state_dict`` holds the generator and any unused draws).
    """

    def __init__(self, num_paths: int = 1, seed: int = 0, device=None, block_steps: int = 256, space="nb201"):
        if num_paths < 1:
            raise ValueError(f"rdnas.train.UniformSampler: num_paths must be positive, got {num_paths}")
        if block_steps < 1:
            raise ValueError(f"rdnas.train.UniformSampler: block_steps must be positive, got {block_steps}")
        self.space = get_space(space)
        self.num_paths = num_paths
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.block_steps = block_steps if device is not None else 1
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._block = torch.empty(0, num_paths, self.space.width, dtype=torch.long)
        self._next = 0

    def sample(self) -> Tensor:
        if self._next >= len(self._block):
            draws = self.space.sample(self.block_steps * self.num_paths, self.generator)
            self._block, self._next = draws.cpu().view(self.block_steps, self.num_paths, -1), 0
        archs = self._block[self._next]
        self._next += 1
        return archs

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "block": self._block[self._next:].clone(),
                "device_type": self.device.type}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("device_type", self.device.type)  # older checkpoints do not say
        if saved != self.device.type:  # a CUDA generator's state does not fit a CPU one, nor the reverse
            raise ValueError(f"rdnas.train.UniformSampler.load_state_dict: the checkpoint's sampler drew its "
                             f"architectures on {saved}, this one on {self.device.type}; resume on the same kind "
                             f"of device (the checkpoint's --device) to continue its random stream")
        self.generator.set_state(state["generator"])
        self._block, self._next = state["block"], 0


class MarginSubnetSampler:
    """RD-NAS's margin subnet sampler: K subnets per step whose pairs span chosen teacher-group distances.

    The first subnet is drawn uniformly from the teacher's population (the space, or its reference sample). Each further subnet is drawn at a group distance d from
    the first: d uniform over the distances 1..G-1 that exist from the first subnet's group (or from
    ``distance_weights``), then one of the (one or two) groups at that distance uniformly, then a member of that
    group uniformly. The ranking loss uses all K(K-1)/2 pairs (same-group pairs among the later subnets are
    skipped by the loss).

    Args:
        teacher (Teacher or SampledTeacher): groups over its population (the whole space, or the reference set).
        num_paths (int): K >= 2.
        seed (int): the sampler's generator seed.
        distance_weights (sequence of G-1 floats, optional): relative probability of distance 1..G-1 (renormalised
            over the distances that exist from the first subnet's group; the first subnet is redrawn when none of
            positive weight exists from its group). Default uniform.

    ``sample()`` returns LongTensor[K, space.width] on the CPU.
    """

    def __init__(self, teacher, num_paths: int = 2, seed: int = 0, distance_weights=None):
        if num_paths < 2:
            raise ValueError(f"rdnas.train.MarginSubnetSampler: num_paths must be at least 2, got {num_paths}")
        g = teacher.num_groups
        weights = torch.ones(g - 1, dtype=torch.float64) if distance_weights is None else \
            torch.as_tensor(distance_weights, dtype=torch.float64)
        if weights.shape != (g - 1,) or bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError(f"rdnas.train.MarginSubnetSampler: distance_weights must be {g - 1} non-negative "
                             f"weights (distances 1..{g - 1}), not all zero; got {distance_weights}")
        self.teacher, self.num_paths = teacher, num_paths
        self.distance_weights = weights
        self.generator = torch.Generator().manual_seed(seed)

    def _member(self, group: int) -> int:
        members = self.teacher.members(group)
        return int(members[torch.randint(len(members), (1,), generator=self.generator)])

    def sample(self) -> Tensor:
        g = self.teacher.num_groups
        while True:  # a first subnet from which some distance of positive weight exists (group 0 always has one)
            first = int(torch.randint(self.teacher.population_size, (1,), generator=self.generator))
            first_group = int(self.teacher.groups[first])
            reachable = torch.tensor([d <= max(first_group, g - 1 - first_group) for d in range(1, g)])
            weights = self.distance_weights * reachable
            if float(weights.sum()) > 0:
                break
        chosen = [first]
        for _ in range(self.num_paths - 1):
            distance = int(torch.multinomial(weights, 1, generator=self.generator)) + 1
            candidates = [c for c in (first_group - distance, first_group + distance) if 0 <= c < g]
            group = candidates[int(torch.randint(len(candidates), (1,), generator=self.generator))]
            chosen.append(self._member(group))
        return self.teacher.population(torch.tensor(chosen))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class HammingPairSampler:
    """Pairs at a chosen number of changed choices (NB201: edges whose op differs), the authors' comparison sampler.

    The first subnet is uniform (``space.sample``); each further subnet is the first with h choices redrawn to
    other values (``space.mutate``), h uniform over 1..h_max. With ``adaptive``, h_max shrinks over training from
    ``max_distance`` to 1: ``h_max = max(1, ceil(max_distance * (1 - progress)))``, with ``progress`` in [0, 1] set
    by the trainer (``set_progress``); pairs get harder to tell apart as the supernet learns (rdnas's definition;
    the paper's exact schedule is not available). Default ``max_distance``: the space's width (NB201: 6).
    """

    def __init__(self, num_paths: int = 2, seed: int = 0, max_distance: int | None = None, adaptive: bool = False,
                 space="nb201"):
        self.space = get_space(space)
        max_distance = self.space.width if max_distance is None else max_distance
        if num_paths < 2:
            raise ValueError(f"rdnas.train.HammingPairSampler: num_paths must be at least 2, got {num_paths}")
        if not 1 <= max_distance <= self.space.width:
            raise ValueError(f"rdnas.train.HammingPairSampler: max_distance must be in 1..{self.space.width}, "
                             f"got {max_distance}")
        self.num_paths, self.max_distance, self.adaptive = num_paths, max_distance, adaptive
        self.generator = torch.Generator().manual_seed(seed)
        self.progress = 0.0

    def set_progress(self, progress: float) -> None:
        self.progress = min(max(float(progress), 0.0), 1.0)

    def current_max_distance(self) -> int:
        if not self.adaptive:
            return self.max_distance
        return max(1, math.ceil(self.max_distance * (1.0 - self.progress)))

    def sample(self) -> Tensor:
        first = self.space.sample(1, self.generator)
        rows = [first]
        h_max = self.current_max_distance()
        for _ in range(self.num_paths - 1):
            h = int(torch.randint(1, h_max + 1, (1,), generator=self.generator))
            rows.append(self.space.mutate(first, h, self.generator))
        return torch.cat(rows)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "progress": self.progress}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.progress = state["progress"]


class MinHammingPairSampler:
    """The RD-NAS authors' ZenScore-variant pairs: K uniform architectures (``space.sample``) in which every later
    one differs from the first in at least ``min_distance`` positions (``space.hamming``; the authors used 33 of the
    ResNet48 code's width digits). A draw below the distance is redrawn, at most ``max_attempts`` times per subnet.
    ``sample()`` returns LongTensor[K, space.width]."""

    def __init__(self, num_paths: int = 2, seed: int = 0, min_distance: int = 33, space="nb201",
                 max_attempts: int = 10_000):
        self.space = get_space(space)
        if num_paths < 2:
            raise ValueError(f"rdnas.train.MinHammingPairSampler: num_paths must be at least 2, got {num_paths}")
        if not 1 <= min_distance <= self.space.width:
            raise ValueError(f"rdnas.train.MinHammingPairSampler: min_distance must be in 1..{self.space.width} "
                             f"(the {self.space.name} width), got {min_distance}")
        self.num_paths, self.min_distance, self.max_attempts = num_paths, min_distance, max_attempts
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self) -> Tensor:
        first = self.space.sample(1, self.generator)
        rows = [first]
        for _ in range(self.num_paths - 1):
            for _ in range(self.max_attempts):
                other = self.space.sample(1, self.generator)
                if int(self.space.hamming(first, other)) >= self.min_distance:
                    rows.append(other)
                    break
            else:
                raise RuntimeError(f"rdnas.train.MinHammingPairSampler: no architecture at Hamming distance >= "
                                   f"{self.min_distance} from {self.space.to_string(first)} in {self.max_attempts} "
                                   "draws; lower min_distance")
        return torch.cat(rows)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class FairSampler:
    """FairNAS's strict fairness: each step, ``space.fair_paths`` spreads every choice of every position over M
    subnets (NB201: every edge's five ops permuted over five subnets), so each is trained exactly once per step.
    ``sample()`` returns LongTensor[M, space.width]."""

    def __init__(self, seed: int = 0, space="nb201"):
        self.space = get_space(space)
        self.generator = torch.Generator().manual_seed(seed)
        self.num_paths = len(self.space.fair_paths(torch.Generator().manual_seed(0)))

    def sample(self) -> Tensor:
        return self.space.fair_paths(self.generator)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class SandwichSampler:
    """The sandwich rule: the space's largest architecture (NB201: every edge ``nor_conv_3x3``), its smallest
    (NB201: the cheapest connected cell, every edge ``skip_connect``) and K - 2 uniform ones per step.
    ``sample()`` returns LongTensor[K, space.width], K >= 2, largest first, smallest second."""

    def __init__(self, num_paths: int = 4, seed: int = 0, space="nb201"):
        if num_paths < 2:
            raise ValueError(f"rdnas.train.SandwichSampler: num_paths must be at least 2, got {num_paths}")
        self.space = get_space(space)
        self.num_paths = num_paths
        self.generator = torch.Generator().manual_seed(seed)
        self._ends = torch.stack([self.space.largest(), self.space.smallest()])

    def sample(self) -> Tensor:
        return torch.cat([self._ends, self.space.sample(self.num_paths - 2, self.generator)])

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

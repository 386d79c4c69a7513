"""Architecture samplers for one-shot training."""

import math

import torch
from torch import Tensor

from rdnas.spaces import nb201


class UniformSampler:
    """SPOS: every edge's op drawn uniformly and independently, K architectures per step.

    ``sample()`` returns LongTensor[K, 6] on the CPU, where the supernet reads architectures. By default the draws
    happen on the CPU (microseconds, no device involved). With ``device`` set, they happen on that device in blocks
    of ``block_steps`` steps and reach the host in one copy per block, so a GPU run synchronises once per block
    rather than once per step. Seeded and checkpointable (``state_dict`` holds the generator and any unused draws).
    """

    def __init__(self, num_paths: int = 1, seed: int = 0, device=None, block_steps: int = 256):
        if num_paths < 1:
            raise ValueError(f"rdnas.train.UniformSampler: num_paths must be positive, got {num_paths}")
        if block_steps < 1:
            raise ValueError(f"rdnas.train.UniformSampler: block_steps must be positive, got {block_steps}")
        self.num_paths = num_paths
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.block_steps = block_steps if device is not None else 1
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._block = torch.empty(0, num_paths, nb201.NUM_EDGES, dtype=torch.long)
        self._next = 0

    def sample(self) -> Tensor:
        if self._next >= len(self._block):
            draws = torch.randint(0, nb201.NUM_OPS, (self.block_steps, self.num_paths, nb201.NUM_EDGES),
                                  generator=self.generator, device=self.device)
            self._block, self._next = draws.cpu(), 0
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


def _enumeration_to_archs(indices: Tensor) -> Tensor:
    """LongTensor[K] of enumeration indices -> LongTensor[K, 6] (first edge most significant)."""
    digits = []
    rest = indices.clone()
    for _ in range(nb201.NUM_EDGES):
        digits.append(rest % nb201.NUM_OPS)
        rest = rest // nb201.NUM_OPS
    return torch.stack(digits[::-1], dim=1)


class MarginSubnetSampler:
    """RD-NAS's margin subnet sampler: K subnets per step whose pairs span chosen teacher-group distances.

    The first subnet is drawn uniformly from the space. Each further subnet is drawn at a group distance d from
    the first: d uniform over the distances 1..G-1 that exist from the first subnet's group (or from
    ``distance_weights``), then one of the (one or two) groups at that distance uniformly, then a member of that
    group uniformly. The ranking loss uses all K(K-1)/2 pairs (same-group pairs among the later subnets are
    skipped by the loss).

    Args:
        teacher (Teacher): groups over the space.
        num_paths (int): K >= 2.
        seed (int): the sampler's generator seed.
        distance_weights (sequence of G-1 floats, optional): relative probability of distance 1..G-1 (renormalised
            over the distances that exist from the first subnet's group; the first subnet is redrawn when none of
            positive weight exists from its group). Default uniform.

    ``sample()`` returns LongTensor[K, 6] on the CPU.
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
            first = int(torch.randint(nb201.NUM_ARCHS, (1,), generator=self.generator))
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
        return _enumeration_to_archs(torch.tensor(chosen))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class HammingPairSampler:
    """Pairs at a chosen Hamming distance (edges whose op differs), the authors' comparison sampler.

    The first subnet is uniform; each further subnet changes h distinct edges of the first to another op, h uniform
    over 1..h_max. With ``adaptive``, h_max shrinks over training from 6 to 1: ``h_max = max(1, ceil(6 * (1 -
    progress)))``, with ``progress`` in [0, 1] set by the trainer (``set_progress``); pairs get harder to tell
    apart as the supernet learns (rdnas's definition; the paper's exact schedule is not available).
    """

    def __init__(self, num_paths: int = 2, seed: int = 0, max_distance: int = nb201.NUM_EDGES, adaptive: bool = False):
        if num_paths < 2:
            raise ValueError(f"rdnas.train.HammingPairSampler: num_paths must be at least 2, got {num_paths}")
        if not 1 <= max_distance <= nb201.NUM_EDGES:
            raise ValueError(f"rdnas.train.HammingPairSampler: max_distance must be in 1..{nb201.NUM_EDGES}, "
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
        first = torch.randint(0, nb201.NUM_OPS, (nb201.NUM_EDGES,), generator=self.generator)
        rows = [first]
        h_max = self.current_max_distance()
        for _ in range(self.num_paths - 1):
            h = int(torch.randint(1, h_max + 1, (1,), generator=self.generator))
            edges = torch.randperm(nb201.NUM_EDGES, generator=self.generator)[:h]
            shift = torch.randint(1, nb201.NUM_OPS, (h,), generator=self.generator)
            other = first.clone()
            other[edges] = (first[edges] + shift) % nb201.NUM_OPS
            rows.append(other)
        return torch.stack(rows)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "progress": self.progress}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.progress = state["progress"]


class FairSampler:
    """FairNAS's strict fairness: each step, every edge's five ops are a random permutation spread over five
    subnets, so every op of every edge is trained exactly once per step. ``sample()`` returns LongTensor[5, 6]."""

    def __init__(self, seed: int = 0):
        self.num_paths = nb201.NUM_OPS
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self) -> Tensor:
        columns = [torch.randperm(nb201.NUM_OPS, generator=self.generator) for _ in range(nb201.NUM_EDGES)]
        return torch.stack(columns, dim=1)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


LARGEST_CELL = (nb201.CONV3X3,) * nb201.NUM_EDGES
SMALLEST_CELL = (nb201.SKIP,) * nb201.NUM_EDGES  # the cheapest connected cell: no weights, no FLOPs


class SandwichSampler:
    """The sandwich rule: the largest cell (every edge ``nor_conv_3x3``), the smallest connected one (every edge
    ``skip_connect``) and K - 2 uniform cells per step. ``sample()`` returns LongTensor[K, 6], K >= 2."""

    def __init__(self, num_paths: int = 4, seed: int = 0):
        if num_paths < 2:
            raise ValueError(f"rdnas.train.SandwichSampler: num_paths must be at least 2, got {num_paths}")
        self.num_paths = num_paths
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self) -> Tensor:
        random = torch.randint(0, nb201.NUM_OPS, (self.num_paths - 2, nb201.NUM_EDGES), generator=self.generator)
        return torch.cat([torch.tensor([LARGEST_CELL, SMALLEST_CELL]), random])

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

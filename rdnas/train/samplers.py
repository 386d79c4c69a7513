"""Architecture samplers for one-shot training."""

import torch
from torch import Tensor

from rdnas.spaces import nb201


class UniformSampler:
    """SPOS: every edge's op drawn uniformly and independently, K architectures per step.

    ``sample()`` returns LongTensor[K, 6] on the CPU (the supernet reads architectures on the host; drawing them
    there costs microseconds and never synchronises a GPU). Seeded and checkpointable through its generator.
    """

    def __init__(self, num_paths: int = 1, seed: int = 0):
        if num_paths < 1:
            raise ValueError(f"rdnas.train.UniformSampler: num_paths must be positive, got {num_paths}")
        self.num_paths = num_paths
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self) -> Tensor:
        return torch.randint(0, nb201.NUM_OPS, (self.num_paths, nb201.NUM_EDGES), generator=self.generator)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

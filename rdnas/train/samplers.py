"""Architecture samplers for one-shot training."""

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
        return {"generator": self.generator.get_state(), "block": self._block[self._next:].clone()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._block, self._next = state["block"], 0

"""Started by tests/test_distributed.py under torchrun: one rank of a job (not a test module).

``python -m torch.distributed.run --nproc_per_node 2 tests/distributed_worker.py fail RANK STEP -- <rdnas args>``
runs ``rdnas <args>`` on every rank, with rank RANK raising RuntimeError("injected failure") at its training step
STEP: the job must stop with a message naming that rank instead of hanging.
"""

import os
import sys


def main() -> int:
    mode, failing_rank, failing_step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    assert mode == "fail" and sys.argv[4] == "--", sys.argv
    from rdnas.cli import main as rdnas_main
    from rdnas.train import OneShotTrainer

    if int(os.environ["RANK"]) == failing_rank:
        step = OneShotTrainer.train_step
        calls = []

        def failing(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == failing_step:
                raise RuntimeError("injected failure")
            return step(self, *args, **kwargs)

        OneShotTrainer.train_step = failing
    return rdnas_main(sys.argv[5:])


if __name__ == "__main__":
    sys.exit(main())

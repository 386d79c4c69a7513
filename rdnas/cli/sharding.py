"""How a builder command splits its runs: ``--shard i/n`` in one process, or the ranks of a torchrun job.

Used by the builders whose processes only meet at the end (``rdnas bench build``, ``rdnas dass bench``): each rank
trains its shard of the runs into its own run file, and rank 0 writes the tables once every rank has finished.
"""


def shard_and_world(args, device: str = "cpu"):
    """(shard (i, n), World, this rank's device) of a builder command.

    Under torchrun (WORLD_SIZE > 1): the rank's shard ``(RANK, WORLD_SIZE)``, with a gloo group whose collectives
    are a few barriers between phases (so its timeout is long: RDNAS_DIST_TIMEOUT, default a week); a ``--shard``
    other than ``env`` is then a usage error (two ways of splitting the runs). Otherwise ``--shard`` (default
    0/1; ``env``: RANK / WORLD_SIZE of another launcher) and no group.

    Args:
        args: the parsed command line: ``shard`` (None, ``"env"`` or (i, n)), ``usage_error``, and ``device`` where
            the command has that option (else ``device``).
    """
    import os

    from rdnas import distributed

    device = getattr(args, "device", device)
    size = distributed.launched_size()
    if size <= 1:
        shard = (0, 1) if args.shard is None else distributed.parse_shard(args.shard, "--shard")
        return shard, distributed.World(), device
    if args.shard not in (None, "env"):
        args.usage_error(f"--shard {args.shard[0]}/{args.shard[1]} and torchrun's WORLD_SIZE={size} both split "
                         "the runs; leave --shard out under torchrun (each rank takes RANK/WORLD_SIZE)")
    timeout = float(os.environ.get("RDNAS_DIST_TIMEOUT", 7 * 24 * 3600))
    world, device = distributed.init(device, timeout_s=timeout, backend="gloo")
    return (world.rank, world.size), world, device

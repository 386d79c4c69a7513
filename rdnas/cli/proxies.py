"""rdnas proxies: score architectures with zero-cost proxies into a resumable CSV table."""

import sys

from rdnas.cli.arguments import (add_network_options, check_image_size, device, input_file, network_options,
                                 non_negative_int, positive_int, proxy_names, read_archs, shard)
from rdnas.cli.checkpoint import read_table
from rdnas.spaces import space_names


def add_parser(commands) -> None:
    proxies = commands.add_parser(
        "proxies",
        help="score every architecture with zero-cost proxies into a resumable CSV table",
        description="Scores the search space with zero-cost proxies on the supernet's weights at initialisation "
        "and writes OUT (index,arch,<proxy>,...; rows appended chunk by chunk) and OUT.meta.json. Run the same "
        "command again to resume an interrupted run; --shard i/n splits the work among processes (merge their "
        "tables with rdnas merge-tables). Example: rdnas proxies --proxy synflow,naswot --data "
        "npz:freerea_cifar10_train_minibatches.npz --gt nb201_gt.csv --out nb201_proxies.csv",
    )
    proxies.add_argument("--space", choices=list(space_names()), default="nb201",
                         help="search space (default nb201); resnet48 needs --archs-file")
    proxies.add_argument("--archs-file", type=input_file,
                         help="the architectures to score: one code per line, or a competition "
                         "JSON ({\"arch1\": {\"arch\": ...}}); table index = position in the file")
    proxies.add_argument("--proxy", type=proxy_names, metavar="NAMES",
                         help="comma-separated proxy names, or 'all' (see --list)")
    proxies.add_argument("--out", help="the CSV table to write or resume ({shard} in the name becomes the shard)")
    proxies.add_argument("--data", default="random",
                         help="the minibatch: random (Gaussian, default), random:C,H,W,classes, npz:<path>, "
                         "cifar10:<dir>, cifar100:<dir>, imagenet16:<dir> or digits")
    proxies.add_argument("--batch-size", type=positive_int, default=64, help="images in the minibatch (default 64)")
    proxies.add_argument("--batch-index", type=non_negative_int, default=0,
                         help="which batch of the source (default 0)")
    proxies.add_argument("--image-size", type=positive_int, help="digits: the side (default 32); other sources: resize")
    proxies.add_argument("--init", choices=["pytorch", "kaiming_normal"], default="pytorch",
                         help="supernet initialisation (default pytorch)")
    proxies.add_argument("--seed", type=non_negative_int, default=0, help="initialisation and data seed (default 0)")
    add_network_options(proxies)  # the scoring supernet's options, per space (defaults: the benchmarks' networks)
    proxies.add_argument("--gt", type=input_file,
                         help="ground-truth table (nb201_gt.csv format): index = official NB201 index "
                         "(without it: the enumeration index of rdnas.spaces.nb201)")
    proxies.add_argument("--limit", type=positive_int, help="score only the first N architectures (quick runs)")
    proxies.add_argument("--archs-per-chunk", type=positive_int, default=64,
                         help="architectures per proxy call and per write (default 64)")
    proxies.add_argument("--shard", type=shard, default=(0, 1), metavar="i/n|env",
                         help="score only chunk c with c %% n == i; env: RANK/WORLD_SIZE of torchrun")
    proxies.add_argument("--device", type=device, default="cpu", help="torch device (default cpu)")
    proxies.add_argument("--quiet", action="store_true", help="no progress bar")
    proxies.add_argument("--list", action="store_true", help="list the proxies and exit")
    proxies.set_defaults(usage_error=proxies.error)


def run(args) -> int:
    import numpy as np
    import torch

    from rdnas.data import DatasetError
    from rdnas.proxies import PROXIES, load_minibatch, score_space
    from rdnas.spaces import get_space

    if args.list:
        width = max(map(len, PROXIES))
        for name, proxy in PROXIES.items():
            kind = ("uses images" if proxy.needs_data else "no images") + (", batched" if proxy.batched else "")
            print(f"{name:<{width}}  {proxy.summary} [{kind}]")
        return 0
    if not args.proxy:
        args.usage_error("--proxy is required (or --list)")
    if not args.out:
        args.usage_error("--out is required")
    try:
        options = network_options(args, args.space)
    except ValueError as error:
        args.usage_error(str(error))
    # input checks before any work (a usage error, exit status 2, nothing written)
    archs = torch.tensor(read_archs(args.archs_file, args.space)) if args.archs_file else None
    if args.gt:
        read_table(args.gt, args.space, None, "--gt")  # there, readable and of the space
    if args.image_size is not None:
        check_image_size(args.space, args.image_size, options)
    try:
        minibatch = load_minibatch(args.data, args.batch_size, args.seed, args.batch_index, args.image_size)
    except (ValueError, OSError, DatasetError) as error:
        raise ValueError(f"--data: {error}") from None
    height, width = minibatch.inputs.shape[-2:]
    for side in {height, width}:
        check_image_size(args.space, side, options, option="--image-size" if args.image_size else "--data")
    from rdnas.distributed import parse_shard
    from rdnas.run_folder import claim_file

    i, n = parse_shard(args.shard, "--shard")  # one writer per output file: the one score_space writes
    claim_file(args.out.replace("{shard}", str(i)).replace("{num_shards}", str(n)), "proxies")
    try:
        table = score_space(args.proxy, minibatch, space=args.space, archs=archs, gt=args.gt, limit=args.limit,
                            out=args.out, shard=args.shard, archs_per_chunk=args.archs_per_chunk, init=args.init,
                            seed=args.seed, device=args.device, progress=not args.quiet, **options)
    except (ValueError, OSError, DatasetError) as error:
        print(f"rdnas proxies: error: {error}", file=sys.stderr)
        return 1
    info = table.info
    shard_note = "" if info["shard"] == (0, 1) else f" (shard {info['shard'][0]}/{info['shard'][1]})"
    print(f"rdnas proxies: {len(table)} rows in {info['path']}{shard_note}: {info['written']} scored now in "
          f"{info['seconds']:.1f} s, {info['already_present']} already there")
    supernet = f"{args.space} supernet " + ", ".join(f"{name}={value}" for name, value in options.items())
    if not get_space(args.space).enumerable:
        index = f"position in {args.archs_file}"
    else:
        index = "official index (" + args.gt + ")" if args.gt else "rdnas enumeration order"
    print(f"  data: {minibatch.source}, inputs {list(minibatch.inputs.shape)}; {supernet}, init {args.init}, "
          f"seed {args.seed}; index: {index}")
    for name in table.names:
        values = table.column(name)
        finite = values[np.isfinite(values)]
        spread = (f"min {finite.min():.6g}, median {np.median(finite):.6g}, max {finite.max():.6g}"
                  if len(finite) else "")
        print(f"  {name:<12} {len(finite)} finite of {len(values)}  {spread}")
    return 0

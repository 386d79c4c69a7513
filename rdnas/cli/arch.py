"""rdnas arch: describe architectures (canonical string, parameters, FLOPs)."""

from rdnas.spaces import space_names


def add_parser(commands) -> None:
    arch = commands.add_parser(
        "arch", help="describe architectures: canonical string, parameters and FLOPs (one JSON line each)",
        description="Prints one JSON line per architecture with 'arch' (the canonical string), 'params', 'flops' "
        "and 'trainable_params'. resnet48: the CVPR 2022 Track 1 conventions (224 px, 1000 classes; paddle.flops: "
        "conv multiply-accumulates, BN 2 per output element, FC in x out; params count BN running statistics), "
        "trainable_params PyTorch's count. nb201: the benchmark network (C=16, N=5, 32x32, 10 classes), counted "
        "as the benchmark counts them (its table's flops_M and params_M times 1e6). Example: rdnas arch --space resnet48 "
        "1558511111111111111111111111111111111111111111111111",
    )
    arch.add_argument("--space", choices=list(space_names()), default="nb201", help="search space (default nb201)")
    arch.add_argument("codes", nargs="+", metavar="CODE", help="architectures as the space writes them")


def run(args) -> int:
    import json

    import torch

    from rdnas.spaces import get_space

    space = get_space(args.space)
    archs = torch.cat([space.from_string(code).unsqueeze(0) for code in args.codes])
    costs = {name: values.tolist() for name, values in space.cost(archs).items()}
    for k, arch in enumerate(archs):
        line = {"arch": space.to_string(arch)}
        line.update({name: _plain_number(values[k]) for name, values in costs.items()})
        print(json.dumps(line))
    return 0


def _plain_number(value: float):
    return int(value) if float(value).is_integer() else value

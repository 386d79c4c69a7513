"""The input files of the commands that use a trained supernet (eval, search): the checkpoint, told apart from the
other files rdnas writes, and a ground-truth table checked against the run's space and the column asked for."""

def load_supernet(checkpoint, device, option: str = "--checkpoint", state: dict | None = None):
    """(supernet on ``device``, its TrainConfig, its data splits) from a checkpoint written by rdnas train
    (``state``: its contents, when read_checkpoint has read them already). A file that is not one raises ValueError
    naming ``option`` and what the file is instead, where rdnas can tell (a predictor model file, a torch file of
    something else, not a torch file)."""
    from rdnas.train import TrainConfig, load_data

    state = read_checkpoint(checkpoint, option) if state is None else state
    config = TrainConfig.from_dict(state["config"])
    config.device = device
    data = load_data(config)
    supernet = config.build_supernet(data)
    supernet.load_state_dict(state["model"])
    return supernet.to(device), config, data


def read_checkpoint(path, option: str = "--checkpoint") -> dict:
    """The state dict of an rdnas train checkpoint (on the CPU); ValueError naming ``option`` otherwise."""
    from rdnas.train import load_checkpoint

    try:
        state = load_checkpoint(path)
    except FileNotFoundError:
        raise ValueError(f"{option}: no such file: {path}") from None
    except ValueError:
        raise ValueError(f"{option}: {path} is not a supernet checkpoint: not a file that rdnas train writes (a "
                         "torch file of tensors and plain values), or truncated") from None
    if isinstance(state, dict) and isinstance(state.get("config"), dict) and isinstance(state.get("model"), dict):
        return state
    from rdnas.predictors.base import FORMAT as PREDICTOR_FORMAT

    if isinstance(state, dict) and state.get("format") == PREDICTOR_FORMAT:
        raise ValueError(f"{option}: {path} is a predictor model file (rdnas predictor fit), not a supernet "
                         "checkpoint (rdnas train --out DIR writes DIR/checkpoint.pt)")
    raise ValueError(f"{option}: {path} is a torch file but not a supernet checkpoint (rdnas train --out DIR writes "
                     "DIR/checkpoint.pt)")


def checkpoint_space(state: dict) -> str:
    """The name of the space of the run a checkpoint's state (read_checkpoint) comes from."""
    from rdnas.train import TrainConfig

    return TrainConfig.from_dict(state["config"]).space


def read_table(path, space, column: str | None, option: str = "--gt", checkpoint=None):
    """The ground-truth table at ``path`` (rdnas.rank.GroundTruth) of ``space``, checked before any work: a table
    that is malformed, of another space or without ``column`` (when given) raises ValueError naming ``option``
    (and the checkpoint whose space it is, when given)."""
    from rdnas.rank import GroundTruth
    from rdnas.rank.ground_truth import SHIPPED_PREFIX, MalformedTable
    from rdnas.spaces import get_space

    space = get_space(space)
    owner = f"; the checkpoint {checkpoint} is a {space.name} supernet" if checkpoint else ""
    try:
        table = GroundTruth.load(path, space)
    except FileNotFoundError as error:
        if str(path).startswith(SHIPPED_PREFIX):  # an unknown shipped name: the message lists the shipped tables
            raise ValueError(f"{option}: {str(error).removeprefix('rdnas.rank.GroundTruth: ')}") from None
        raise ValueError(f"{option}: no such file: {path}") from None
    except MalformedTable as error:
        other = _table_space(path, space.name)
        if other:
            raise ValueError(f"{option}: {path} is a table of {other} architectures, not {space.name} "
                             f"ones{owner}") from None
        raise ValueError(f"{option}: {str(error)[:300]}{owner}") from None
    if column is not None and column not in table.columns:
        raise ValueError(f"{option}: {path} has no column {column!r} (--column); its columns: "
                         f"{', '.join(sorted(table.columns))}")
    return table


def _table_space(path, exclude: str) -> str:
    """The registered space (other than ``exclude``) whose table reader reads ``path``, or ""."""
    from rdnas.rank import GroundTruth
    from rdnas.rank.ground_truth import MalformedTable
    from rdnas.spaces import space_names

    for name in space_names():
        if name == exclude:
            continue
        try:
            GroundTruth.load(path, name)
        except (MalformedTable, ValueError, KeyError):
            continue
        return name
    return ""

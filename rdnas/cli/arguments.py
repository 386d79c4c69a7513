"""Shared argparse types and output helpers of the rdnas commands."""

import argparse


def proxy_names(text: str) -> list[str]:
    """--proxy: comma-separated registered names, or 'all'."""
    from rdnas.proxies import PROXIES, get_proxy

    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return list(PROXIES)
    if not names:
        raise argparse.ArgumentTypeError(f"no proxy named; known proxies: {', '.join(sorted(PROXIES))}")
    for name in names:
        try:
            get_proxy(name)
        except ValueError:
            raise argparse.ArgumentTypeError(f"unknown proxy {name!r}; known proxies: "
                                             f"{', '.join(sorted(PROXIES))}") from None
    return names


def device(text: str) -> str:
    """--device: any torch device string (cpu, cuda, cuda:1, ...)."""
    import torch

    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda or cuda:1, got {text!r}") from None
    return text


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, sizes, steps)."""
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (seeds, indices, and limits where 0 means all)."""
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def int_at_least(minimum: int, why: str = ""):
    """The argparse type of an integer >= ``minimum`` (e.g. ``int_at_least(2)`` for teacher groups); ``why``, when
    given, is the reason the message states."""

    def at_least(text: str) -> int:
        value = integer(text)
        if value < minimum:
            reason = f" ({why})" if why else ""
            raise argparse.ArgumentTypeError(f"expected an integer of at least {minimum}{reason}, got {text!r}")
        return value

    at_least.minimum = minimum
    return at_least


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def finite_float(text: str) -> float:
    """A finite real number (not nan, inf or -inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (weight decay, margins, loss weights)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def momentum(text: str) -> float:
    """SGD momentum: a number in [0, 1) (1 or more never forgets a gradient and diverges)."""
    value = finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def input_file(text: str) -> str:
    """An input file (table, checkpoint, model file, architecture list): a folder or an empty file is refused here;
    a missing one is named by the command's reader, with the option, before any work. The empty string passes: it
    is the default "none given" of some options."""
    import os

    if text == "":
        return text
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"expected a file, got the folder {text}")
    if os.path.isfile(text) and os.path.getsize(text) == 0:
        raise argparse.ArgumentTypeError(f"{text} is empty")
    return text


def check_image_size(space: str, side: int, options: dict, option: str = "--image-size") -> None:
    """Refuses an image side that the space's network cannot take (its SupernetSpec's check_image_size), as a
    ValueError naming ``option``."""
    from rdnas.supernet import supernet_spec

    spec = supernet_spec(space)
    if spec.check_image_size is None:
        return
    try:
        spec.check_image_size(side, options)
    except ValueError as error:
        raise ValueError(f"{option}: {str(error).removeprefix('rdnas: ')}") from None


def json_output(path):
    """Checks an --out JSON path before the work starts (see prepare_output_file); None when there is none."""
    from rdnas.atomic_file import prepare_output_file

    return None if path is None else prepare_output_file(path, "--out")


def write_json(path, value) -> None:
    """Writes ``value`` as JSON to ``path`` atomically (a temporary file renamed over it)."""
    import json

    from rdnas.atomic_file import write_text_atomic

    write_text_atomic(path, json.dumps(value, indent=2))


def shard(text: str):
    """--shard: i/n with 0 <= i < n, or env."""
    if text == "env":
        return text
    first, _, second = text.partition("/")
    try:
        i, n = int(first), int(second)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n (e.g. 0/4) or env, got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"needs 0 <= i < n, got {text!r}")
    return i, n


def read_archs_file(path, space, option: str = "--archs-file", against: str = "") -> list[tuple]:
    """The architectures of a text file, one architecture string per line (blank lines and lines that start
    with ``#`` skipped), validated in ``space``: a list of int tuples in the file's order. Raises ValueError naming the
    option, the file and the line of the first string that is not an architecture, a repeated one, or a file
    that lists none."""
    from rdnas.spaces import InvalidArchitecture, get_space

    space = get_space(space)
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{option}: cannot read {path} ({error})") from None
    archs, seen = [], {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            arch = tuple(space.from_string(text).tolist())
        except InvalidArchitecture as error:
            other = architecture_space_of(text, exclude=space.name)
            if other:
                raise ValueError(f"{option}: {path} holds {other} architectures (line {number}: {_quoted(text)}), "
                                 f"not {space.name} ones{against}") from None
            raise ValueError(f"{option}: {path}:{number}: not a {space.name} architecture "
                             f"({_quoted(str(error))}){against}") from None
        if arch in seen:
            raise ValueError(f"{option}: {path}:{number}: {text} repeats line {seen[arch]}")
        seen[arch] = number
        archs.append(arch)
    if not archs:
        raise ValueError(f"{option}: {path} lists no architecture (one {space.name} architecture string per line)")
    return archs


def read_submission_archs(path, space, option: str = "--archs-json", against: str = "") -> list[tuple[str, tuple]]:
    """(key, architecture) pairs of a competition JSON file (``{"arch1": {"acc": ..., "arch": "<code>"}}``, the
    CVPR 2022 NAS Track 1 format), in the file's order, each architecture an int tuple validated in ``space``.
    Raises ValueError naming ``option`` and the file: a file that is not that format, or an entry that is not an
    architecture of ``space`` (quoting that one entry, and naming the space its codes do belong to, if any;
    ``against`` is appended, e.g. "; the checkpoint c.pt is an nb201 supernet")."""
    import json
    from pathlib import Path

    from rdnas.spaces import InvalidArchitecture, get_space

    space = get_space(space)
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{option}: cannot read {path} as JSON ({error})") from None
    if not isinstance(entries, dict) or not entries or not all(
            isinstance(v, dict) and isinstance(v.get("arch"), str) for v in entries.values()):
        raise ValueError(f"{option}: {path} must be an object of entries {{\"arch\": <code>, \"acc\": ...}} "
                         "(the CVPR 2022 NAS Track 1 format)")
    pairs, seen = [], {}
    for key, value in entries.items():
        try:
            arch = tuple(space.from_string(value["arch"]).tolist())
        except InvalidArchitecture as error:
            other = architecture_space_of(value["arch"], exclude=space.name)
            if other:
                raise ValueError(f"{option}: {path} holds {other} architectures (entry {key!r}: "
                                 f"{_quoted(value['arch'])}), not {space.name} ones{against}") from None
            raise ValueError(f"{option}: {path}: entry {key!r} is not a {space.name} architecture "
                             f"({_quoted(str(error))}){against}") from None
        if arch in seen:
            raise ValueError(f"{option}: {path}: entry {key!r} repeats the architecture of entry {seen[arch]!r}")
        seen[arch] = key
        pairs.append((key, arch))
    return pairs


def read_archs(path, space, option: str = "--archs-file", against: str = "") -> list[tuple]:
    """The architectures of ``path`` as int tuples: a competition JSON file (``*.json``, see
    read_submission_archs) or a text file with one architecture string per line (see read_archs_file)."""
    if str(path).endswith(".json"):
        return [arch for _, arch in read_submission_archs(path, space, option, against)]
    return read_archs_file(path, space, option, against)


def architecture_space_of(text: str, exclude: str = "") -> str:
    """The name of the first registered space (other than ``exclude``) that reads ``text`` as an architecture,
    or "" (to tell a user which space a file of codes belongs to)."""
    from rdnas.spaces import InvalidArchitecture, get_space, space_names

    for name in space_names():
        if name == exclude:
            continue
        try:
            get_space(name).from_string(text)
        except InvalidArchitecture:
            continue
        return name
    return ""


def _quoted(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters, so an error line quotes a value, never a whole file."""
    return text if len(text) <= limit else text[:limit] + "..."


def network_option_flag(field) -> str:
    """The command-line flag of one network option (a field of a space's rdnas.spaces.NetworkOptions): its
    ``flag`` metadata, or the name with dashes (``--no-<name>`` for a boolean that defaults to True)."""
    if field.metadata.get("flag"):
        return field.metadata["flag"]
    return ("--no-" if field.type is bool and field.default is True else "--") + field.name.replace("_", "-")


def network_option_type(field):
    """The argparse type of a network option: the shared checking types, by the field's type and minimum."""
    minimum = field.metadata.get("minimum")
    if field.type is int:
        return positive_int if minimum == 1 else non_negative_int if minimum == 0 else \
            integer if minimum is None else int_at_least(minimum)
    if field.type is float:
        if minimum is None:
            return finite_float
        if minimum == 0:
            return non_negative_float

        def at_least(text: str) -> float:
            value = finite_float(text)
            if value < minimum:
                raise argparse.ArgumentTypeError(f"expected a number of at least {minimum}, got {text!r}")
            return value

        return at_least
    return str


def add_network_options(parser, skip: tuple = (), data_defaults: bool = False, only=None,
                        defaults: dict | None = None, benchmark_defaults: bool = False) -> None:
    """Adds a flag for every option of every registered space's network, derived from its NetworkOptions dataclass
    (rdnas.supernet.SupernetSpec.options): the name (or the field's ``flag``), the type, the choices and the help,
    prefixed with the spaces that take it. Every flag defaults to None, so :func:`network_options` tells given from
    left out. ``skip``: option names this command sets with flags of its own; ``only``: if given, the option names
    this command takes (e.g. the fields of its recipe). ``data_defaults``: say in the help that the default
    depends on --data (``defaults_for_data``); ``defaults``: the command's own defaults, for the help;
    ``benchmark_defaults``: each space's mini-benchmark defaults (``NetworkOptions.benchmark_defaults``) are."""
    from rdnas.spaces import space_names
    from rdnas.supernet import supernet_spec

    flags, seen = {}, {}
    for space in space_names():
        options = supernet_spec(space).options
        for field in options.option_fields():
            if field.name in skip or (only is not None and field.name not in only):
                continue
            if field.name in seen:
                seen[field.name][1].append(space)
                continue
            seen[field.name] = (field, [space], options)
    for name, (field, spaces, options) in seen.items():
        flag = network_option_flag(field)
        flags[name] = flag
        default = (defaults or {}).get(name, field.default)
        if benchmark_defaults:
            default = options.benchmark_defaults().get(name, default)
        small = options.defaults_for_data("digits").get(name, default) if data_defaults else default
        note = f"default {default}" if small == default else f"default {default}; {small} on data other than imagenet"
        text = f"{', '.join(spaces)}: {field.metadata.get('help', name)}"
        if field.type is bool:
            parser.add_argument(flag, dest=name, action="store_const", const=not default, default=None, help=text)
            continue
        choices = list(field.metadata.get("choices") or ()) or None
        kind = integer if choices and field.type is int else network_option_type(field)
        metavar = None if choices else flag[2:].upper().replace("-", "_")
        spelled = "--" + name.replace("_", "-")  # the option's own name works too (--cells-per-stage for --cells)
        aliases = (flag, spelled) if spelled != flag else (flag,)
        parser.add_argument(*aliases, dest=name, type=kind, choices=choices, default=None, metavar=metavar,
                            help=f"{text} ({note})")
    parser.set_defaults(network_option_flags=flags)


def network_options(args, space, data: str | None = None, defaults: dict | None = None,
                    given_only: bool = False) -> dict:
    """The options of ``space``'s network from the flags :func:`add_network_options` added: those given, over
    ``defaults`` (a command's own), over the space's defaults for ``data`` when given; every option of the network
    filled in and checked (``given_only``: only the options given on the command line). A flag of an option the
    space's network does not take is a ValueError naming the flag, the spaces that take it and ``space``."""
    from rdnas.spaces import space_names
    from rdnas.supernet import supernet_spec

    spec = supernet_spec(space)
    flags = getattr(args, "network_option_flags", {})
    given = {name: getattr(args, name) for name in flags if getattr(args, name, None) is not None}
    for name in given:
        if name not in spec.option_names:
            takers = [other for other in space_names() if name in supernet_spec(other).option_names]
            raise ValueError(f"{flags[name]} is an option of {', '.join(takers)}, not of the {spec.space} space")
    if given_only:
        values, defaults, data = given, None, None
    values = {**(spec.options.defaults_for_data(data) if data is not None else {}),
              **{name: value for name, value in (defaults or {}).items() if name in spec.option_names}, **given}
    try:
        checked = spec.check_options(values, "").as_dict()
        return {name: checked[name] for name in given} if given_only else checked
    except ValueError as error:
        message = str(error).removeprefix(": ")
        for name, flag in flags.items():
            message = message.replace(f"{name} must", f"{flag} must")
        raise ValueError(message) from None

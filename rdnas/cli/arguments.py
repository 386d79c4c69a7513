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
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


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


def read_archs_file(path, space, option: str = "--archs-file") -> list[tuple]:
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
            raise ValueError(f"{option}: {path}:{number}: not a {space.name} architecture ({error})") from None
        if arch in seen:
            raise ValueError(f"{option}: {path}:{number}: {text} repeats line {seen[arch]}")
        seen[arch] = number
        archs.append(arch)
    if not archs:
        raise ValueError(f"{option}: {path} lists no architecture (one {space.name} architecture string per line)")
    return archs

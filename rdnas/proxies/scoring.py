"""Score a whole search space with zero-cost proxies into a resumable, shardable CSV table.

:func:`score_space` scores every NB201 cell (or a given list; for a space that cannot be enumerated, such as
resnet48, the list it is given) with one supernet's weights at initialisation,
chunk by chunk, appending each chunk's rows to the CSV as soon as they exist (flushed and fsynced). A run killed
at any point and started again with the same arguments continues where the file ends and produces exactly the
file an uninterrupted run writes. ``shard=(i, n)`` splits the chunks among n processes; :func:`merge_tables`
joins their files. The file format (``index,arch,<proxy>,...`` and the ``.meta.json`` sidecar) and its readers
live in :mod:`rdnas.proxies.score_table`.
"""

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rdnas.atomic_file import prepare_output_file, write_text_atomic
from rdnas.distributed import parse_shard
from rdnas.proxies.base import (Minibatch, Proxy, clear_plan_caches, get_proxy, network_state_restored,
                                scoring_supernet)
# META_SUFFIX and merge_tables are re-exported: they were importable from here before the file format moved
from rdnas.proxies.score_table import (META_SUFFIX, ScoreTable, _compact, _first_difference,  # noqa: F401
                                       _header_line, _parse_row, _recorded_settings, _row_line, _scan, merge_tables,
                                       meta_path)
from rdnas.spaces import get_space
from rdnas.supernet import supernet_spec
from torch import nn

FORMAT_VERSION = 1
_WHERE = "rdnas.proxies.score_space"


# ------------------------------------------------------------------------------------------ what gets scored


def _digest_tensors(named) -> str:
    digest = hashlib.sha256()
    for name, tensor in named:
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes, any dtype
    return digest.hexdigest()


def _positioned_archs(space, archs, gt) -> list[tuple[int, tuple]]:
    """[(position in archs, arch)] for a space that cannot be enumerated: ``archs`` (LongTensor[K, space.width],
    a sequence of architectures or of the space's strings) is required and keeps its order."""
    if archs is None:
        raise ValueError(f"{_WHERE}: the {space.name} space ({space.size:.3g} architectures) cannot be enumerated; "
                         f"pass archs, the architectures to score (LongTensor[K, {space.width}] or a list of "
                         f"{space.name} strings)")
    if gt is not None:
        raise ValueError(f"{_WHERE}: gt gives the indices of an enumerable space's table; the {space.name} table's "
                         "index is the position in archs")
    try:
        if isinstance(archs, Sequence) and not isinstance(archs, str) and archs and isinstance(archs[0], str):
            archs = torch.stack([space.from_string(a) for a in archs]) if archs else archs
        rows = space.validate(archs)
    except (ValueError, TypeError) as error:
        raise type(error)(f"{_WHERE}: archs: {error}") from None
    entries = [(k, tuple(row)) for k, row in enumerate(rows.tolist())]
    strings = [space.to_string(rows[k]) for k in range(len(rows))]
    if len(set(strings)) != len(strings):
        repeated = next(a for k, a in enumerate(strings) if a in strings[:k])
        raise ValueError(f"{_WHERE}: archs lists an architecture more than once ({repeated})")
    return entries


def _ordered_archs(space, archs, gt, limit) -> tuple[list[tuple[int, tuple]], str]:
    """[(index, arch)] in increasing index, and the name of the index: for an enumerable space the official
    index (``gt``) or the enumeration index, for a space that cannot be enumerated the position in ``archs``."""
    if not space.enumerable:
        entries, order = _positioned_archs(space, archs, gt), "position"
    else:
        entries, order = _enumerated_archs(space, archs, gt), ("official" if gt is not None else "enumeration")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"{_WHERE}: limit must be a non-negative integer or None, got {limit!r}")
        entries = entries[:limit]
    return entries, order


def _enumerated_archs(space, archs, gt) -> list[tuple[int, tuple]]:
    """[(official or enumeration index, arch)] of an enumerable space's architectures, in increasing index."""
    if gt is not None and not hasattr(gt, "index_of_arch"):
        from rdnas.rank import GroundTruth

        gt = GroundTruth.load(gt, space)
    if gt is not None and not getattr(gt, "has_index", True):
        raise ValueError(f"{_WHERE}: gt: {gt.path} has no index column; gt gives the official index of each "
                         "architecture (nb201_gt.csv format: index,arch_str,...)")
    if archs is None:
        if gt is not None:
            entries = list(zip(gt.indices.tolist(), map(tuple, gt.archs.tolist())))
        else:
            entries = list(enumerate(map(tuple, space.enumerate().tolist())))
    else:
        try:
            if isinstance(archs, Sequence) and not isinstance(archs, str) and archs and isinstance(archs[0], str):
                archs = torch.stack([space.from_string(a) for a in archs])
            rows = space.validate(archs)
        except (ValueError, TypeError) as error:
            raise type(error)(f"{_WHERE}: archs: {error}") from None
        archs = [tuple(row) for row in rows.tolist()]
        if len(set(archs)) != len(archs):
            repeated = next(a for k, a in enumerate(archs) if a in archs[:k])
            raise ValueError(f"{_WHERE}: archs lists an architecture more than once ({space.to_string(repeated)})")
        if gt is not None:
            try:
                entries = [(gt.index_of_arch(a), a) for a in archs]
            except KeyError as error:
                raise ValueError(f"{_WHERE}: gt: {error.args[0]}") from None
        else:
            entries = list(zip(space.index(rows).tolist(), archs))
    entries.sort()
    return entries


def _proxy_list(proxies) -> list[Proxy]:
    if isinstance(proxies, (str, Proxy)):
        proxies = [proxies]
    names = []
    for item in proxies:
        names += [item] if isinstance(item, Proxy) else [n.strip() for n in str(item).split(",") if n.strip()]
    if not names:
        raise ValueError(f"{_WHERE}: proxies is empty; name at least one proxy")
    resolved = [item if isinstance(item, Proxy) else get_proxy(item) for item in names]
    seen = [p.name for p in resolved]
    if len(set(seen)) != len(seen):
        raise ValueError(f"{_WHERE}: proxies names a proxy more than once: {seen}")
    for name in seen:
        if name in ("index", "arch") or "," in name or "\n" in name:
            raise ValueError(f"{_WHERE}: {name!r} cannot be a column name")
    return resolved


def _scores_of_chunk(proxies: list[Proxy], supernet, archs: list[tuple], minibatch) -> dict[str, np.ndarray]:
    """Every proxy's scores for one chunk, proxies called in order, each once with the whole chunk; the requested
    members of a family (the loss-gradient proxies) come from one call of the family, so they share one pass. The
    supernet's buffers are put back afterwards, so a chunk's scores never depend on which chunks ran before it
    (the basis of resuming and sharding)."""
    scores, family_scores = {}, {}
    with network_state_restored(supernet):
        for proxy in proxies:
            if proxy.family is None:
                values = proxy.score(supernet, archs, minibatch)
            else:
                if proxy.family not in family_scores:
                    members = tuple(p.name for p in proxies if p.family is proxy.family)
                    family_scores[proxy.family] = proxy.family(supernet, archs, minibatch, members)
                values = family_scores[proxy.family][proxy.name]
            values = torch.as_tensor(values).detach().to("cpu", torch.float64)
            if values.shape != (len(archs),):
                raise RuntimeError(f"{_WHERE}: proxy {proxy.name!r} returned shape {list(values.shape)} for "
                                   f"{len(archs)} architectures; expected [{len(archs)}]")
            scores[proxy.name] = values.numpy()
    return scores


# ---------------------------------------------------------------------------------------------- score_space


def score_space(proxies, minibatch: Minibatch | None = None, *, space: str = "nb201", archs=None, gt=None,
                limit: int | None = None, out=None, shard=(0, 1), archs_per_chunk: int = 64,
                supernet: nn.Module | None = None, init: str = "pytorch", seed: int = 0, device="cpu",
                metadata: bool = True, progress: bool = True, **options) -> ScoreTable:
    """Scores every architecture of a search space with zero-cost proxies, using one supernet's weights at
    initialisation (no network is built per architecture).

    The architectures are ordered by index (see below) and cut into consecutive chunks of ``archs_per_chunk``;
    for each chunk every proxy's ``score`` is called once, in the order given, and the chunk's rows go to ``out``
    at once (flushed and fsynced). Scores depend only on the supernet's initial weights, the minibatch and the
    architectures (the supernet's buffers are restored after every chunk), so on a deterministic device resumed
    and sharded runs give exactly the values of one uninterrupted run.

    Args:
        proxies (str | Proxy | sequence): proxy names (``"synflow,snip"`` or ``["synflow", "snip"]``) or Proxy
            records; the table's columns, in this order.
        minibatch (Minibatch, optional): the batch data-dependent proxies see (inputs Tensor[B, C, H, W],
            targets LongTensor[B]); see :func:`rdnas.proxies.load_minibatch`. Required when a proxy has
            ``needs_data``; the data-free ones use only its shape. Without one, the supernet is built for 10
            classes and 3 channels and those proxies assume 32x32 images.
        space (str): a registered search space with a supernet: "nb201" (15,625 cells, scored through the
            fused path) or "resnet48" (each architecture exported and scored as a plain network; see
            :mod:`rdnas.proxies.network`).
        archs (optional): the architectures to score instead of the whole space: a LongTensor[K, space.width], a
            sequence of architectures or of the space's strings (no repeats). Required for a space that cannot be
            enumerated (resnet48); there the table's ``index`` is the position in ``archs`` (0..K-1, rows in the
            order given) and ``arch`` the space's string, so a resumed or sharded run must be given the same list
            (the sidecar records its digest).
        gt (GroundTruth | path, optional): a ground-truth table (nb201_gt.csv format). With it, ``index`` is the
            official NB201 index and, without ``archs``, the table's architectures are scored; without it,
            ``index`` is the enumeration index (``space.index``). Rows always come in increasing index.
        limit (int, optional): score only the first ``limit`` architectures of that order (quick runs).
        out (path, optional): the CSV to write or resume (and ``<out>.meta.json`` beside it). ``{shard}`` and
            ``{num_shards}`` in the path are replaced by i and n (needed with ``shard="env"`` and n > 1). Without
            ``out`` nothing is written and the table is only returned.
        shard ((i, n) | "i/n" | "env"): score only the chunks whose position c (0, 1, ... in index order) has
            c % n == i. "env" reads RANK and WORLD_SIZE (torchrun), and maps device "cuda" to
            ``cuda:$LOCAL_RANK``.
        archs_per_chunk (int): architectures per chunk (each proxy call, each write).
        supernet (nn.Module, optional): a supernet of ``space`` whose weights to score with (its device is used)
            instead of building :func:`scoring_supernet` with ``init`` and ``seed``. Its parameters and buffers
            are left unchanged.
        init (str), seed (int): the initialisation of the supernet that is built ("pytorch" or "kaiming_normal").
        **options: options of the space's network (its SupernetSpec's NetworkOptions, e.g. NB201's ``channels``
            and ``cells_per_stage``, default the benchmark's 16 and 5: a teacher for a smaller training network,
            such as the digits mini-benchmark's C=8, N=1, is scored on that network); see
            :func:`~rdnas.proxies.scoring_supernet`.
        device: where the supernet and the minibatch live ("cpu", "cuda", ...).
        metadata (bool): write ``<out>.meta.json`` and, when resuming, require it to match this run's settings.
        progress (bool): a tqdm bar over this shard's architectures (with ETA; starts at the rows already done).

    Returns:
        ScoreTable: this shard's rows, all of them (read back from ``out`` when given, resumed rows included);
        ``table.info``: ``written`` (rows this call scored), ``already_present``, ``seconds``, ``shard``, ``path``
        and ``settings`` (what ``out.meta.json`` records: proxies, architectures, init, seed, minibatch, supernet).

    Raises:
        ValueError: unknown proxy or space, a data-dependent proxy without a minibatch, a minibatch that does not
            fit the supernet, or an ``out`` written with other settings or columns.
    """
    started = time.perf_counter()
    proxy_list = _proxy_list(proxies)
    names = [p.name for p in proxy_list]
    try:  # any registered space with a registered supernet
        space_object = get_space(space)
        supernet_spec(space_object)
    except ValueError as error:
        raise ValueError(f"{_WHERE}: space: {error}") from None
    if not isinstance(archs_per_chunk, int) or archs_per_chunk < 1:
        raise ValueError(f"{_WHERE}: archs_per_chunk must be a positive integer, got {archs_per_chunk!r}")
    from_env = shard == "env"
    shard_i, shard_n = parse_shard(shard, _WHERE)
    if from_env and str(device) == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    needing_data = [p.name for p in proxy_list if p.needs_data]
    if minibatch is None and needing_data:
        raise ValueError(f"{_WHERE}: proxies {needing_data} use images; pass a minibatch "
                         "(rdnas.proxies.load_minibatch, or --data on the command line)")
    if minibatch is not None and not isinstance(minibatch, Minibatch):
        raise TypeError(f"{_WHERE}: minibatch must be a rdnas.proxies.Minibatch, got {type(minibatch).__name__}")

    entries, order = _ordered_archs(space_object, archs, gt, limit)
    arch_strings = [space_object.to_string(a) for _, a in entries]
    arch_digest = hashlib.sha256("".join(f"{i},{s}\n" for (i, _), s in zip(entries, arch_strings)).encode())

    if supernet is None:
        classes = minibatch.num_classes if minibatch is not None else 10
        in_channels = minibatch.inputs.shape[1] if minibatch is not None else 3
        try:
            supernet = scoring_supernet(num_classes=classes, in_channels=in_channels, init=init, seed=seed,
                                        device=device, space=space, **options)
        except ValueError as error:
            raise ValueError(f"{_WHERE}: {error}") from None
        init_name, seed_used = init, seed
    else:
        if getattr(supernet, "space", None) is not space_object:
            raise TypeError(f"{_WHERE}: supernet must be a supernet of the {space} space, got "
                            f"{type(supernet).__name__}")
        given = sorted(options)
        if given:
            raise ValueError(f"{_WHERE}: {', '.join(given)} build the supernet; a given supernet takes none")
        init_name, seed_used = "given", None
        device = next(supernet.parameters()).device
    if minibatch is not None:
        config = supernet.config
        if (minibatch.num_classes, minibatch.inputs.shape[1]) != (config["num_classes"], config["in_channels"]):
            raise ValueError(f"{_WHERE}: the minibatch has {minibatch.num_classes} classes and "
                             f"{minibatch.inputs.shape[1]} channels but the supernet has {config['num_classes']} "
                             f"classes and {config['in_channels']} input channels")
    settings = {  # in the order a mismatch is reported
        "proxies": names,
        "space": space,
        "order": order,
        "archs": {"count": len(entries), "sha256": arch_digest.hexdigest()},
        "init": init_name,
        "seed": seed_used,
        "minibatch": None if minibatch is None else {
            "source": minibatch.source, "shape": list(minibatch.inputs.shape), "num_classes": minibatch.num_classes,
            "sha256": _digest_tensors([("inputs", minibatch.inputs), ("targets", minibatch.targets)])},
        "supernet": {"config": dict(supernet.config), "weights_sha256": _digest_tensors(supernet.state_dict().items())},
        "archs_per_chunk": archs_per_chunk,
        "shard": [shard_i, shard_n],
        "device": torch.device(device).type,
        "rdnas_version": _rdnas_version(),
        "format": FORMAT_VERSION,
    }
    if minibatch is not None:
        minibatch = minibatch.to(device)

    chunks = [list(range(start, min(start + archs_per_chunk, len(entries))))
              for start in range(0, len(entries), archs_per_chunk)]
    mine = [chunk for c, chunk in enumerate(chunks) if c % shard_n == shard_i]
    done: set[int] = set()
    rows_in_memory = []
    path = None
    if out is not None:
        path = Path(str(out).replace("{shard}", str(shard_i)).replace("{num_shards}", str(shard_n)))
        if from_env and shard_n > 1 and str(path) == str(out):
            raise ValueError(f"{_WHERE}: shard='env' with WORLD_SIZE={shard_n}: every rank would write {out}; put "
                             "{shard} in the path, e.g. table.{shard}.csv")
        wanted_indices = {entries[p][0] for chunk in mine for p in chunk}
        done = _open_table(path, names, settings, metadata, wanted_indices)

    from tqdm.auto import tqdm

    total = sum(len(chunk) for chunk in mine)
    written = 0
    bar = tqdm(total=total, initial=len(done), unit="arch", desc=f"scoring {','.join(names)}",
               disable=not progress, dynamic_ncols=True)
    try:
        handle = open(path, "a") if path is not None else None
        try:
            for chunk in mine:
                missing = [p for p in chunk if entries[p][0] not in done]
                if not missing:
                    continue
                scores = _scores_of_chunk(proxy_list, supernet, [entries[p][1] for p in chunk], minibatch)
                lines = []
                for k, p in enumerate(chunk):
                    if entries[p][0] in done:
                        continue
                    values = [scores[n][k] for n in names]
                    if handle is None:
                        rows_in_memory.append((entries[p][0], arch_strings[p], values))
                    lines.append(_row_line(entries[p][0], arch_strings[p], values))
                if handle is not None:
                    handle.write("".join(lines))
                    handle.flush()
                    os.fsync(handle.fileno())
                written += len(missing)
                bar.update(len(missing))
        finally:
            if handle is not None:
                handle.close()
    finally:
        bar.close()
        clear_plan_caches()  # the per-plan scores hold this run's supernet and minibatch alive
    info = {"path": None if path is None else str(path), "written": written, "already_present": len(done),
            "seconds": time.perf_counter() - started, "shard": (shard_i, shard_n), "settings": settings}
    if path is not None:
        table = ScoreTable.read(path)
        table.info.update(info)
        return table
    return ScoreTable([r[0] for r in rows_in_memory], [r[1] for r in rows_in_memory],
                      {n: [r[2][k] for r in rows_in_memory] for k, n in enumerate(names)}, info)


def _rdnas_version() -> str:
    import rdnas

    return rdnas.__version__


def _open_table(path: Path, names: list[str], settings: dict, metadata: bool, wanted_indices: set) -> set[int]:
    """Prepares ``path`` for appending and returns the indices it already holds: a new table gets its sidecar and
    header; an existing one is checked against the settings and header, and an incomplete last line (a run
    killed mid-write) is cut off."""
    sidecar = meta_path(path)
    prepare_output_file(path, f"{_WHERE}: out")
    header, rows, end, partial = _scan(path) if path.is_file() else (None, [], 0, False)
    if header is None:  # no file, or killed before its header line was complete: start afresh
        if metadata:
            write_text_atomic(sidecar, json.dumps({"settings": settings, "info": {
                "torch_version": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}, indent=2) + "\n")
        with open(path, "w") as handle:
            handle.write(_header_line(names))
            handle.flush()
            os.fsync(handle.fileno())
        return set()
    if metadata:
        if not sidecar.is_file():
            raise ValueError(f"{_WHERE}: {path} exists but its metadata {sidecar} does not, so the settings it was "
                             "written with cannot be checked; pass a new --out (or metadata=False to skip the check)")
        recorded = _recorded_settings(sidecar, _WHERE)
        difference = _first_difference(recorded, settings)
        if difference is not None:
            key, old, new = difference
            raise ValueError(f"{_WHERE}: {path} was written with {key}={_compact(old)}; this run has "
                             f"{key}={_compact(new)}; pass a new --out or the same settings")
    if header[2:] != names:
        raise ValueError(f"{_WHERE}: {path} has columns {header[2:]} but this run asks for {names}; pass a new "
                         "--out or the same settings")
    done = set()
    for number, fields in rows:
        index = _parse_row(path, number, fields)[0]
        if index in done:
            raise ValueError(f"{_WHERE}: {path}:{number}: index {index} appears twice")
        if index not in wanted_indices:
            raise ValueError(f"{_WHERE}: {path}:{number}: index {index} is not one this run scores; pass a new "
                             "--out or the same settings")
        done.add(index)
    if partial:
        with open(path, "r+b") as handle:
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())
    return done



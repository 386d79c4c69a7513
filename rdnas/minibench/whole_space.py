"""A mini-benchmark over a whole enumerable space: one trained representative per class of equivalent
architectures (``space.key``), spread to every architecture of the space.

``rdnas bench build --archs-file`` trains one representative of each class (NB201: each isomorphism class of a
connected cell, 6,461 of them); :func:`whole_space_table` gives every one of the space's architectures (NB201:
15,625 strings) the row of its class, so a table reader finds any architecture by its own string. Architectures
that compute nothing (``space.is_trivial``; NB201: the cells with no path from input to output) are not trained:
their row holds chance accuracy (100 / classes) and the loss of a uniform prediction (ln classes), with
``seeds`` 0 and ``trained`` 0, and the table says so in those columns.
"""

import csv
import math

import torch

from rdnas.atomic_file import atomic_open
from rdnas.spaces import get_space


def whole_space_table(table: dict, space="nb201", num_classes: int = 10, allow_missing: bool = False) -> dict:
    """Spreads a benchmark table of class representatives over the whole space.

    Args:
        table: :func:`rdnas.minibench.benchmark_table` output ({key: {"arch_str", "valid_acc", "valid_loss",
            "valid_acc_std", "seeds"}}) whose architectures are representatives of distinct classes.
        space: an enumerable registered space (or its name).
        num_classes: the dataset's classes (the chance level of architectures that compute nothing).
        allow_missing: leave out the architectures whose class has no row yet (a partial build) instead of
            raising.

    Returns:
        {enumeration index: {"arch_str", "valid_acc", "valid_loss", "valid_acc_std", "seeds", "trained"}} for every
        architecture of the space (``trained`` 1 where the class was trained, 0 for the
        trivial architectures at chance).

    Raises:
        ValueError: the space is not enumerable, two rows of ``table`` belong to one class, or (without
            ``allow_missing``) a class of a non-trivial architecture has no row.
    """
    space = get_space(space)
    if not space.enumerable:
        raise ValueError(f"rdnas.minibench.whole_space_table: the {space.name} space cannot be enumerated")
    by_class = {}
    for row in table.values():
        key = space.key(space.from_string(row["arch_str"]))
        if key in by_class:
            raise ValueError(f"rdnas.minibench.whole_space_table: {row['arch_str']} and "
                             f"{by_class[key]['arch_str']} compute the same network (class {key}); a whole-space "
                             "table has one trained representative per class")
        by_class[key] = row
    archs = space.enumerate()
    trivial = space.is_trivial(archs) if hasattr(space, "is_trivial") else torch.zeros(len(archs), dtype=torch.bool)
    chance = {"valid_acc": 100.0 / num_classes, "valid_loss": math.log(num_classes), "valid_acc_std": 0.0,
              "seeds": 0, "trained": 0}
    rows, missing = {}, []
    for index, (arch, is_trivial) in enumerate(zip(archs, trivial.tolist())):
        text = space.to_string(arch)
        if is_trivial:
            rows[index] = {"arch_str": text, **chance}
            continue
        source = by_class.get(space.key(arch))
        if source is None:
            missing.append(text)
            continue
        rows[index] = {"arch_str": text, "valid_acc": source["valid_acc"], "valid_loss": source["valid_loss"],
                       "valid_acc_std": source["valid_acc_std"], "seeds": source["seeds"], "trained": 1}
    if missing and not allow_missing:
        raise ValueError(f"rdnas.minibench.whole_space_table: {len(missing)} architectures have no trained "
                         f"representative of their class, e.g. {missing[0]} (a partial build: allow_missing=True)")
    return rows


def write_whole_space_table(path, rows: dict, dataset: str = "digits") -> None:
    """Writes :func:`whole_space_table` rows in NB201's ground-truth format (``index``: rdnas's enumeration index,
    ``arch_str``, ``{dataset}_valid_acc`` %, ``{dataset}_valid_loss``, ``{dataset}_valid_acc_std``, ``seeds``,
    ``trained``: 1 where the row holds the runs of the architecture's class, 0 for a trivial one at chance; the
    class's representative is the build's, found by ``space.key``). Written atomically."""
    with atomic_open(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "arch_str", f"{dataset}_valid_acc", f"{dataset}_valid_loss",
                         f"{dataset}_valid_acc_std", "seeds", "trained"])
        for index, row in sorted(rows.items()):
            writer.writerow([index, row["arch_str"], f"{row['valid_acc']:.4f}", f"{row['valid_loss']:.6f}",
                             f"{row['valid_acc_std']:.4f}", row["seeds"], row["trained"]])

"""Checks rdnas's zero-cost proxies against the published NB201 tables (../shared/data, see its README).

Four steps, the scoring ones resumable (the score tables are written incrementally by ``score_space``)::

    # 1. the whole space (15,625 cells) for the proxies published over it
    OMP_NUM_THREADS=1 python benchmarks/validate_proxies.py score-full --proxies synflow,logsynflow,params,flops,l2_norm
    OMP_NUM_THREADS=1 python benchmarks/validate_proxies.py score-full --proxies naswot --out benchmarks/results/nb201_naswot_cifar10.csv
    # ... and for every other proxy's whole-space Kendall tau (one table per family; hours on one CPU core each)
    OMP_NUM_THREADS=1 python benchmarks/validate_proxies.py score-full --proxies snip,grad_norm,plain,fisher --out benchmarks/results/nb201_loss_gradient_cifar10.csv
    OMP_NUM_THREADS=1 python benchmarks/validate_proxies.py score-full --proxies jacov --out benchmarks/results/nb201_jacov_cifar10.csv
    OMP_NUM_THREADS=1 python benchmarks/validate_proxies.py score-full --proxies zen --out benchmarks/results/nb201_zen_cifar10.csv
    OMP_NUM_THREADS=1 python benchmarks/validate_proxies.py score-full --proxies grasp --out benchmarks/results/nb201_grasp_cifar10.csv
    # ... and the loss-gradient proxies under PyTorch's init, NASLib's protocol (their tau depends on the init)
    OMP_NUM_THREADS=1 python benchmarks/validate_proxies.py score-full --init pytorch --proxies snip,grad_norm,plain,fisher --out benchmarks/results/nb201_loss_gradient_pytorch_init_cifar10.csv
    # 2. the NAS-Bench-Suite-Zero subset (724 CIFAR-10 cells) for every proxy
    OMP_NUM_THREADS=1 python benchmarks/validate_proxies.py score-suite-zero
    # quick checks on a seeded sample
    OMP_NUM_THREADS=2 python benchmarks/validate_proxies.py sample --proxies zen --cells 160
    # 3. our own run-to-run rank correlation (seed and minibatch changed) -> proxy_run_to_run.json
    OMP_NUM_THREADS=1 python benchmarks/validate_proxies.py run-to-run --cells 48
    #    plain under the public per-network protocol (see plain_protocol) -> plain_protocol.json
    OMP_NUM_THREADS=1 python benchmarks/validate_proxies.py plain-protocol --cells 200
    # 4. rank correlations -> benchmarks/results/proxy_validation.json and a Markdown table on stdout
    python benchmarks/validate_proxies.py report

Protocol: CIFAR-10 minibatch 0 of the 64-image batches in cifar_minibatches (real training images), the scoring
supernet at C=16, N=5, seed 0, initialised as the table we compare with was: Kaiming-normal for the whole space
(FreeREA's, behind nb201_zc_proxies.csv), PyTorch's default for the Suite-Zero subset (NASLib's). On 48 subset
cells grad_norm agrees with Suite-Zero at rho 0.98 under PyTorch's init and 0.92 under Kaiming-normal.
Comparisons are rank correlations (Spearman rho) over the architectures both tables score; architectures that are
non-finite in either (disconnected: ours -inf; published 0 / -1e8 / -inf / NaN) are ranked last, as the benchmark's
10 % accuracy deserves. Kendall tau against ``cifar10_valid_acc`` drops non-finite values, as the data README does.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
# Whole-space tables (Kaiming-normal init): score-full's default output first, then one per slower proxy family.
FULL_TABLES = [RESULTS / "nb201_proxies_cifar10.csv", RESULTS / "nb201_naswot_cifar10.csv",
               RESULTS / "nb201_loss_gradient_cifar10.csv", RESULTS / "nb201_jacov_cifar10.csv",
               RESULTS / "nb201_zen_cifar10.csv", RESULTS / "nb201_grasp_cifar10.csv"]
# Whole-space tables under PyTorch's default init (NASLib's protocol) for the init-dependent loss-gradient proxies.
PYTORCH_INIT_TABLES = [RESULTS / "nb201_loss_gradient_pytorch_init_cifar10.csv",
                       RESULTS / "nb201_grasp_pytorch_init_cifar10.csv"]
SUITE_ZERO_TABLE = RESULTS / "suite_zero_proxies_cifar10.csv"
ALL_PROXIES = "synflow,logsynflow,snip,grasp,fisher,grad_norm,jacov,naswot,zen,l2_norm,plain,flops,params"
# our proxy -> (published column in nb201_zc_proxies.csv, in the suite-zero subset)
PUBLISHED = {
    "synflow": ("synflow_cifar10", "synflow"), "logsynflow": ("logsynflow_cifar10", None),
    "naswot": ("naswot_cifar10", "nwot"), "zen": ("zen_cifar10", None), "jacov": ("jacov_nwotv1_cifar10", "jacov"),
    "snip": (None, "snip"), "grasp": (None, "grasp"), "fisher": (None, "fisher"), "grad_norm": (None, "grad_norm"),
    "l2_norm": (None, "l2_norm"), "plain": (None, "plain"), "flops": ("flops_M_cifar10", "flops_naslib"),
    "params": ("params_M_cifar10", "params"),
}
# Kendall tau with cifar10_valid_acc over all 15,625 cells, from ../shared/data/README.md section 2.
PUBLISHED_TAU = {"synflow": 0.532, "logsynflow": 0.579, "naswot": 0.577, "zen": 0.274, "jacov": 0.569,
                 "params": 0.534, "flops": 0.534}


def read_rows(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def minibatch(batch_index=0):
    from rdnas.proxies import load_minibatch

    return load_minibatch(f"npz:{DATA / 'cifar_minibatches' / 'freerea_cifar10_train_minibatches.npz'}", 64,
                          batch_index=batch_index)


def score(proxies: str, out: Path, archs=None, init="kaiming_normal", seed=0, batch_index=0) -> None:
    from rdnas.proxies import score_space

    score_space(proxies, minibatch(batch_index), archs=archs, gt=DATA / "nb201_gt.csv", out=out, init=init,
                seed=seed, archs_per_chunk=32)


def suite_zero_cifar10() -> list[dict]:
    return [r for r in read_rows(DATA / "nb201_zc_suite_zero_subset.csv") if r["dataset"] == "cifar10"]


def ranked_last(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, -1e300)


def published_values(column: str, rows: list[dict]) -> np.ndarray:
    values = np.array([float(r[column]) if r[column] != "" else np.nan for r in rows])  # jacov: empty = NaN
    if column.startswith("zen"):
        values[values <= -1e7] = -np.inf  # the failure sentinel
    if column.startswith("synflow") or column.startswith("logsynflow"):
        values[values == 0] = -np.inf  # 0 = no input-output path
    return values


def ours_by_index(tables: list[Path]) -> dict[str, dict[int, float]]:
    columns: dict[str, dict[int, float]] = {}
    for path in tables:
        if not path.exists():
            continue
        for row in read_rows(path):
            for name, value in row.items():
                if name not in ("index", "arch"):
                    columns.setdefault(name, {})[int(row["index"])] = float(value)
    return columns


def report() -> dict:
    gt_rows = read_rows(DATA / "nb201_gt.csv")
    accuracy = {int(r["index"]): float(r["cifar10_valid_acc"]) for r in gt_rows}
    gt_by_index = {int(r["index"]): r for r in gt_rows}
    zc_by_index = {int(r["index"]): r for r in read_rows(DATA / "nb201_zc_proxies.csv")}
    full = ours_by_index(FULL_TABLES)
    pytorch_init = ours_by_index(PYTORCH_INIT_TABLES)
    subset = ours_by_index([SUITE_ZERO_TABLE])
    suite_rows = {int(r["index"]): r for r in suite_zero_cifar10()}
    results = {}
    for name, (full_column, suite_column) in PUBLISHED.items():
        entry = {}
        if name in full and full_column:
            indices = sorted(full[name])
            ours = np.array([full[name][i] for i in indices])
            source = gt_by_index if full_column.endswith("_M_cifar10") else zc_by_index
            theirs = published_values(full_column, [source[i] for i in indices])
            entry["full_space"] = {"archs": len(indices),
                                   "spearman_vs_published": float(spearmanr(ranked_last(ours), ranked_last(theirs))[0])}
        for key, tables in (("kendall_tau_cifar10_valid", full),
                            ("kendall_tau_cifar10_valid_pytorch_init", pytorch_init)):
            if name in tables and len(tables[name]) >= 1000:  # a partial table: its first rows in index order
                indices = sorted(tables[name])
                ours = np.array([tables[name][i] for i in indices])
                acc = np.array([accuracy[i] for i in indices])
                keep = np.isfinite(ours)
                entry[key] = {"archs": int(keep.sum()), "scored": len(indices),
                              "tau": float(kendalltau(ours[keep], acc[keep])[0]),
                              "published_tau": PUBLISHED_TAU.get(name)}
        if name in subset and suite_column:
            indices = sorted(i for i in subset[name] if i in suite_rows)
            ours = np.array([subset[name][i] for i in indices])
            theirs = np.array([float(suite_rows[i][suite_column]) for i in indices])
            acc = np.array([accuracy[i] for i in indices])
            keep = np.isfinite(ours)
            entry["suite_zero_subset"] = {
                "archs": len(indices), "column": suite_column,
                "spearman_vs_published": float(spearmanr(ranked_last(ours), ranked_last(theirs))[0]),
                "kendall_tau_cifar10_valid": float(kendalltau(ours[keep], acc[keep])[0]),
                "published_kendall_tau_cifar10_valid": float(kendalltau(theirs[keep], acc[keep])[0]),
            }
            if name in full and all(i in full[name] for i in indices):  # the same cells, whole-space init
                kaiming = np.array([full[name][i] for i in indices])
                both = np.isfinite(kaiming)
                entry["suite_zero_subset"]["kendall_tau_cifar10_valid_whole_space_table"] = float(
                    kendalltau(kaiming[both], acc[both])[0])
        if entry:
            results[name] = entry
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "proxy_validation.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| proxy | full space: rho vs published (archs) | tau vs cifar10_valid_acc, ours / published (archs) | "
          "the same under PyTorch's init | Suite-Zero subset: rho vs published (archs) | "
          "subset tau, ours / published | subset tau of the whole-space table (Kaiming init) |")
    print("|---|---|---|---|---|---|---|")
    for name, entry in results.items():
        full_text = (f"{entry['full_space']['spearman_vs_published']:.4f} ({entry['full_space']['archs']})"
                     if "full_space" in entry else "–")
        tau_texts = []
        for key in ("kendall_tau_cifar10_valid", "kendall_tau_cifar10_valid_pytorch_init"):
            tau = entry.get(key)
            partial = (f", partial: the first {tau['scored']:,} cells by index"
                       if tau and tau["scored"] < len(accuracy) else "")
            published = tau["published_tau"] if tau and tau["published_tau"] is not None else "–"
            tau_texts.append(f"{tau['tau']:.3f} / {published} ({tau['archs']}{partial})" if tau else "–")
        sub = entry.get("suite_zero_subset")
        sub_text = f"{sub['spearman_vs_published']:.4f} ({sub['archs']})" if sub else "–"
        sub_tau = (f"{sub['kendall_tau_cifar10_valid']:.3f} / {sub['published_kendall_tau_cifar10_valid']:.3f}"
                   if sub else "–")
        same_cells = sub.get("kendall_tau_cifar10_valid_whole_space_table") if sub else None
        same_text = f"{same_cells:.3f}" if same_cells is not None else "–"
        print(f"| {name} | {full_text} | {tau_texts[0]} | {tau_texts[1]} | {sub_text} | {sub_tau} | {same_text} |")
    return results


def sample(proxies: str, cells: int, table: str, init: str) -> dict:
    """Quick agreement check: ``cells`` cells drawn with seed 0 from the whole-space table ("full") or the
    CIFAR-10 Suite-Zero subset ("suite-zero"), scored with a supernet initialised by ``init``; Spearman rho
    against the published column, non-finite values ranked last."""
    from rdnas.proxies import PROXIES, scoring_supernet
    from rdnas.spaces import nb201

    rows = read_rows(DATA / "nb201_zc_proxies.csv") if table == "full" else suite_zero_cifar10()
    rows = [rows[i] for i in np.random.default_rng(0).choice(len(rows), cells, replace=False)]
    archs = [nb201.from_string(r["arch_str"]) for r in rows]
    supernet, batch = scoring_supernet(init=init, seed=0), minibatch()
    results = {}
    for name in proxies.split(","):
        column = PUBLISHED[name][0 if table == "full" else 1]
        if column is None:
            raise SystemExit(f"validate_proxies: no published {name} column in the {table} table")
        ours = PROXIES[name].score(supernet, archs, batch).numpy()
        if column not in rows[0]:  # params / flops of the whole space live in the ground-truth table
            gt = {r["index"]: r for r in read_rows(DATA / "nb201_gt.csv")}
            theirs = published_values(column, [gt[r["index"]] for r in rows])
        else:
            theirs = published_values(column, rows)
        results[name] = float(spearmanr(ranked_last(ours), ranked_last(theirs))[0])
        print(f"{name}: rho {results[name]:.3f} against {column} on {cells} {table} cells (init {init})")
    return results


def run_to_run(proxies: str, cells: int) -> dict:
    """Our own rank correlation between two runs that change both the supernet seed (0 / 1) and the minibatch
    (0 / 1), on ``cells`` Suite-Zero subset cells drawn with seed 1 (PyTorch init, as NASLib's)."""
    from rdnas.proxies import PROXIES, scoring_supernet
    from rdnas.spaces import nb201

    rows = suite_zero_cifar10()
    rows = [rows[i] for i in np.random.default_rng(1).choice(len(rows), cells, replace=False)]
    archs = [nb201.from_string(r["arch_str"]) for r in rows]
    runs = {}
    for seed in (0, 1):
        supernet, batch = scoring_supernet(init="pytorch", seed=seed), minibatch(batch_index=seed)
        for name in proxies.split(","):
            runs[seed, name] = PROXIES[name].score(supernet, archs, batch).numpy()
    results = {}
    for name in proxies.split(","):
        first, second = runs[0, name], runs[1, name]
        both = np.isfinite(first) & np.isfinite(second)
        column = PUBLISHED[name][1]
        theirs = np.array([float(r[column]) for r in rows])
        results[name] = {"cells": cells, "run_to_run_spearman": float(spearmanr(first[both], second[both])[0]),
                         "spearman_vs_published": [float(spearmanr(ranked_last(run), theirs)[0])
                                                   for run in (first, second)]}
        print(f"{name}: run-to-run rho {results[name]['run_to_run_spearman']:.3f}, vs published "
              + " / ".join(f"{v:.3f}" for v in results[name]["spearman_vs_published"]))
    (RESULTS / "proxy_run_to_run.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def plain_protocol(cells: int) -> dict:
    """Why plain misses: with training-mode BN after a convolution, scaling its weights leaves the output unchanged
    (up to BN's eps), so w . dL/dw of those layers is ~1e-5 of snip's scale and plain is the sum over the layers
    without BN after them: the classifier and the two reduction blocks' 1x1 shortcut convolutions. Public code
    builds (so draws) those layers afresh for every cell. This scores ``cells`` Suite-Zero subset cells (seed 1)
    on networks exported from one supernet (PyTorch init, seed 0), (a) with the supernet's shared weights, and
    (b), (c) with the classifier and shortcut convolutions re-drawn per cell under two seed sets, then compares
    ranks: (b) vs (c) is plain's run-to-run rank correlation under the public per-network protocol."""
    import torch
    import torch.nn.functional as F

    from rdnas.proxies import scoring_supernet
    from rdnas.proxies.base import conv_and_linear_layers
    from rdnas.spaces import nb201

    rows = suite_zero_cifar10()
    rows = [rows[i] for i in np.random.default_rng(1).choice(len(rows), cells, replace=False)]
    batch, supernet = minibatch(), scoring_supernet(init="pytorch", seed=0)

    def plain(arch, parts: dict, redraw_seed=None):
        network = supernet.export(arch).train()
        without_bn = [network.classifier] + [layer.downsample[1] for layer in network.layers
                                             if hasattr(layer, "downsample")]
        if redraw_seed is not None:
            torch.manual_seed(redraw_seed)
            for layer in without_bn:
                layer.reset_parameters()
        F.cross_entropy(network(batch.inputs), batch.targets).backward()
        total = 0.0
        with torch.no_grad():
            for layer in conv_and_linear_layers(network):
                if layer.weight.grad is not None:
                    term = float((layer.weight * layer.weight.grad).sum())
                    parts["layers_without_bn" if layer in without_bn else "convs_before_bn"].append(abs(term))
                    total += term
        return total

    archs = [nb201.from_string(r["arch_str"]) for r in rows]
    published = np.array([float(r["plain"]) for r in rows])
    parts = {"layers_without_bn": [], "convs_before_bn": []}
    shared = np.array([plain(a, parts) for a in archs])
    first = np.array([plain(a, parts, 1000 + k) for k, a in enumerate(archs)])
    second = np.array([plain(a, parts, 9000 + k) for k, a in enumerate(archs)])
    results = {
        "cells": cells,
        "median_abs_term": {key: float(np.median(values)) for key, values in parts.items()},
        "shared_vs_published": float(spearmanr(shared, published)[0]),
        "redrawn_vs_published": [float(spearmanr(run, published)[0]) for run in (first, second)],
        "redrawn_run_to_run": float(spearmanr(first, second)[0]),
        "shared_vs_redrawn": [float(spearmanr(shared, run)[0]) for run in (first, second)],
    }
    print(json.dumps(results, indent=2))
    (RESULTS / "plain_protocol.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["score-full", "score-suite-zero", "sample", "run-to-run", "plain-protocol",
                                         "report"])
    parser.add_argument("--table", choices=["full", "suite-zero"], default="full", help="sample: which table")
    parser.add_argument("--init", choices=["pytorch", "kaiming_normal"], default=None,
                        help="the scoring supernet's initialisation (default: kaiming_normal for score-full and "
                             "sample, as FreeREA's whole-space table; pytorch for score-suite-zero, as NASLib's)")
    parser.add_argument("--cells", type=int, default=48,
                        help="sample, run-to-run, plain-protocol: how many cells (default 48)")
    parser.add_argument("--proxies", default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0, help="score-suite-zero: supernet seed (default 0)")
    parser.add_argument("--batch-index", type=int, default=0, help="score-suite-zero: minibatch (default 0)")
    args = parser.parse_args(argv)
    if not DATA.exists():
        print(f"validate_proxies: the reference tables are not at {DATA}", file=sys.stderr)
        return 2
    if args.step == "score-full":
        score(args.proxies or "synflow,logsynflow,params,flops,l2_norm", args.out or FULL_TABLES[0],
              init=args.init or "kaiming_normal")
    elif args.step == "score-suite-zero":
        score(args.proxies or ALL_PROXIES, args.out or SUITE_ZERO_TABLE,
              archs=[r["arch_str"] for r in suite_zero_cifar10()], init=args.init or "pytorch", seed=args.seed,
              batch_index=args.batch_index)
    elif args.step == "sample":
        sample(args.proxies or "zen", args.cells, args.table, args.init or "kaiming_normal")
    elif args.step == "run-to-run":
        run_to_run(args.proxies or "snip,grad_norm,fisher,jacov,grasp,plain", args.cells)
    elif args.step == "plain-protocol":
        plain_protocol(args.cells)
    else:
        report()
    return 0


if __name__ == "__main__":
    sys.exit(main())

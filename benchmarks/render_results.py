"""Renders pytest-benchmark JSON files (saved with --benchmark-json) as Markdown: one table per benchmark group.

    python benchmarks/render_results.py benchmarks/results/bench_cpu.json [more.json ...] [-o RESULTS.md]

Each file gets a header (machine, torch / CUDA versions, date, the command that produced it) and, per group, a
table: implementation, median and IQR (ms), rounds x iterations, the speed-up over each baseline of the group
(baseline median / this median; rows marked role="baseline" in extra_info are the baselines), the peak extra
memory, and the achieved bandwidth (``GBps``) or architectures per second (``archs_per_s``) where the benchmark
recorded one. Where every row of a group records a
``whole_space_scale`` (a sample timed, the whole run projected as median x scale), the table adds the sample and
the projection, and the speed-ups compare projections. Works on any pytest-benchmark JSON; the rdnas
fields (extra_info label / role / peak_mem_bytes, machine_info rdnas_environment, rdnas_command) are optional.
"""

import argparse
import json
import re
import sys
from pathlib import Path


def natural_key(text: str):
    """'pairwise-cpu-N1024' sorts after 'pairwise-cpu-N256'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def format_ms(seconds) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3g}"


def format_minutes(seconds) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def format_bytes(count) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def machine_lines(data: dict) -> list[str]:
    machine = data.get("machine_info", {})
    env = machine.get("rdnas_environment", {})
    cpu = env.get("cpu_model") or machine.get("cpu", {}).get("brand_raw") or machine.get("processor") or "?"
    cores = env.get("cpu_cores")
    logical = env.get("cpu_logical") or machine.get("cpu", {}).get("count")
    usable = env.get("cpu_usable")
    counts = f"{cores if cores else '?'} cores / {logical if logical else '?'} threads"
    if usable and logical and usable != logical:
        counts += f", {usable} usable"
    benchmarks = data.get("benchmarks", [])
    gpus = sorted({b["extra_info"]["gpu"] for b in benchmarks if b.get("extra_info", {}).get("gpu")})
    gpu = ", ".join(gpus) or env.get("gpu") or "none used"
    threads = sorted({b["extra_info"]["num_threads"] for b in benchmarks if "num_threads" in b.get("extra_info", {})})
    torch_version = env.get("torch") or next((b["extra_info"].get("torch") for b in benchmarks), None) or "?"
    lines = [
        f"- Machine: {cpu} ({counts}); GPU: {gpu}; {machine.get('system', '')} {machine.get('release', '')}".rstrip(),
        f"- torch {torch_version}, CUDA {env.get('cuda') or 'none'}, torch threads "
        f"{', '.join(map(str, threads)) or env.get('num_threads', '?')}, Python {machine.get('python_version', '?')}",
        f"- Date: {data.get('datetime', '?')}",
    ]
    commit = data.get("commit_info", {})
    if commit.get("id"):
        lines.append(f"- Commit: {commit['id'][:12]}{' (with uncommitted changes)' if commit.get('dirty') else ''}")
    shares = [(b["extra_info"]["other_processes_cpu"], b.get("group") or b.get("name", "?"))
              for b in benchmarks if b.get("extra_info", {}).get("other_processes_cpu") is not None]
    if shares:
        mean_share = sum(share for share, _ in shares) / len(shares)
        worst, where = max(shares)
        lines.append(f"- CPU used by other processes while timing: {100 * mean_share:.0f}% of the machine on average, "
                     f"at most {100 * worst:.0f}% (in {where}); timings are only comparable when this stays near 0")
    if data.get("rdnas_command"):
        where = f" (in `{data['rdnas_cwd']}`)" if data.get("rdnas_cwd") else ""
        lines.append(f"- Command{where}: `{data['rdnas_command']}`")
    return lines


def group_table(name: str, rows: list[dict]) -> list[str]:
    def info(b):
        return b.get("extra_info", {})

    def label(b):
        return info(b).get("label") or b.get("name", "?")

    def median(b):
        return (b.get("stats") or {}).get("median")

    projected = bool(rows) and all("whole_space_scale" in info(b) for b in rows)

    def cost(b):  # what the speed-ups compare: the median, or the whole-space projection
        return median(b) * info(b)["whole_space_scale"] if projected and median(b) else median(b)

    rows = sorted(rows, key=lambda b: (info(b).get("role") == "baseline", cost(b) or float("inf")))
    baselines = sorted((b for b in rows if info(b).get("role") == "baseline" and median(b)), key=label)
    bandwidth = any("GBps" in info(b) for b in rows)
    throughput = any("archs_per_s" in info(b) for b in rows)
    header = ["implementation", "median (ms)", "IQR (ms)", "rounds"]
    if projected:
        header += ["sample", "whole space"]
    header += [f"speed-up vs {label(b)}" for b in baselines]
    header += ["peak extra memory"]
    if throughput:
        header += ["archs/s"]
    if bandwidth:
        header += ["GB/s", "of copy"]
    lines = [f"### {name}", "", "| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for b in rows:
        stats = b.get("stats") or {}
        rounds = stats.get("rounds")
        iterations = stats.get("iterations", 1)
        cells = [
            f"**{label(b)}**" if info(b).get("role") == "candidate" else label(b),
            format_ms(median(b)),
            format_ms(stats.get("iqr")),
            "-" if rounds is None else (f"{rounds}" if iterations == 1 else f"{rounds} x {iterations}"),
        ]
        if projected:
            cells += [str(info(b).get("sample", "-")), format_minutes(cost(b))]
        for base in baselines:
            cells.append(f"{cost(base) / cost(b):.2f}x" if median(b) else "-")
        cells.append(format_bytes(info(b).get("peak_mem_bytes")))
        if throughput:
            cells.append(f"{info(b)['archs_per_s']:.1f}" if "archs_per_s" in info(b) else "-")
        if bandwidth:
            cells.append(f"{info(b)['GBps']:.1f}" if "GBps" in info(b) else "-")
            cells.append(f"{info(b)['of_copy']:.2f}" if "of_copy" in info(b) else "-")
        lines.append("| " + " | ".join(cells) + " |")
    notes = sorted({info(b)["note"] for b in rows if info(b).get("note")})
    lines += [""] + [f"Note: {note}." for note in notes] + ([""] if notes else [])
    return lines


def render(path: Path) -> str:
    data = json.loads(path.read_text())
    lines = [f"## {path.name}", ""] + machine_lines(data) + [""]
    groups: dict[str, list[dict]] = {}
    for bench in data.get("benchmarks", []):
        groups.setdefault(bench.get("group") or bench.get("name", "?"), []).append(bench)
    for name in sorted(groups, key=natural_key):
        lines += group_table(name, groups[name])
    methods = {}
    for bench in data.get("benchmarks", []):
        extra = bench.get("extra_info", {})
        for key in ("peak_mem_method", "bytes_counted"):
            if key in extra:
                methods.setdefault((key, extra.get("device", "?")), extra[key])
    for (key, device), text in sorted(methods.items()):
        what = "Peak extra memory" if key == "peak_mem_method" else "Bytes counted for GB/s"
        lines.append(f"- {what} ({device}): {text}.")
    if any(key == "bytes_counted" for key, _ in methods):
        lines.append("- \"of copy\": GB/s divided by that of a 256 MiB `tensor.copy_` on the same device (read + write); "
                     "on a CPU the benchmark's 12-40 MiB may sit partly in cache, so values above 1 are possible.")
    lines.append("- Speed-up: the baseline's median divided by this row's median (above 1: this row is faster); in a "
                 "group with a whole-space projection, the baseline's projection divided by this row's.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_files", nargs="+", type=Path, help="files written by pytest --benchmark-json")
    parser.add_argument("-o", "--output", type=Path, help="write the Markdown here instead of stdout")
    args = parser.parse_args(argv)
    text = "\n".join(render(path) for path in args.json_files)
    if args.output:
        sources = " ".join(str(path) for path in args.json_files)
        text = (f"# rdnas benchmark results\n\nRendered from saved pytest-benchmark runs by "
                f"`python benchmarks/render_results.py {sources} -o {args.output}`; each section names the machine "
                f"and the command that produced its numbers. No GPU figures exist until a GPU machine runs "
                f"`bash benchmarks/gpu_check.sh` (DEVELOPERS.md).\n\n") + text
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared machinery of the rdnas benchmarks (pytest-benchmark).

Run them explicitly; they are outside the default test run (``testpaths = ["tests"]``)::

    PYTHONPATH=. python -m pytest benchmarks/ --benchmark-json=benchmarks/results/bench_cpu.json -q
    PYTHONPATH=. python -m pytest benchmarks/ --benchmark-disable -q     # CI: every benchmark runs once

Each test asks for the ``device_benchmark`` fixture: a :class:`DeviceBenchmark` wrapping pytest-benchmark's
``benchmark`` that synchronises CUDA inside the timed function, measures peak extra memory outside the timed loop,
picks rounds from a time budget, and records the machine in ``extra_info``. Tests that take a ``device`` argument
run once per entry of :data:`DEVICES`.

Environment knobs:
  RDNAS_BENCH_SECONDS     time budget of one benchmark's timed rounds (default 1.0; at least 5 rounds run)
  RDNAS_BENCH_MAX_CALL_S  skip a baseline whose single call takes longer than this (default 5.0)
  RDNAS_BENCH_WHOLE_SPACE=1  bench_proxies: rdnas scores all 15,625 NB201 cells once instead of a sample
  RDNAS_BENCH_KEEP_DATA=1 keep every round's time in the --benchmark-json file (dropped by default: size)
"""

import gc
import math
import os
import shlex
import sys
import time

import pytest
import torch

import rdnas
from rdnas.machine import environment

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and rdnas.built_with_cuda() else [])

BUDGET_S = float(os.environ.get("RDNAS_BENCH_SECONDS", "1.0"))
MAX_CALL_S = float(os.environ.get("RDNAS_BENCH_MAX_CALL_S", "5.0"))
MIN_ROUNDS = 5
MAX_ROUNDS = 2000
MIN_ROUND_S = 2e-4  # calls faster than this are repeated (iterations) inside a round, to stay above timer noise

# Environment variables worth repeating with the command that produced a results file.
_ENV_OF_COMMAND = ("PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")

PEAK_MEM_METHOD = {
    "cuda": "torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus memory_allocated() before "
    "one call (after warm-up); torch's CUDA caching allocator only",
    "cpu": "torch.profiler(profile_memory=True): peak of the running sum of CPU-allocator allocations minus frees "
    "during one call (after warm-up), relative to its start; counts every tensor torch allocates (outputs, "
    "temporaries, autograd buffers), not scratch that native kernels take with malloc / new (rdnas' CPU kernels: O(N) row sums, per-chunk partial "
    "sums)",
}


# ---------------------------------------------------------------------------------------------------------------
# Machine description


def record_environment(benchmark, device: str) -> None:
    """Records the device name, torch / CUDA versions and torch.get_num_threads() in benchmark.extra_info."""
    benchmark.extra_info.update(environment(device))


def command_line() -> str:
    """The command that started this process, with the environment variables that change what it measures."""
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    argv = [os.path.basename(argv[0]), *argv[1:]]
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in _ENV_OF_COMMAND if k in os.environ]
    env += [f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items()) if k.startswith("RDNAS_")]
    return " ".join(env + [shlex.join(argv)])


# ---------------------------------------------------------------------------------------------------------------
# Timing and memory


def synchronized(fn, device: str):
    """fn itself on the CPU; on CUDA, fn followed by torch.cuda.synchronize(), so a timed call includes the work it
    queued."""
    if torch.device(device).type != "cuda":
        return fn

    def call():
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return call


def peak_extra_memory(fn, device: str) -> int | None:
    """Bytes allocated at the peak of one call of fn above what was allocated before it (see PEAK_MEM_METHOD);
    None where this torch's profiler does not expose its memory events."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del out
        return peak
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    try:  # the raw event list: prof.events() attributes most allocations to ops and loses their order
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    except AttributeError:
        return None
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def _cpu_seconds():
    """(CPU-seconds all CPUs spent busy since boot, CPU-seconds of this process), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields[0:3]) + sum(fields[5:7])  # user, nice, system, irq, softirq (not idle, iowait, steal)
    times = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), times.user + times.system


def other_processes_cpu_share(before, after, wall_seconds: float):
    """Share of all CPUs that other processes used between two _cpu_seconds() snapshots (0 = the machine was ours;
    timings on a shared machine drift, multi-threaded ones most: a descheduled OpenMP thread stalls the others)."""
    if before is None or after is None or wall_seconds <= 0:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others / (wall_seconds * (os.cpu_count() or 1)))


def time_one_call(call) -> float:
    start = time.perf_counter()
    call()
    return max(time.perf_counter() - start, 1e-7)


class DeviceBenchmark:
    """pytest-benchmark's fixture for one device: synchronised timing with rounds from a time budget."""

    def __init__(self, benchmark, device: str):
        self.benchmark = benchmark
        self.device = device
        self.extra_info = benchmark.extra_info
        self.max_call_s = MAX_CALL_S
        record_environment(benchmark, device)

    @property
    def disabled(self) -> bool:
        return bool(getattr(self.benchmark, "disabled", False))

    @property
    def group(self):
        return self.benchmark.group

    @group.setter
    def group(self, name: str):
        self.benchmark.group = name

    def record_peak_memory(self, fn) -> None:
        """Runs fn once, outside any timed loop, and records its peak extra memory and the method used."""
        kind = torch.device(self.device).type
        self.extra_info["peak_mem_bytes"] = peak_extra_memory(synchronized(fn, self.device), self.device)
        self.extra_info["peak_mem_method"] = PEAK_MEM_METHOD[kind]

    def __call__(self, fn, warmup: int = 2, rounds: int | None = None):
        """Times fn (synchronised) with pedantic rounds x iterations sized so that the timed part takes about
        RDNAS_BENCH_SECONDS (at least MIN_ROUNDS rounds), after untimed calls: one that measures a call, plus
        `warmup` more when a call is fast (under 0.1 s); a slow call is its own warm-up, so a slow baseline costs
        MIN_ROUNDS + 1 calls. ``rounds`` given: exactly that many timed calls and no untimed one (for runs of
        minutes, where a warm-up call would double the cost and first-call effects vanish). With
        --benchmark-disable, fn runs once. Returns the median in seconds, or None."""
        call = synchronized(fn, self.device)
        if self.disabled:
            self.benchmark.pedantic(call, rounds=1, iterations=1)
            return None
        if rounds is None:
            once = time_one_call(call)
            if once < 0.1:
                for _ in range(warmup):
                    call()
                once = time_one_call(call)
            iterations = max(1, math.ceil(MIN_ROUND_S / once))
            rounds = min(MAX_ROUNDS, max(MIN_ROUNDS, int(BUDGET_S / (once * iterations))))
            warmup_rounds = 1 if once < 0.1 else 0
        else:
            iterations, warmup_rounds = 1, 0
        self.extra_info["rounds_x_iterations"] = f"{rounds} x {iterations}"
        before, start = _cpu_seconds(), time.perf_counter()
        self.benchmark.pedantic(call, rounds=rounds, iterations=iterations, warmup_rounds=warmup_rounds)
        share = other_processes_cpu_share(before, _cpu_seconds(), time.perf_counter() - start)
        if share is not None:
            self.extra_info["other_processes_cpu"] = round(share, 3)
        return self.benchmark.stats.stats.median


@pytest.fixture
def device_benchmark(benchmark, device):
    return DeviceBenchmark(benchmark, device)


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", DEVICES)


def pytest_collect_file(file_path, parent):
    # pytest collects test_*.py; the benchmarks are bench_*.py. Files named on the command line are collected by
    # pytest itself, so only those found by walking a directory are added here.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_configure(config):
    # Raised from inside torch (torch.compile / profiler imports), not by the benchmarks.
    config.addinivalue_line("filterwarnings", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def pytest_report_header(config):
    why = ""
    if "cuda" not in DEVICES:
        why = " (no cuda: " + ("rdnas was built without CUDA" if torch.cuda.is_available() else "no CUDA device") + ")"
    return f"rdnas benchmarks: devices {DEVICES}{why}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["rdnas_environment"] = environment()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["rdnas_command"] = command_line()
    output_json["rdnas_cwd"] = os.getcwd()
    if os.environ.get("RDNAS_BENCH_KEEP_DATA", "0") != "1":
        # Every round's time (up to 2000 per benchmark) would make the saved files megabytes; the statistics stay.
        for bench in output_json.get("benchmarks", []):
            bench.get("stats", {}).pop("data", None)

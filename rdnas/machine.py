"""The machine a number was measured or trained on, for the records that go beside results."""

import os
import platform


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else platform.processor() (or the machine type)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_counts() -> dict:
    """Physical cores (unique (socket, core) pairs of /proc/cpuinfo, None if unknown), logical CPUs, and the CPUs
    this process may run on."""
    physical = set()
    try:
        with open("/proc/cpuinfo") as f:
            socket = core = None
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    socket = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not key:
                    if core is not None:
                        physical.add((socket, core))
                    socket = core = None
            if core is not None:
                physical.add((socket, core))
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {"cpu_cores": len(physical) or None, "cpu_logical": os.cpu_count(), "cpu_usable": usable}


def environment(device: str | None = None) -> dict:
    """What a timing depends on: CPU (and GPU for a CUDA device), torch / CUDA versions, torch's thread count."""
    import torch

    import rdnas

    env = {
        "cpu_model": cpu_model(),
        **cpu_counts(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "num_threads": torch.get_num_threads(),
        "rdnas_built_with_cuda": rdnas.built_with_cuda(),
        "python": platform.python_version(),
    }
    if device is not None:
        env["device"] = torch.device(device).type
        if torch.device(device).type == "cuda":
            env["gpu"] = torch.cuda.get_device_name(device)
            env["device_name"] = env["gpu"]
        else:
            env["device_name"] = env["cpu_model"]
    elif torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env

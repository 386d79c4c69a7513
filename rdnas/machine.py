"""The machine a number was measured or trained on, for the records that go beside results."""

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

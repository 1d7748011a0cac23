"""Facts about the machine a run starts on that change how it should be run.

:func:`shared_cores_warning` notices, at start-up and at no cost, that other work already keeps
most of the CPU cores busy. Two CPU runs on one 2-core machine each start one OpenMP thread per
core; every parallel region then waits for a descheduled thread, and both run 5 to 8 times slower
than one after the other (docs/performance.md). The fix is one thread per free core for each run.
"""

from __future__ import annotations

import os
import sys
import time


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average(samples: int = 3, interval: float = 0.03, path: str = "/proc/loadavg") -> float | None:
    """Threads of other processes running or waiting for a core now; None where unknown.

    On Linux, the runnable count of ``/proc/loadavg`` less this process's own thread, the least of a
    few readings (a short-lived process does not count). The 1-minute load average would still count
    a run that ended seconds ago. Elsewhere, that average is all there is.
    """
    readings = []
    for i in range(samples):
        try:
            with open(path) as fh:
                running = int(fh.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            break
        readings.append(max(0, running - 1))
        if i + 1 < samples:
            time.sleep(interval)
    if readings:
        return float(min(readings))
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return None


def intra_op_threads() -> int:
    """Threads torch will use for one operation: torch's own count once imported, else OMP_NUM_THREADS,
    else one per available core (torch's default)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return available_cores()


def shared_cores_warning(
    load: float | None = None, cores: int | None = None, threads: int | None = None
) -> str | None:
    """One warning line when more cores are busy than free and this run wants more threads than are
    free; ``None`` otherwise. Arguments default to this machine's load average, available cores and
    torch's thread count (pass them to test)."""
    load = load_average() if load is None else load
    if load is None:
        return None
    cores = available_cores() if cores is None else cores
    threads = intra_op_threads() if threads is None else threads
    busy = min(cores, round(load))
    free = cores - busy
    if busy <= free or threads <= max(free, 1):
        return None
    fit = max(free, 1)
    return (
        f"the CPU is shared: about {busy} of {cores} cores were busy before this run started (other "
        f"processes' threads: {load:.0f}) and it will use {threads} threads, so it and the other work will each run "
        f"several times slower; give each run its own cores, e.g. OMP_NUM_THREADS={fit} for this one "
        f"(or torch.set_num_threads({fit}) from Python), or wait for the other work to finish"
    )

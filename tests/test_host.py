"""The shared-cores warning, with injected load numbers."""

from __future__ import annotations

import pytest

from gptkit import host
from gptkit.host import shared_cores_warning


def test_second_run_on_a_busy_two_core_machine_is_warned():
    # another run's two OpenMP threads keep both cores busy; this one would start two more
    line = shared_cores_warning(load=2.1, cores=2, threads=2)
    assert line is not None and "\n" not in line
    assert "about 2 of 2 cores were busy" in line and "threads: 2)" in line and "2 threads" in line
    assert "OMP_NUM_THREADS=1" in line and "torch.set_num_threads(1)" in line


@pytest.mark.parametrize(
    ("load", "cores", "threads"),
    [
        (0.1, 2, 2),  # idle
        (1.0, 2, 2),  # half busy: no more busy cores than free ones
        (2.0, 2, 1),  # busy, but this run already keeps to one thread
        (10.0, 16, 6),  # 10 busy, 6 free, 6 threads: fits
        (0.0, 1, 1),  # one core, nothing else
    ],
)
def test_no_warning_when_the_run_fits(load, cores, threads):
    assert shared_cores_warning(load=load, cores=cores, threads=threads) is None


def test_suggests_the_free_cores_on_a_bigger_machine():
    line = shared_cores_warning(load=10.2, cores=16, threads=16)
    assert "about 10 of 16 cores" in line and "OMP_NUM_THREADS=6" in line
    # a load above the core count counts as all cores busy: still one thread each
    assert "about 4 of 4 cores" in shared_cores_warning(load=7.5, cores=4, threads=4)
    assert "OMP_NUM_THREADS=1" in shared_cores_warning(load=7.5, cores=4, threads=4)


def test_unknown_load_says_nothing(monkeypatch):
    monkeypatch.setattr(host, "load_average", lambda: None)
    assert shared_cores_warning(cores=2, threads=2) is None


def test_defaults_read_this_machine(monkeypatch):
    monkeypatch.setattr(host, "load_average", lambda: 3.0)
    monkeypatch.setattr(host, "available_cores", lambda: 2)
    monkeypatch.setitem(host.sys.modules, "torch", None)  # as before torch is imported
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert shared_cores_warning() is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert "it will use 2 threads" in shared_cores_warning()
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert "it will use 2 threads" in shared_cores_warning()  # torch's default: one per core


def test_busy_threads_are_counted_now_not_averaged(tmp_path):
    """/proc/loadavg's runnable count, less this process, the least of a few readings: a run that ended
    a few seconds ago (still in the 1-minute average) does not count."""
    fake = tmp_path / "loadavg"
    fake.write_text("1.95 1.20 0.70 3/200 4242\n")  # this run and two others' threads
    assert host.load_average(samples=2, interval=0, path=str(fake)) == 2.0
    fake.write_text("1.95 1.20 0.70 1/200 4242\n")  # only this run: the average still says 1.95
    assert host.load_average(samples=2, interval=0, path=str(fake)) == 0.0

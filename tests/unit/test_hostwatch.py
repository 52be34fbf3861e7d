"""The host's view of a guest's vCPU threads: ran, waited for a core, or stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from orchestrator import hostwatch
from orchestrator.hostwatch import Hold, ThreadSample, VcpuWatch

S = 1_000_000_000  # ns


class FakeHost:
    """Threads whose counters the test moves by hand, and a clock to match."""

    def __init__(self) -> None:
        self.now = 0.0
        self.threads: dict[int, ThreadSample] = {
            1: ThreadSample("CPU 0/TCG", 0, 0, "R"),
            2: ThreadSample("CPU 1/TCG", 0, 0, "S"),
        }

    def advance(self, seconds: float, **moves: tuple[float, float, str]) -> None:
        """``cpu0=(ran, waited, state)``: how thread 1 (cpu0) or 2 (cpu1) spent the time."""
        self.now += seconds
        for key, (ran, waited, state) in moves.items():
            tid = {"cpu0": 1, "cpu1": 2}[key]
            old = self.threads[tid]
            self.threads[tid] = ThreadSample(
                old.name, old.ran_ns + int(ran * S), old.waited_ns + int(waited * S), state
            )

    def watch(self) -> VcpuWatch:
        return VcpuWatch(42, read=lambda pid: dict(self.threads), clock=lambda: self.now)


def test_a_vcpu_waiting_for_a_core_for_seconds_is_a_hold() -> None:
    host = FakeHost()
    watch = host.watch()
    watch.step()
    for _ in range(3):  # running: no hold
        host.advance(1, cpu0=(0.9, 0.1, "R"))
        watch.step()
    for _ in range(12):  # runnable, not run
        host.advance(1, cpu0=(0.0, 1.0, "R"))
        watch.step()
    hold = watch.longest()
    assert hold is not None and hold.thread == "CPU 0/TCG"
    assert (hold.start, hold.end, hold.stopped) == (3.0, 15.0, False)  # still going on
    host.advance(1, cpu0=(0.8, 0.2, "R"))
    watch.step()
    assert watch.holds() == [Hold("CPU 0/TCG", 3.0, 15.0, False)]
    assert "did not run vCPU thread 'CPU 0/TCG' for 12.0 s (waiting for a core)" in (
        hold.describe()
    )
    # only stretches that ended at or after `since` count
    assert watch.holds(since=15.5) == []


def test_a_stopped_vcpu_is_a_hold_and_an_idle_one_is_not() -> None:
    host = FakeHost()
    watch = host.watch()
    watch.step()
    for _ in range(30):
        # cpu0 stopped by a signal (no run, no wait); cpu1 idle in the guest (sleeping)
        host.advance(1, cpu0=(0.0, 0.0, "T"), cpu1=(0.0, 0.0, "S"))
        watch.step()
    hold = watch.longest()
    assert hold is not None and hold.stopped and hold.seconds == 30.0
    assert [h.thread for h in watch.holds()] == ["CPU 0/TCG"]


def test_short_waits_and_a_thread_that_ran_some_are_not_holds() -> None:
    host = FakeHost()
    watch = host.watch()
    watch.step()
    for _ in range(20):
        # a busy host: the thread waits most of each second but still runs 20% of it
        host.advance(1, cpu0=(0.2, 0.8, "R"))
        watch.step()
    host.advance(1, cpu0=(0.0, 1.0, "R"))  # one second held: shorter than KEEP_S
    watch.step()
    host.advance(1, cpu0=(1.0, 0.0, "R"))
    watch.step()
    assert watch.longest() is None
    assert hostwatch.KEEP_S > 1.0


def test_a_vanished_process_ends_its_holds() -> None:
    host = FakeHost()
    watch = host.watch()
    watch.step()
    for _ in range(5):
        host.advance(1, cpu0=(0.0, 1.0, "R"))
        watch.step()
    host.threads.clear()  # QEMU exited
    host.advance(1)
    watch.step()
    assert watch.holds() == [Hold("CPU 0/TCG", 0.0, 5.0, False)]


def test_a_real_stopped_process_is_seen_stopped() -> None:
    # the host's real counters: a busy child runs, then SIGSTOP keeps it off the cores
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        watch = VcpuWatch(
            child.pid, interval=0.2, read=lambda pid: hostwatch.read_threads(pid, re.compile("."))
        )
        watch.start()
        time.sleep(1.0)
        running = hostwatch.read_threads(child.pid, re.compile("."))
        assert running and all(t.state in "RS" for t in running.values())
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(3.0)
        os.kill(child.pid, signal.SIGCONT)
        time.sleep(1.0)
        watch.stop()
        hold = watch.longest()
        assert hold is not None and hold.stopped, watch.holds()
        assert 2.0 <= hold.seconds <= 6.0
    finally:
        child.kill()
        child.wait()
    assert hostwatch.read_threads(child.pid) == {}

"""Whether the host runs a guest's vCPUs: the host's own evidence for a guest's RCU stall.

A guest's clock follows the host's, so a host that keeps the vCPU threads off its cores for
longer than RCU's stall timeout (21 s) makes the guest report a stall although the kernel
under test did nothing wrong: two other guests and both cores busy did it here. The guest's
report alone cannot always tell that apart from a CPU the kernel keeps busy, but the host
can: the kernel counts, for every thread, the time it ran and the time it waited for a core
(``/proc/PID/task/TID/schedstat``, Documentation/scheduler/sched-stats.rst), and shows a
stopped thread as ``T``. :class:`VcpuWatch` samples QEMU's vCPU threads once a second and
keeps each stretch in which one of them wanted to run and did not.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SAMPLE_S = 1.0
# a thread held over an interval ran for less than this share of it...
RAN_SHARE = 0.1
# ...while it waited for a core for at least this share, or was stopped at its end
WAITED_SHARE = 0.5
# stretches shorter than this are not kept (a busy host holds threads for a moment)
KEEP_S = 2.0
KEPT = 64
# QEMU names its vCPU threads "CPU <n>/TCG" or "CPU <n>/KVM" with -name ...,debug-threads=on
VCPU_THREAD = re.compile(r"^CPU \d+/")


@dataclass(frozen=True)
class ThreadSample:
    name: str
    ran_ns: int  # time on a core
    waited_ns: int  # time runnable, waiting for a core
    state: str  # R running, S sleeping, T stopped, ... (proc(5))


@dataclass(frozen=True)
class Hold:
    """A stretch of host time in which a vCPU thread wanted to run and did not."""

    thread: str
    start: float  # time.monotonic()
    end: float
    stopped: bool  # the thread was stopped (SIGSTOP), not only waiting for a core

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def describe(self) -> str:
        how = "stopped" if self.stopped else "waiting for a core"
        return f"the host did not run vCPU thread '{self.thread}' for {self.seconds:.1f} s ({how})"


def read_threads(pid: int, name: re.Pattern[str] = VCPU_THREAD) -> dict[int, ThreadSample]:
    """The threads of process ``pid`` whose name matches ``name``; empty once it is gone."""
    found: dict[int, ThreadSample] = {}
    task = Path(f"/proc/{pid}/task")
    try:
        tids = [int(t) for t in (p.name for p in task.iterdir()) if t.isdigit()]
    except OSError:
        return found
    for tid in tids:
        try:
            comm = (task / str(tid) / "comm").read_text().rstrip("\n")
            if not name.search(comm):
                continue
            ran, waited = (task / str(tid) / "schedstat").read_text().split()[:2]
            # the state follows the command name, which is in parentheses and may hold spaces
            state = (task / str(tid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            continue  # the thread ended between the listing and the read
        found[tid] = ThreadSample(comm, int(ran), int(waited), state)
    return found


class VcpuWatch:
    """Samples the vCPU threads of one QEMU process from a daemon thread.

    ``holds(since)`` gives the stretches (longer than :data:`KEEP_S`) in which a vCPU thread
    was held: it ran for less than :data:`RAN_SHARE` of each sampling interval while waiting
    for a core most of it, or while stopped. ``read`` and ``clock`` are for tests.
    """

    def __init__(
        self,
        pid: int,
        *,
        interval: float = SAMPLE_S,
        read: Callable[[int], dict[int, ThreadSample]] = read_threads,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pid = pid
        self.interval = interval
        self._read = read
        self._clock = clock
        self._last: tuple[float, dict[int, ThreadSample]] | None = None
        self._open: dict[int, Hold] = {}  # tid -> the stretch still going on
        self._kept: deque[Hold] = deque(maxlen=KEPT)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.step()
        self._thread = threading.Thread(target=self._follow, name=f"vcpu-watch:{self.pid}")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join(timeout=5)

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            self.step()

    def step(self) -> None:
        """Take one sample and compare it with the one before."""
        now, threads = self._clock(), self._read(self.pid)
        with self._lock:
            if self._last is not None:
                self._compare(self._last, (now, threads))
            self._last = (now, threads)

    def _compare(
        self,
        before: tuple[float, dict[int, ThreadSample]],
        after: tuple[float, dict[int, ThreadSample]],
    ) -> None:
        t0, old = before
        t1, new = after
        span = t1 - t0
        if span <= 0:
            return
        for tid in set(self._open) | set(new):
            a, b = old.get(tid), new.get(tid)
            held = False
            stopped = False
            if a is not None and b is not None:
                ran = (b.ran_ns - a.ran_ns) / 1e9
                waited = (b.waited_ns - a.waited_ns) / 1e9
                stopped = b.state in ("T", "t")
                held = ran < RAN_SHARE * span and (stopped or waited >= WAITED_SHARE * span)
            hold = self._open.get(tid)
            if held and b is not None:
                start = hold.start if hold else t0
                self._open[tid] = Hold(b.name, start, t1, stopped or bool(hold and hold.stopped))
            elif hold is not None:
                del self._open[tid]
                if hold.seconds >= KEEP_S:
                    self._kept.append(hold)

    def holds(self, since: float = float("-inf")) -> list[Hold]:
        """Stretches longer than :data:`KEEP_S` that ended at or after ``since``, the ones still
        going on included; longest first."""
        with self._lock:
            every = [*self._kept, *(h for h in self._open.values() if h.seconds >= KEEP_S)]
        return sorted((h for h in every if h.end >= since), key=lambda h: -h.seconds)

    def longest(self, since: float = float("-inf")) -> Hold | None:
        found = self.holds(since)
        return found[0] if found else None


# --- the host's other load ------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> tuple[int, int, float] | None:
    """(host busy ticks, host total ticks, ticks of ``pid`` and of this process), or None."""
    try:
        with open("/proc/stat") as fh:
            first = fh.readline().split()
        # cpu user nice system idle iowait irq softirq steal (guest time is inside user)
        ticks = [int(x) for x in first[1:9]]
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        child = int(fields[11]) + int(fields[12])  # utime stime (proc(5) fields 14, 15)
    except (OSError, ValueError, IndexError):
        return None
    mine = os.times()
    own = (mine.user + mine.system) * _TICK
    total = sum(ticks)
    return total - ticks[3] - ticks[4], total, child + own


class HostShare:
    """The share of the host's CPU time that went to processes other than one guest's QEMU
    (and korch itself) from construction to :meth:`others`: what a busy host took from the
    measurement. Steal time (a hypervisor under the host) counts as taken."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._start = _cpu_ticks(pid)

    def others(self) -> float | None:
        end = _cpu_ticks(self.pid)
        if self._start is None or end is None:
            return None
        busy, total, ours = (b - a for a, b in zip(self._start, end, strict=True))
        if total <= 0:
            return None
        return min(1.0, max(0.0, (busy - ours) / total))

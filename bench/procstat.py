"""What a process used, read from /proc: CPU time of all its threads, and resident memory."""

from __future__ import annotations

import os

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid` (proc(5) fields 14 and 15), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The name (field 2) may hold spaces and parentheses: split after its last ")".
        after_name = stat.read().rsplit(")", 1)[1].split()
    return (int(after_name[11]) + int(after_name[12])) / TICKS


def rss_bytes(pid: int) -> int:
    """VmRSS of `pid`, in bytes (0 when the kernel does not report it)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def machine_busy_seconds() -> float:
    """CPU time every process on the machine used (all CPUs, /proc/stat), in seconds: the
    load generator subtracts the server's and its own to show what the rest took."""
    with open("/proc/stat", encoding="ascii") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, stat.readline().split()[1:9]
        )
    return (user + nice + system + irq + softirq + steal) / TICKS

"""Server memory and CPU read from /proc, summed over a process and its descendants.

Descendants count because a multi-worker server spreads its work over child processes.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """pid and every live process below it."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{current}/task/{task}/children").read_text()
            except OSError:
                continue
            found.extend(int(child) for child in children.split())
    return found


def rss_kb(pid: int) -> int:
    """Resident set size of one process in KiB, 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process, 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name may hold spaces and parentheses, so split after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent on anything but idling, since boot.

    Compared with what the server and clients used, it shows how much other work shared the
    machine during a measurement, which on a small box skews the numbers.
    """
    try:
        first = Path("/proc/stat").read_text().splitlines()[0]
    except (OSError, IndexError):
        return 0.0
    ticks = [int(value) for value in first.split()[1:]]
    # Field order: user nice system idle iowait irq softirq steal guest guest_nice; guest time
    # is already inside user, so it is left out of the sum.
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / _TICKS_PER_S


def tree_rss_kb(pid: int) -> int:
    return sum(rss_kb(one) for one in descendants(pid))


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(one) for one in descendants(pid))


def raise_fd_limit() -> int:
    """Lift the soft open-file limit to the hard one; children inherit it. Returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def parse_smaps_rollup(text: str) -> dict[str, int]:
    """The fields of /proc/<pid>/smaps_rollup, in KiB, keyed by their names (Rss, Pss, ...)."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            fields[name.strip()] = int(parts[0])
    return fields


def memory_kb(pid: int) -> dict[str, int]:
    """RSS, PSS and USS of one process in KiB ({} when it is gone or the kernel has no
    smaps_rollup). PSS charges each shared page to its sharers in equal parts, USS counts only
    pages no other process maps: what a forked worker really adds is between the two."""
    try:
        fields = parse_smaps_rollup(Path(f"/proc/{pid}/smaps_rollup").read_text())
    except OSError:
        return {}
    if "Pss" not in fields:
        return {}
    return {
        "rss": fields.get("Rss", 0),
        "pss": fields["Pss"],
        "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
    }

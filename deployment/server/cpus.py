"""The cores this process may use: what the server's defaults for workers and threads count."""

import math
import os
from pathlib import Path


def cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (a
    container's --cpus or a Kubernetes CPU limit, which affinity does not show)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cpu_quota()
    return max(1, min(count or 1, math.ceil(quota))) if quota else count or 1


def _cpu_quota() -> float | None:
    """CPUs' worth of time the cgroup may use (quota / period); None when unlimited."""
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        try:  # cgroup v1: quota -1 is unlimited
            quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text().strip()
            period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.isdigit() or not period.isdigit() or not int(period):
        return None
    return int(quota) / int(period)

"""Starting a subprocess-tier worker: scrubbed environment, own session, rlimits, and an
empty network namespace where the kernel allows one."""

from __future__ import annotations

import ctypes
import resource
import subprocess
import sys
from typing import Any

from tether.contract.policy import PluginPolicy, Resolution
from tether.runtime.discovery import Candidate
from tether.runtime.tiers import granted_env

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
PR_SET_PDEATHSIG = 1
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "MALLOC_ARENA_MAX": "2",  # glibc reserves 64 MB of address space per arena otherwise
    "PYTHONDONTWRITEBYTECODE": "1",
}


def worker_env(cand: Candidate, res: Resolution) -> dict[str, str]:
    """The worker's whole environment: a minimal base, plus the variables the manifest
    declares (`env`) when the operator granted `env.inject` — never the host's others."""
    return {**BASE_ENV, **granted_env(cand, res)}


def _limits(res: Resolution, entry: PluginPolicy | None) -> list[tuple[int, int]]:
    limits = [(resource.RLIMIT_AS, res.memory_mb * 1024 * 1024)]
    caps = entry.limits if entry is not None else None
    if caps is not None and caps.cpu_seconds is not None:
        limits.append((resource.RLIMIT_CPU, caps.cpu_seconds))
    if caps is not None and caps.open_files is not None:
        limits.append((resource.RLIMIT_NOFILE, caps.open_files))
    return limits


def _preexec(limits: list[tuple[int, int]]) -> None:  # pragma: no cover - runs in the child
    """In the child, before exec: die with the host, no network, then the rlimits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
        if libc.unshare(CLONE_NEWNET) != 0:  # root: a plain new netns
            libc.unshare(CLONE_NEWUSER | CLONE_NEWNET)  # unprivileged: a user namespace too
    except Exception:  # no libc or no namespaces: the worker reports what is active
        pass
    for which, value in limits:
        _soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value if which != resource.RLIMIT_CPU else hard))


def spawn_worker(
    cand: Candidate, res: Resolution, entry: PluginPolicy | None, fd: int, sync_fd: int
) -> tuple[subprocess.Popen[bytes], set[str]]:
    """Start `python -m tether.worker --fd N`, passing the channel and the synchronous
    socket (its number arrives in the init spec); returns the process and the rlimits set."""
    limits = _limits(res, entry)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether.worker", "--fd", str(fd)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=worker_env(cand, res),
        pass_fds=(fd, sync_fd),
        start_new_session=True,
        preexec_fn=lambda: _preexec(limits),
        cwd=str(cand.folder) if cand.folder is not None else "/",
    )
    names = {resource.RLIMIT_AS: "AS", resource.RLIMIT_CPU: "CPU", resource.RLIMIT_NOFILE: "NOFILE"}
    return proc, {names[which] for which, _ in limits}


def confinement_labels(info: dict[str, Any], wanted: set[str]) -> list[str]:
    """Human-readable confinements the worker reported as active (of the rlimits, only
    those Tether set; the environment is always scrubbed)."""
    out: list[str] = []
    if info.get("own_group"):
        out.append("process-group")
    out.append("scrubbed-env")
    rl = {k: v for k, v in info.get("rlimits", {}).items() if k in wanted}
    if "AS" in rl:
        out.append(f"memory {rl['AS'] // (1024 * 1024)} MB")
    if "CPU" in rl:
        out.append(f"cpu {rl['CPU']} s")
    if "NOFILE" in rl:
        out.append(f"open-files {rl['NOFILE']}")
    if info.get("netns"):
        out.append("no-network")
    return out

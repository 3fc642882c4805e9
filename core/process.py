"""Helpers for the child processes supportbot starts: vLLM, training workers, distributed training ranks."""

import contextlib
import ctypes
import os
import signal
import socket

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` for a child process: if the parent is killed outright, the kernel stops the child too
    instead of leaving an orphan."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def die_with_parent_at_niceness(niceness: int):
    """`preexec_fn` for a background child (training) that must not slow customers: it dies with its parent and
    runs at `niceness`, so the kernel favours the model server's threads on a shared core."""

    def prepare() -> None:
        die_with_parent()
        with contextlib.suppress(OSError):
            os.nice(niceness)

    return prepare


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now, for a server started next (another vLLM during a switch)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]

"""Child processes of `counterpick up`: started in their own session, stopped without leftovers."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the child if `counterpick up` itself is killed (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the normal shutdown path still stops children


@dataclass
class ManagedProcess:
    """One long-running child with its log file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Spawn the child in a new session so terminal signals reach only the supervisor."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only async-signal-safe prctl
            )

    @property
    def pid(self) -> int | None:
        """The child's process id once started."""
        return self.process.pid if self.process else None

    def exit_code(self) -> int | None:
        """None while running, else the exit status."""
        return None if self.process is None else self.process.poll()

    def terminate(self) -> None:
        """Send SIGTERM to the child's whole process group (it may have children of its own)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        """Wait until `deadline` (monotonic), then SIGKILL the group if it is still there."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        # Reap anything the child left in its group (a broker's helper, say).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def note(self, line: str) -> None:
        """Append a supervisor's line to the child's log, so the log tells the whole story."""
        try:
            with self.log_path.open("a") as log:
                log.write(f"--- {line} ---\n")
        except OSError:
            pass  # the report on stderr still says it

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the child's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def stop_all(processes: Sequence[ManagedProcess], grace_seconds: float) -> None:
    """SIGTERM every process, then wait for all of them together within one grace period."""
    for managed in processes:
        managed.terminate()
    deadline = time.monotonic() + grace_seconds
    for managed in processes:
        managed.wait_or_kill(deadline)

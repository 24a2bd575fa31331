"""Keeps the children of `counterpick up` running: a child that dies is restarted after a capped
exponential backoff while the others keep serving, and every exit is reported (stderr, the
child's log, and the state file `counterpick status` reads).

A child that exits CRASH_LOOP_EXITS times within CRASH_LOOP_WINDOW_SECONDS is reported as
crash-looping; `up` keeps restarting it at the capped backoff (whatever made it fail, a store
that is down say, may come back), so the rest of the mesh is never taken down with it.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.cli.mesh_state import ChildState, MeshState, describe_exit
from services.cli.processes import ManagedProcess

BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0
CRASH_LOOP_EXITS = 5
CRASH_LOOP_WINDOW_SECONDS = 60.0


def backoff_seconds(recent_exits: int) -> float:
    """Wait before restart number `recent_exits` of the window: 1, 2, 4, ... capped at 30 s."""
    return float(min(BACKOFF_CAP_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** max(0, recent_exits - 1)))


@dataclass
class _Child:
    process: ManagedProcess
    state: ChildState
    exits: deque[float] = field(default_factory=deque)  # monotonic times within the window
    restart_at: float | None = None
    reported_loop: bool = False


class Supervisor:
    """Watches the children, restarts the dead ones, and keeps the state file current."""

    def __init__(
        self,
        state_dir: Path,
        *,
        report: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._state_dir = state_dir
        self._children: dict[str, _Child] = {}
        self._report = report or (lambda line: print(f"counterpick up: {line}", file=sys.stderr))
        self._clock = clock
        self._mesh = MeshState(supervisor_pid=os.getpid())

    def add(self, process: ManagedProcess, address: str) -> None:
        """Supervise a started child from now on."""
        state = ChildState(
            name=process.name,
            address=address,
            pid=process.pid,
            state="running",
            started_at=time.time(),
        )
        self._children[process.name] = _Child(process, state)
        self._mesh.children[process.name] = state
        self.save()

    @property
    def states(self) -> Mapping[str, ChildState]:
        """The current state of every child, by name."""
        return self._mesh.children

    def check(self) -> None:
        """Record exits, start the restarts that are due; call this a few times a second."""
        now = self._clock()
        changed = False
        for child in self._children.values():
            changed |= self._forget_old_exits(child, now)
            code = child.process.exit_code()
            if child.restart_at is None and code is not None:
                self._exited(child, code, now)
                changed = True
            elif child.restart_at is not None and now >= child.restart_at:
                self._restart(child)
                changed = True
        if changed:
            self.save()

    @staticmethod
    def _forget_old_exits(child: _Child, now: float) -> bool:
        """Drop exits older than the window; a child that has stayed up long enough is no
        longer crash-looping. Whether the state changed."""
        before = (child.state.state, child.state.recent_exits)
        while child.exits and child.exits[0] < now - CRASH_LOOP_WINDOW_SECONDS:
            child.exits.popleft()
        child.state.recent_exits = len(child.exits)
        if (
            child.state.state == "crash-looping"
            and child.restart_at is None
            and len(child.exits) < CRASH_LOOP_EXITS
        ):
            child.state.state = "running"
            child.reported_loop = False
        return before != (child.state.state, child.state.recent_exits)

    def _exited(self, child: _Child, code: int, now: float) -> None:
        state = child.state
        child.exits.append(now)
        state.last_exit_code = code
        state.last_exit_at = time.time()
        state.recent_exits = len(child.exits)
        wait = backoff_seconds(len(child.exits))
        child.restart_at = now + wait
        looping = len(child.exits) >= CRASH_LOOP_EXITS
        state.state = "crash-looping" if looping else "restarting"
        message = (
            f"{state.name} exited with {describe_exit(code)}; restarting in {wait:g}s "
            f"(restart {state.restarts + 1}, log {child.process.log_path})"
        )
        self._report(message)
        child.process.note(f"counterpick up: {message}")
        if looping and not child.reported_loop:
            child.reported_loop = True
            self._report(
                f"{state.name} is crash-looping: {len(child.exits)} exits within "
                f"{CRASH_LOOP_WINDOW_SECONDS:g}s; still retrying every {BACKOFF_CAP_SECONDS:g}s "
                f"at most. Last log lines:\n{child.process.log_tail()}"
            )

    def _restart(self, child: _Child) -> None:
        child.restart_at = None
        # Whatever the dead child left in its process group goes first (it may hold the port).
        child.process.wait_or_kill(time.monotonic())
        child.process.start()
        state = child.state
        state.restarts += 1
        state.pid = child.process.pid
        state.started_at = time.time()
        if state.state != "crash-looping":
            state.state = "running"

    def stopping(self) -> None:
        """No more restarts: the mesh is being stopped."""
        for child in self._children.values():
            child.restart_at = None
            child.state.state = "stopped"
        self._children.clear()
        self.save()

    def save(self) -> None:
        """Write the state file."""
        self._mesh.write(self._state_dir)

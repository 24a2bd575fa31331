"""The state file `counterpick up` keeps in its state directory (`mesh.json`): where each child
listens and how it has been doing (pid, restarts, last exit). `status`, `dlq`, `import` and
`recompute` read it to find the running mesh's services on whatever ports `up` gave them.

Written whole to a temporary file and renamed over the old one, so a reader never sees half.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from services.common.config import DEFAULT_GRPC_PORTS

STATE_FILE = "mesh.json"


@dataclass
class ChildState:
    """One supervised child as the supervisor last saw it."""

    name: str
    address: str
    pid: int | None = None
    state: str = "starting"  # starting | running | restarting | crash-looping | stopped
    started_at: float | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    last_exit_at: float | None = None
    recent_exits: int = 0  # exits within the crash-loop window


@dataclass
class MeshState:
    """The whole file."""

    supervisor_pid: int
    updated_at: float = field(default_factory=time.time)
    children: dict[str, ChildState] = field(default_factory=dict)

    def write(self, state_dir: Path) -> None:
        """Replace the state file atomically."""
        self.updated_at = time.time()
        state_dir.mkdir(parents=True, exist_ok=True)
        target = state_dir / STATE_FILE
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))
        partial.replace(target)

    @staticmethod
    def read(state_dir: Path) -> MeshState | None:
        """The state file of `state_dir`, or None when there is none (or it is unreadable)."""
        try:
            raw: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
            children = {
                name: ChildState(**child) for name, child in raw.get("children", {}).items()
            }
            return MeshState(
                supervisor_pid=int(raw["supervisor_pid"]),
                updated_at=float(raw["updated_at"]),
                children=children,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def supervisor_alive(self) -> bool:
        """Whether the `counterpick up` that wrote the file still runs."""
        try:
            os.kill(self.supervisor_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def describe_child(child: ChildState | None) -> str:
    """What `status` says about a supervised child: its state, restarts and last exit."""
    if child is None:
        return ""
    parts = [child.state]
    if child.restarts or child.last_exit_code is not None:
        parts.append(f"restarts {child.restarts}")
    if child.last_exit_code is not None and child.last_exit_at is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(child.last_exit_at))
        parts.append(f"last exit {describe_exit(child.last_exit_code)} at {when} UTC")
    if child.recent_exits:
        parts.append(f"{child.recent_exits} exit(s) in the last minute")
    return ", ".join(parts)


def describe_exit(code: int) -> str:
    """ "code 70" or "signal SIGKILL" for a Popen return code."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def deployment_for(state_dir: Path) -> str:
    """The DEPLOYMENT (Redis key prefix) of the mesh `counterpick up` runs from `state_dir`:
    DEPLOYMENT when set, else `cp-` and a short hash of the state dir's resolved path, so two
    checkouts (or two state dirs) sharing one Redis never see each other's keys, and every
    command given the same state dir finds the same ones."""
    explicit = os.environ.get("DEPLOYMENT")
    if explicit:
        return explicit
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:10]
    return f"cp-{digest}"


def running_address(state_dir: Path, service: str) -> str | None:
    """Where `service` of a `counterpick up` running in `state_dir` listens, if one runs."""
    state = MeshState.read(state_dir)
    if state is not None and service in state.children and state.supervisor_alive():
        return state.children[service].address
    return None


def etl_address(state_dir: Path, explicit: str | None = None) -> str:
    """The etl service to call: `explicit`, else the running mesh's (state file), else ETL_ADDR
    or the default port."""
    if explicit:
        return explicit
    running = running_address(state_dir, "etl")
    if running is not None:
        return running
    return os.environ.get("ETL_ADDR") or f"127.0.0.1:{DEFAULT_GRPC_PORTS['etl']}"

"""`counterpick up`'s supervisor with real (tiny) child processes and a clock the test moves."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from services.cli.mesh_state import MeshState, describe_child
from services.cli.processes import ManagedProcess, stop_all
from services.cli.supervisor import (
    BACKOFF_CAP_SECONDS,
    CRASH_LOOP_EXITS,
    CRASH_LOOP_WINDOW_SECONDS,
    Supervisor,
    backoff_seconds,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _wait_exit(process: ManagedProcess) -> None:
    deadline = time.monotonic() + 30
    while process.exit_code() is None:
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.02)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_seconds(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff_seconds(50) == BACKOFF_CAP_SECONDS


def test_a_dying_child_is_restarted_with_backoff_and_a_crash_loop_is_reported(
    tmp_path: Path,
) -> None:
    clock = Clock()
    reports: list[str] = []
    supervisor = Supervisor(tmp_path, report=reports.append, clock=clock)
    child = ManagedProcess(
        "flaky", [sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path / "flaky.log"
    )
    child.start()
    supervisor.add(child, "127.0.0.1:1")
    try:
        for attempt in range(1, CRASH_LOOP_EXITS + 2):
            _wait_exit(child)
            supervisor.check()
            state = supervisor.states["flaky"]
            assert state.last_exit_code == 3
            assert state.restarts == attempt - 1
            wait = backoff_seconds(attempt)
            assert f"restarting in {wait:g}s" in reports[-1] or "crash-looping" in reports[-1]
            # Not before the backoff is over...
            clock.now += wait - 0.01
            supervisor.check()
            assert supervisor.states["flaky"].restarts == attempt - 1
            # ...then it runs again.
            clock.now += 0.02
            supervisor.check()
            assert supervisor.states["flaky"].restarts == attempt
        assert state.state == "crash-looping"
        loops = [line for line in reports if "is crash-looping" in line]
        assert len(loops) == 1, reports  # reported once, retried all along
        written = MeshState.read(tmp_path)
        assert written is not None
        assert written.supervisor_alive()
        flaky = written.children["flaky"]
        assert flaky.restarts == CRASH_LOOP_EXITS + 1
        assert flaky.state == "crash-looping"
        assert "last exit code 3" in describe_child(flaky)
        assert "counterpick up: flaky exited with code 3" in (tmp_path / "flaky.log").read_text()
        # Fixed: the next start stays up, and after a quiet minute it is no longer looping.
        _wait_exit(child)
        child.argv = [sys.executable, "-c", "import time; time.sleep(60)"]
        supervisor.check()
        clock.now += BACKOFF_CAP_SECONDS
        supervisor.check()
        assert child.exit_code() is None
        assert supervisor.states["flaky"].state == "crash-looping"
        clock.now += CRASH_LOOP_WINDOW_SECONDS + 1
        supervisor.check()
        assert supervisor.states["flaky"].state == "running"
        assert supervisor.states["flaky"].recent_exits == 0
    finally:
        supervisor.stopping()
        stop_all([child], grace_seconds=2)
    stopped = MeshState.read(tmp_path)
    assert stopped is not None
    assert stopped.children["flaky"].state == "stopped"


def test_a_missing_or_broken_state_file_reads_as_none(tmp_path: Path) -> None:
    assert MeshState.read(tmp_path) is None
    (tmp_path / "mesh.json").write_text("{not json")
    assert MeshState.read(tmp_path) is None

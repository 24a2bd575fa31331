"""Pieces of `counterpick up` that need no mesh: URL handling and child process clean-up."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil

from services.cli.local_stores import _redact, _with_database, port_is_free
from services.cli.processes import ManagedProcess, stop_all
from tests.conftest import free_port


def test_with_database_keeps_socket_query() -> None:
    assert (
        _with_database("postgresql://postgres:@/postgres?host=/tmp/pg", "counterpick")
        == "postgresql://postgres:@/counterpick?host=/tmp/pg"
    )
    assert (
        _with_database("postgresql://postgres@127.0.0.1:5432/postgres", "counterpick")
        == "postgresql://postgres@127.0.0.1:5432/counterpick"
    )


def test_redact_hides_passwords_only() -> None:
    assert _redact("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert _redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_port_is_free_sees_a_listener() -> None:
    import socket

    port = free_port()
    assert port_is_free(port)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert not port_is_free(port)


def test_stop_all_kills_children_that_ignore_sigterm_and_their_children(tmp_path: Path) -> None:
    # A child that ignores SIGTERM and has a grandchild: both must be gone after stop_all.
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    stubborn = ManagedProcess("stubborn", [sys.executable, "-c", script], tmp_path / "s.log")
    stubborn.start()
    deadline = time.monotonic() + 10
    while "ready" not in stubborn.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stubborn.pid is not None
    family = [psutil.Process(stubborn.pid), *psutil.Process(stubborn.pid).children(recursive=True)]
    assert len(family) == 2

    stop_all([stubborn], grace_seconds=0.5)

    _, alive = psutil.wait_procs(family, timeout=5)
    assert alive == []
    assert stubborn.exit_code() is not None

"""A service process fails fast and says why: bad configuration, or a store that is down."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REDIS_URL, REPO_ROOT, free_port

pytestmark = pytest.mark.e2e


def _run(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_configuration_exits_2_naming_the_variable() -> None:
    result = _run("services.draft", {"PORT": "99999"})
    assert result.returncode == 2
    assert "PORT" in result.stderr
    assert "99999" in result.stderr


def test_store_down_exits_1_with_a_json_log_naming_it() -> None:
    result = _run(
        "services.user",
        {
            "PORT": str(free_port()),
            "POSTGRES_DSN": f"postgresql://postgres@127.0.0.1:{free_port()}/test",
            "REDIS_URL": REDIS_URL,
            "STORE_WAIT_SECONDS": "0.5",
        },
    )
    assert result.returncode == 1
    errors = [json.loads(line) for line in result.stderr.splitlines() if '"ERROR"' in line]
    assert errors, result.stderr
    assert errors[-1]["msg"].startswith("cannot start user: postgresql unreachable")
    assert errors[-1]["dependency"] == "postgresql"

"""Two test runs on one machine get different Redis databases, so neither flushes the other."""

from __future__ import annotations

import os
import subprocess
import sys

import redis

from tests.conftest import MACHINE_REDIS, REDIS_CLAIM_ERROR, REDIS_URL, REPO_ROOT

CLAIM_AND_PRINT = "import os; from tests.conftest import REDIS_URL; print(os.getpid(), REDIS_URL)"


def test_a_second_run_claims_another_database() -> None:
    assert REDIS_CLAIM_ERROR is None
    env = {k: v for k, v in os.environ.items() if k != "TEST_REDIS_URL"}
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; from tests.conftest import REDIS_URL; print(os.getpid(), REDIS_URL)",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    pid, other = other.split()
    assert other.startswith("redis://127.0.0.1:6379/")
    assert other != REDIS_URL
    # The other run has ended: its claim is released, so a later run may take that number.
    number = other.rsplit("/", 1)[1]
    claims = redis.Redis.from_url(f"{MACHINE_REDIS}/0", decode_responses=True)
    try:
        holder = claims.get(f"counterpick:test-run:db{number}")
    finally:
        claims.close()
    assert holder is None or not str(holder).endswith(f":{pid}")

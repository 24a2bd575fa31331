"""A local OpenDota `/api/publicMatches` that replays a real data set the way OpenDota lists it.

OpenDota inserts a public match when it *ends*, while its id was given when it *started*; the
listing is `match_id < less_than_match_id ORDER BY match_id DESC LIMIT 100`, with the bound
defaulting to the newest listed id itself (odota/core routes/spec.ts:
`Number(less_than_match_id) || max(match_id)`), so the newest finished match is only listed once a
newer one has finished. Long games therefore appear far below ids listed long before them.

The replay runs on a virtual clock: `data start + speedup x wall seconds since start_clock()`,
plus whatever tests add with `jump()`. At virtual time t exactly the rows with
start_time + duration <= t have finished. Rows come from a CSV of the shared data set
(`load_public_matches`) in OpenDota's JSON shape (hero ids as int arrays, `radiant_win` a bool)
with a `match_seq_num` assigned in order of match end, as Valve assigns it.

Faults are seeded and optional (`FaultPlan`): a page that repeats rows of the page above it (a
replica that moved between two requests), HTTP 429 with Retry-After, HTTP 5xx, and timeouts (the
answer is held for `hold_seconds`, longer than the client waits), all optionally limited to a
window of virtual time. Importable by tests and benchmarks; runs in a background thread.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

PUBLIC_MATCHES_2026_07 = Path("opendota-public-matches-2026-07") / "matches.csv.gz"
PAGE_ROWS = 100
FIRST_SEQ_NUM = 7_500_000_000


def load_public_matches(data_dir: Path, *, every: int = 1) -> list[dict[str, Any]]:
    """The 2026-07 rows (every `every`-th by match id) as OpenDota publicMatches JSON rows."""
    rows: list[dict[str, Any]] = []
    with gzip.open(data_dir / PUBLIC_MATCHES_2026_07, "rt", newline="") as handle:
        for index, raw in enumerate(csv.DictReader(handle)):
            if index % every:
                continue
            rows.append(
                {
                    "match_id": int(raw["match_id"]),
                    "radiant_win": raw["radiant_win"] == "1",
                    "start_time": int(raw["start_time"]),
                    "duration": int(raw["duration"]),
                    "lobby_type": int(raw["lobby_type"]),
                    "game_mode": int(raw["game_mode"]),
                    "avg_rank_tier": int(raw["avg_rank_tier"]) if raw["avg_rank_tier"] else None,
                    "radiant_team": [int(h) for h in raw["radiant_team"].split()],
                    "dire_team": [int(h) for h in raw["dire_team"].split()],
                }
            )
    return rows


def match_end(row: Mapping[str, Any]) -> int:
    """When a row's match ended (unix seconds)."""
    return int(row["start_time"]) + int(row["duration"])


@dataclass(frozen=True)
class FaultPlan:
    """Seeded faults, each a probability per request (repeats: per page that pages back)."""

    seed: int = 0
    repeat_rate: float = 0.0
    repeat_rows: int = 5
    rate_limit_rate: float = 0.0
    retry_after_seconds: float = 1.0
    server_error_rate: float = 0.0
    timeout_rate: float = 0.0
    hold_seconds: float = 3.0
    # Virtual-time window [from, to) in which faults happen; None: always.
    window: tuple[float, float] | None = None


class FeedReplayer:
    """Serves `/api/publicMatches` over `rows` on a virtual clock (see the module docstring)."""

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        speedup: float = 1.0,
        start_at: float | None = None,
        faults: FaultPlan | None = None,
    ) -> None:
        if not rows:
            raise ValueError("a replay needs rows")
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        by_end = sorted(rows, key=lambda row: (match_end(row), int(row["match_id"])))
        self.rows: dict[int, dict[str, Any]] = {}
        self._ends: list[int] = []
        self._ids_by_end: list[int] = []
        for seq, row in enumerate(by_end):
            copy = dict(row)
            copy["match_seq_num"] = FIRST_SEQ_NUM + seq
            self.rows[int(row["match_id"])] = copy
            self._ends.append(match_end(row))
            self._ids_by_end.append(int(row["match_id"]))
        self.speedup = speedup
        self.data_start = (
            float(start_at)
            if start_at is not None
            else float(min(int(row["start_time"]) for row in rows))
        )
        self.last_end = float(self._ends[-1])
        self.faults = faults or FaultPlan()
        self._random = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._wall0: float | None = None
        self._offset = 0.0
        self._finished: list[int] = []  # ids of finished matches, ascending
        self._finished_count = 0
        self.answers: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._http = _Server(self)
        self._thread = threading.Thread(
            target=self._http.serve_forever, args=(0.05,), name="feed-replayer", daemon=True
        )

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> FeedReplayer:
        """Serve (the clock stays at the data start until `start_clock`)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; held answers are released."""
        self._stopping.set()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FeedReplayer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def opendota_url(self) -> str:
        """The OpenDota base URL (with its /api prefix)."""
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}/api"

    # -- the clock -------------------------------------------------------------------------------

    def start_clock(self) -> None:
        """Let virtual time run from now on."""
        with self._lock:
            if self._wall0 is None:
                self._wall0 = time.monotonic()

    def jump(self, seconds: float) -> None:
        """Move virtual time forward by `seconds`."""
        with self._lock:
            self._offset += seconds

    def jump_to(self, moment: float) -> None:
        """Move virtual time forward to `moment` (never back)."""
        with self._lock:
            self._offset += max(0.0, moment - self._now())

    def now(self) -> float:
        """Virtual time (unix seconds of the data)."""
        with self._lock:
            return self._now()

    def wall_of(self, moment: float) -> float | None:
        """The time.monotonic() at which virtual time reaches (or reached) `moment`, ignoring
        jumps made later; None before the clock runs."""
        with self._lock:
            if self._wall0 is None:
                return None
            return self._wall0 + (moment - self.data_start - self._offset) / self.speedup

    def _now(self) -> float:
        running = 0.0 if self._wall0 is None else time.monotonic() - self._wall0
        return self.data_start + self._offset + running * self.speedup

    # -- what tests read -------------------------------------------------------------------------

    @property
    def all_finished(self) -> bool:
        """True once every match of the replay has ended."""
        return self.now() >= self.last_end

    def finished_ids(self) -> list[int]:
        """Ids of the matches ended by now, ascending."""
        with self._lock:
            self._advance()
            return list(self._finished)

    def listed_ids(self) -> list[int]:
        """What OpenDota lists by now: every finished match but the newest id."""
        return self.finished_ids()[:-1]

    # -- serving ---------------------------------------------------------------------------------

    def _advance(self) -> None:
        limit = bisect.bisect_right(self._ends, self._now())
        for index in range(self._finished_count, limit):
            bisect.insort(self._finished, self._ids_by_end[index])
        self._finished_count = max(self._finished_count, limit)

    def _faulty(self) -> bool:
        window = self.faults.window
        return window is None or window[0] <= self._now() < window[1]

    def answer(self, query: Mapping[str, list[str]]) -> tuple[int, dict[str, str], bytes, float]:
        """Status, headers, body and how long to hold the answer, for one request."""
        with self._lock:
            self._advance()
            plan = self.faults
            if self._faulty():
                draw = self._random.random()
                if draw < plan.timeout_rate:
                    self.answers["timeout"] += 1
                    return 200, {}, b"[]", plan.hold_seconds
                draw -= plan.timeout_rate
                if draw < plan.rate_limit_rate:
                    self.answers["429"] += 1
                    headers = {"Retry-After": f"{plan.retry_after_seconds:g}"}
                    return 429, headers, b'{"error":"rate limit exceeded"}', 0.0
                draw -= plan.rate_limit_rate
                if draw < plan.server_error_rate:
                    self.answers["5xx"] += 1
                    return 502, {"Content-Type": "text/html"}, b"<h1>502</h1>", 0.0
            values = query.get("less_than_match_id", [])
            try:
                bound = int(values[0]) if values and values[0] else 0
            except ValueError:
                bound = 0
            finished = self._finished
            if bound <= 0:
                bound = finished[-1] if finished else 0
            end = bisect.bisect_left(finished, bound)
            ids = finished[max(0, end - PAGE_ROWS) : end][::-1]
            if values and ids and self._faulty() and self._random.random() < plan.repeat_rate:
                # Rows of the page above come again on top; the page keeps 100 rows, so the
                # lowest ones move to the next page rather than disappear.
                above = finished[end : end + plan.repeat_rows][::-1]
                ids = (above + ids)[: max(len(ids), PAGE_ROWS)]
                self.answers["repeat"] += 1
            self.answers["200"] += 1
            body = json.dumps([self.rows[i] for i in ids], separators=(",", ":")).encode()
        return 200, {"Content-Type": "application/json"}, body, 0.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, replayer: FeedReplayer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replayer = replayer


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path != "/api/publicMatches":
            self._send(404, {"Content-Type": "application/json"}, b'{"error":"Not Found"}')
            return
        replayer = self.server.replayer
        status, headers, body, hold = replayer.answer(parse_qs(url.query))
        if hold and replayer._stopping.wait(hold):
            return
        self._send(status, headers, body)

    def _send(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout fault)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `answers` instead."""

"""A local HTTP server replaying real recorded Steam and OpenDota responses, with scripted faults.

Tests point the real API clients at `base_url` instead of the internet. Bodies are the recorded
files of the shared data directory, served byte for byte (so the clients parse exactly what the
upstreams sent); a test can script faults per path: 429 with Retry-After, 5xx n times, an answer
slower than the client's timeout, truncated JSON, a connection cut mid-body, extra headers such
as OpenDota's remaining-quota counters. Every request is recorded with its query.

Routes:
- `/api/publicMatches`: odota-web `publicMatches_mmr_descending-1.json` (100 rows, 2018), whatever
  the paging parameters (a replay cannot filter without rewriting the recording). With a
  `PublicMatchesFeed` passed as `public_matches`, a live listing instead: a long history of
  matches made from those recorded rows, growing while the client polls, paged exactly like
  OpenDota pages it (see the class).
- `/api/parsedMatches`: no recording exists; derived as `[{"match_id": id}]` from the ids of that
  same publicMatches page, which is the documented row shape.
- `/api/matches/{id}`: odota-core `{id}_output.json` or odota-web `matches_{id}.json`; any other id
  gets OpenDota's 404 `{"error": "Not Found"}`.
- Steam `/IDOTA2Match_570/GetMatchHistoryBySequenceNum/v1`: the dota2api 100-match page (sequence
  numbers 240..398, 2011) when `start_at_match_seq_num` is within it, else odota-core's one-match
  page (2025). With `steam_key` set, a missing or wrong `key` gets Valve's 403 page.
"""

from __future__ import annotations

import bisect
import fnmatch
import json
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlparse

SAMPLES = Path("api-samples")
PUBLIC_MATCHES = SAMPLES / "odota-web" / "publicMatches_mmr_descending-1.json"
STEAM_SEQUENCE_PAGE = SAMPLES / "dota2api-steam" / "get_match_history_by_sequence_num_result.json"
STEAM_SEQUENCE_RECENT = SAMPLES / "odota-core" / "sequence_api.json"
SEQUENCE_PATH = "/IDOTA2Match_570/GetMatchHistoryBySequenceNum/v1"
NOT_FOUND_BODY = b'{"error":"Not Found"}'
# What Valve answers when the key is missing or wrong.
STEAM_FORBIDDEN_BODY = (
    b"<html><head><title>Forbidden</title></head><body><h1>Forbidden</h1>Access is denied. "
    b"Retrying will not help. Please verify your <pre>key=</pre> parameter.</body></html>"
)
_MATCH_PATH = re.compile(r"^/api/matches/(\d+)$")
_JS_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_JS_INFINITY = re.compile(r"[+-]?Infinity")


def has_api_samples(data_dir: Path) -> bool:
    """True when the recorded responses this server replays are present."""
    return all((data_dir / path).is_file() for path in (PUBLIC_MATCHES, STEAM_SEQUENCE_PAGE))


def recorded_public_matches(data_dir: Path) -> list[dict[str, Any]]:
    """The recorded /api/publicMatches rows (odota-web, 100 rows of 2018)."""
    return cast(list[dict[str, Any]], json.loads((data_dir / PUBLIC_MATCHES).read_bytes()))


class PublicMatchesFeed:
    """OpenDota's /api/publicMatches over a long history of matches that keep finishing.

    The history is `total` matches resampled from `rows` (real recorded rows; each copy gets a
    fresh match id and sequence number, everything else as recorded). Ids ascend with random gaps
    and the matches finish in id order: `initial` have finished when the first request arrives,
    the others follow at `per_second`, whether anyone is polling or not.

    Answers follow odota/core's query (routes/spec.ts): `match_id < lessThan ORDER BY match_id
    DESC LIMIT 100`, where `lessThan = Number(less_than_match_id) || max(match_id)`. So a page is
    the 100 newest finished matches strictly below the bound, newest first; and without the
    parameter (or with 0 or a value that is not a number) the bound is the newest finished match
    itself, which is therefore listed only once a newer one has finished.

    A test can `hold_next_page_back()`: the next request that pages back (carries
    less_than_match_id) waits unanswered, with `held` set, until `release()` or the server stops:
    the client is then in the middle of reading a gap, with pages read and nothing published.
    """

    PAGE_ROWS = 100

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        total: int,
        initial: int = PAGE_ROWS,
        per_second: float = 100.0,
        first_match_id: int = 8_400_000_000,
        first_match_seq_num: int = 7_100_000_000,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rows:
            raise ValueError("a feed needs recorded rows to resample")
        if not 0 < initial <= total or per_second <= 0:
            raise ValueError("need 0 < initial <= total and per_second > 0")
        pick = random.Random(seed)
        self.total = total
        self.initial = initial
        self.per_second = per_second
        self._clock = clock
        self.ids: list[int] = []
        self._rows: list[dict[str, Any]] = []
        match_id, seq_num = first_match_id, first_match_seq_num
        for _ in range(total):
            # Ids of listed matches are not contiguous: other lobbies take the ids between.
            match_id += pick.randint(1, 40)
            seq_num += pick.randint(1, 40)
            row = dict(pick.choice(rows))
            row["match_id"], row["match_seq_num"] = match_id, seq_num
            self.ids.append(match_id)
            self._rows.append(row)
        self._lock = threading.Lock()
        self._started_at: float | None = None
        self.newest_served: int | None = None
        self._hold_armed = False
        self.held = threading.Event()
        self._released = threading.Event()

    # -- what tests use ------------------------------------------------------------------------

    def finished_count(self) -> int:
        """How many matches have finished by now (`initial` until the first request)."""
        with self._lock:
            return self._finished_count()

    @property
    def all_finished(self) -> bool:
        """True once the whole history has finished."""
        return self.finished_count() == self.total

    def listed_ids(self) -> list[int]:
        """The ids OpenDota lists by now, ascending: every finished match but the newest."""
        return self.ids[: max(0, self.finished_count() - 1)]

    def hold_next_page_back(self) -> None:
        """Hold the next request that carries less_than_match_id (see the class)."""
        with self._lock:
            self.held.clear()
            self._released.clear()
            self._hold_armed = True

    def release(self) -> None:
        """Let a held request be answered (the server's stop() calls this too)."""
        self._released.set()

    # -- serving ---------------------------------------------------------------------------------

    def _finished_count(self) -> int:
        if self._started_at is None:
            return self.initial
        elapsed = self._clock() - self._started_at
        return min(self.total, self.initial + int(elapsed * self.per_second))

    def answer(self, query: Mapping[str, list[str]]) -> tuple[int, bytes]:
        """Status and body of one /api/publicMatches request."""
        values = query.get("less_than_match_id", [])
        with self._lock:
            hold = self._hold_armed and bool(values and values[0])
            if hold:
                self._hold_armed = False
        if hold:
            self.held.set()
            self._released.wait()
        with self._lock:
            if self._started_at is None:
                self._started_at = self._clock()
            finished = self._finished_count()
            bound = _js_number(values[0]) if len(values) == 1 else math.nan
            if math.isnan(bound) or bound == 0:  # `Number(x) || currMax`
                bound = self.ids[finished - 1]
            end = bisect.bisect_left(self.ids, bound, 0, finished)
            page = self._rows[max(0, end - self.PAGE_ROWS) : end][::-1]
            if page:
                self.newest_served = max(self.newest_served or 0, page[0]["match_id"])
        return 200, json.dumps(page, separators=(",", ":")).encode()


def _js_number(text: str) -> float:
    """JavaScript's Number(text) for a decimal query value: 0 when blank, NaN when not a number
    (Python's float() would also take "1_000", "nan" or "inf", which Number() does not)."""
    stripped = text.strip()
    if not stripped:
        return 0.0
    if _JS_INFINITY.fullmatch(stripped):
        return -math.inf if stripped.startswith("-") else math.inf
    return float(stripped) if _JS_DECIMAL.fullmatch(stripped) else math.nan


@dataclass(frozen=True)
class Fault:
    """A scripted answer to the next `times` requests of a path, instead of the plain replay."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None  # None: the recorded answer (possibly truncated)
    delay_seconds: float = 0.0  # before anything is sent, so a client times out waiting
    truncate_to: int | None = None  # send only the first N bytes of the body
    # With truncate_to: announce the full Content-Length and hang up early (a dying upstream)
    # instead of an honest short body that merely is not valid JSON.
    cut_connection: bool = False
    times: int = 1

    @classmethod
    def rate_limited(
        cls,
        retry_after: str | float | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> Fault:
        """HTTP 429 with OpenDota's body, optionally with Retry-After (seconds or HTTP date)."""
        merged = dict(headers or {})
        if retry_after is not None:
            merged["Retry-After"] = str(retry_after)
        return cls(429, merged, b'{"error":"rate limit exceeded"}', times=times)

    @classmethod
    def server_error(cls, status: int = 500, *, times: int = 1) -> Fault:
        """A 5xx with an HTML body, as proxies in front of the APIs send."""
        body = f"<html><body><h1>{status}</h1></body></html>".encode()
        return cls(status, {"Content-Type": "text/html"}, body, times=times)

    @classmethod
    def slow(cls, seconds: float, *, times: int = 1) -> Fault:
        """The recorded answer, but only after `seconds`."""
        return cls(delay_seconds=seconds, times=times)

    @classmethod
    def truncated(cls, at: int = 500, *, cut_connection: bool = False, times: int = 1) -> Fault:
        """The recorded answer cut after `at` bytes."""
        return cls(truncate_to=at, cut_connection=cut_connection, times=times)

    @classmethod
    def with_headers(cls, headers: Mapping[str, str], *, times: int = 1) -> Fault:
        """The recorded answer plus these headers (e.g. X-Rate-Limit-Remaining-Minute: 0)."""
        return cls(headers=dict(headers), times=times)


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased

    def param(self, name: str) -> str | None:
        """The (first) value of one query parameter."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class _Script:
    pattern: str
    fault: Fault
    remaining: int


class ReplayServer:
    """Serves the recorded responses on a free loopback port in a background thread.

    Use it as a context manager (or `start()` / `stop()`); it is safe to call from the test's
    event loop thread while handler threads answer the client.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        steam_key: str | None = None,
        extra_routes: Mapping[str, Path] | None = None,
        public_matches: PublicMatchesFeed | None = None,
    ) -> None:
        if not has_api_samples(data_dir):
            raise FileNotFoundError(f"recorded API responses not found under {data_dir}")
        self.data_dir = data_dir
        self.steam_key = steam_key
        self.public_matches = public_matches
        self.extra_routes = dict(extra_routes or {})
        self._lock = threading.Lock()
        self._scripts: list[_Script] = []
        self._requests: list[RecordedRequest] = []
        self._files: dict[Path, bytes] = {}
        self._stopping = threading.Event()
        self._http = _HttpServer(self)
        # A short poll interval: shutdown() waits up to one interval, once per test.
        self._thread = threading.Thread(
            target=self._http.serve_forever, args=(0.02,), name="replay-server", daemon=True
        )

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> ReplayServer:
        """Start answering."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and release the port; slow handlers are woken up."""
        self._stopping.set()
        if self.public_matches is not None:
            self.public_matches.release()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- what tests use ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT (the Steam base URL)."""
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def opendota_url(self) -> str:
        """The OpenDota base URL (with its /api prefix)."""
        return f"{self.base_url}/api"

    def script(self, pattern: str, *faults: Fault) -> None:
        """Answer the next requests whose path matches `pattern` (an fnmatch glob such as
        "/api/matches/*") with these faults, in order, each `fault.times` times."""
        with self._lock:
            self._scripts.extend(_Script(pattern, fault, fault.times) for fault in faults)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Requests received for one exact path."""
        return [request for request in self.requests if request.path == path]

    # -- serving ---------------------------------------------------------------------------------

    def _take_fault(self, path: str) -> Fault:
        with self._lock:
            for script in self._scripts:
                if script.remaining > 0 and fnmatch.fnmatchcase(path, script.pattern):
                    script.remaining -= 1
                    return script.fault
        return Fault()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _file(self, relative: Path) -> bytes:
        with self._lock:
            if relative not in self._files:
                self._files[relative] = (self.data_dir / relative).read_bytes()
            return self._files[relative]

    def recorded_answer(self, path: str, query: Mapping[str, list[str]]) -> tuple[int, bytes]:
        """Status and body the replay gives a request without faults."""
        if path in self.extra_routes:
            return 200, self._file(self.extra_routes[path])
        if path == "/api/publicMatches":
            if self.public_matches is not None:
                return self.public_matches.answer(query)
            return 200, self._file(PUBLIC_MATCHES)
        if path == "/api/parsedMatches":
            rows = json.loads(self._file(PUBLIC_MATCHES))
            return 200, json.dumps([{"match_id": row["match_id"]} for row in rows]).encode()
        if match := _MATCH_PATH.match(path):
            match_id = match.group(1)
            for candidate in (
                SAMPLES / "odota-core" / f"{match_id}_output.json",
                SAMPLES / "odota-web" / f"matches_{match_id}.json",
            ):
                if (self.data_dir / candidate).is_file():
                    return 200, self._file(candidate)
            return 404, NOT_FOUND_BODY
        if path == SEQUENCE_PATH:
            return self._sequence_answer(query)
        return 404, NOT_FOUND_BODY

    def _sequence_answer(self, query: Mapping[str, list[str]]) -> tuple[int, bytes]:
        if self.steam_key is not None and query.get("key") != [self.steam_key]:
            return 403, STEAM_FORBIDDEN_BODY
        try:
            start = int(query.get("start_at_match_seq_num", ["0"])[0])
        except ValueError:
            return 400, b'{"result":{"status":8,"statusDetail":"bad start_at_match_seq_num"}}'
        page = self._file(STEAM_SEQUENCE_PAGE)
        newest_in_page = max(m["match_seq_num"] for m in json.loads(page)["result"]["matches"])
        return 200, page if start <= newest_in_page else self._file(STEAM_SEQUENCE_RECENT)


class _HttpServer(ThreadingHTTPServer):
    # Handler threads must not keep the test process alive or delay shutdown.
    daemon_threads = True

    def __init__(self, replay: ReplayServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replay = replay


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest output is for the tests."""

    def do_GET(self) -> None:
        replay = cast(_HttpServer, self.server).replay
        url = urlparse(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        replay._record(
            RecordedRequest(url.path, query, {k.lower(): v for k, v in self.headers.items()})
        )
        fault = replay._take_fault(url.path)
        if fault.delay_seconds and replay._stopping.wait(fault.delay_seconds):
            return  # the server is stopping: give up on this answer
        status, body = replay.recorded_answer(url.path, query)
        if fault.body is not None or fault.status != 200:
            status = fault.status
            body = fault.body if fault.body is not None else body
        self._answer(status, body, fault)

    def _answer(self, status: int, body: bytes, fault: Fault) -> None:
        sent = body if fault.truncate_to is None else body[: fault.truncate_to]
        declared = len(body) if fault.cut_connection else len(sent)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Date": formatdate(usegmt=True),
        }
        headers.update(fault.headers)
        try:
            self.send_response_only(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(declared))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(sent)
            self.wfile.flush()
            if fault.cut_connection:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the client gave up first (a timeout test)
        self.close_connection = True

"""Live drafts in Redis: a compare-and-set document, an event stream and a deadline index.

Layout (under `prefix`, which carries the deployment namespace, e.g. `counterpick:dev:draft`):
    {prefix}:{id}:doc     hash   `revision` (int, 1 on create, +1 per commit) and `document`
                                 (JSON owned by the application layer); expires at the draft's
                                 expires_at (PEXPIREAT, refreshed by every commit)
    {prefix}:{id}:events  stream one entry per event, id `<sequence>-<n>` (n counts from 0, but
                                 from 1 for sequence 0: 0-0 is no valid id), one field `p` holding
                                 the event's JSON; capped at about max_events (MAXLEN ~), same
                                 expiry as the document. It exists (possibly empty) exactly as
                                 long as the document does, so "stream gone" means "draft gone"
                                 to the watchers.
    {prefix}:deadlines    zset   member draft id, score the next deadline in epoch ms; drafts
                                 without a pending deadline are absent. Entries of drafts that
                                 expired are removed lazily by `due`.

Every write is one Lua script, so a replica that dies half-way leaves nothing half-written and
concurrent replicas serialise on Redis: `commit` is the compare-and-set on `revision` that lets
any replica serve any draft. Scripts validate everything before their first write because Redis
does not roll back a script that fails in the middle.

The scripts touch the shared deadlines key next to per-draft keys, so this layout needs a single
Redis (or one hash slot), not a cluster spread over slots.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.common.errors import DependencyUnavailable

# The one stream field holding an event's JSON.
PAYLOAD_FIELD = "p"

# KEYS: doc, events, deadlines. ARGV: document, expires ms, deadline ms or "", draft id,
# max events, then (sequence, payload) pairs. Returns 1, or 0 when the id is taken.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
-- A stream left by an earlier draft of this id (it cannot outlive its document, but a manual
-- PERSIST could) must not leak its events into the new one.
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'revision', 1, 'document', ARGV[1])
-- Create the stream empty, so that it exists for as long as the draft does even before the
-- first event: watchers treat a missing stream as a draft that is gone.
redis.call('XGROUP', 'CREATE', KEYS[2], 'init', '$', 'MKSTREAM')
redis.call('XGROUP', 'DESTROY', KEYS[2], 'init')
for i = 6, #ARGV, 2 do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], ARGV[i] .. '-*', 'p', ARGV[i + 1])
end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[3], ARGV[4])
else
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
end
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[2], ARGV[2])
return 1
"""

# The sequence of the stream's newest entry, or -1 when it has none. Entries are only ever
# removed by MAXLEN ~ trimming, which keeps the newest ones, so this is also the sequence part of
# the last generated id, the bound XADD '<sequence>-*' enforces.
_LAST_SEQUENCE = """
local function last_sequence(key)
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #last == 0 then return -1 end
  return tonumber(string.match(last[1][1], '^(%d+)'))
end
"""

# KEYS: doc, events, deadlines. ARGV: expected revision, document, expires ms, deadline ms or "",
# draft id, max events, then (sequence, payload) pairs. Returns 1 when committed, 0 on a revision
# mismatch or a missing draft, -1 when the first event's sequence is behind the stream.
_COMMIT = (
    _LAST_SEQUENCE
    + """
local revision = redis.call('HGET', KEYS[1], 'revision')
if not revision or tonumber(revision) ~= tonumber(ARGV[1]) then return 0 end
if #ARGV >= 7 and tonumber(ARGV[7]) < last_sequence(KEYS[2]) then return -1 end
redis.call('HSET', KEYS[1], 'document', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'revision', 1)
for i = 7, #ARGV, 2 do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], ARGV[i] .. '-*', 'p', ARGV[i + 1])
end
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[3], ARGV[5])
else
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
end
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
redis.call('PEXPIREAT', KEYS[2], ARGV[3])
return 1
"""
)

# KEYS: doc, events. ARGV: sequence, payload, max events. Returns the new entry id, or nil when
# the draft is gone or a newer sequence is already in the stream. XADD keeps the key's TTL.
_APPEND = (
    _LAST_SEQUENCE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if tonumber(ARGV[1]) < last_sequence(KEYS[2]) then return false end
return redis.call('XADD', KEYS[2], 'NOMKSTREAM', 'MAXLEN', '~', ARGV[3], ARGV[1] .. '-*',
                  'p', ARGV[2])
"""
)

# KEYS: doc, events. ARGV: the sequence after which every event is wanted (>= -1). Returns nil
# when the draft is gone or trimming may have removed a wanted event, else the entries from
# sequence ARGV[1] + 1 on. Redis 7.0 does not record the highest trimmed id, but trimming only
# removes the oldest entries: if anything was removed (entries-added > length), everything removed
# is older than the first kept entry, so the wanted events are complete when that entry is at or
# before the first wanted id. This errs towards nil (a snapshot) when sequences had no events.
_EVENTS_AFTER = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[2]) == 0 then
  return false
end
local wanted = tonumber(ARGV[1]) + 1
local info = redis.call('XINFO', 'STREAM', KEYS[2])
local fields = {}
for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
if fields['entries-added'] > fields['length'] then
  local first = fields['first-entry']
  if not first then return false end
  local ms, n = string.match(first[1], '^(%d+)-(%d+)$')
  -- The lowest id a sequence gets is <sequence>-0, but 0-1 for sequence 0 (0-0 is invalid).
  local lowest = wanted == 0 and 1 or 0
  if tonumber(ms) > wanted or (tonumber(ms) == wanted and tonumber(n) > lowest) then
    return false
  end
end
return redis.call('XRANGE', KEYS[2], wanted .. '-0', '+')
"""

# KEYS: deadlines, then the doc key of every candidate. ARGV: the candidates' ids. Drops the
# deadline entries of drafts that expired (nothing else removes them) and returns the others.
_PRUNE_DUE = """
local live = {}
for i = 1, #ARGV do
  if redis.call('EXISTS', KEYS[i + 1]) == 1 then
    live[#live + 1] = ARGV[i]
  else
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return live
"""


@dataclass(frozen=True)
class StoredDraft:
    """A draft's document as last committed, with the revision to compare-and-set against."""

    document: dict[str, Any]
    revision: int


@dataclass(frozen=True)
class LoggedEvent:
    """One event of a draft's stream. The payload may be shared by every watcher of the draft
    (the hub decodes each entry once): treat it as read-only."""

    event_id: str
    sequence: int
    payload: dict[str, Any]


class DraftExists(Exception):
    """`create` was called with the id of a draft that exists."""

    def __init__(self, draft_id: str) -> None:
        super().__init__(f"draft {draft_id!r} exists")
        self.draft_id = draft_id


def epoch_ms(moment: datetime) -> int:
    """Unix milliseconds of an aware datetime (naive ones would silently mean local time)."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: pass an aware datetime")
    return round(moment.timestamp() * 1000)


def text(value: Any) -> str:
    """A reply element (bytes, or str when the client decodes responses) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def sequence_of(event_id: str) -> int:
    """The draft sequence an entry id belongs to: the part before the dash."""
    return int(event_id.partition("-")[0])


def decode_entry(entry_id: Any, fields: Any) -> LoggedEvent:
    """A LoggedEvent from a stream entry as Redis returns it: a dict of fields (redis-py's
    stream commands) or a flat name, value list (a script's reply)."""
    event_id = text(entry_id)
    if isinstance(fields, dict):
        raw = fields.get(PAYLOAD_FIELD.encode(), fields.get(PAYLOAD_FIELD))
    else:
        named = {text(fields[i]): fields[i + 1] for i in range(0, len(fields) - 1, 2)}
        raw = named.get(PAYLOAD_FIELD)
    if raw is None:
        raise ValueError(f"stream entry {event_id} has no {PAYLOAD_FIELD!r} field")
    return LoggedEvent(event_id, sequence_of(event_id), orjson.loads(raw))


@contextmanager
def redis_unavailable() -> Iterator[None]:
    """Turn a Redis failure (error reply, broken connection, timeout) into DependencyUnavailable."""
    try:
        yield
    except (RedisError, OSError, TimeoutError) as error:
        raise DependencyUnavailable("redis", f"redis: {error}") from error


def _encode(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value)


def _event_args(events: Sequence[tuple[int, dict[str, Any]]]) -> list[int | bytes]:
    """Flattened (sequence, payload) pairs, after checking the sequences are usable as ids."""
    args: list[int | bytes] = []
    previous = 0
    for sequence, payload in events:
        if sequence < previous:
            raise ValueError(f"event sequences must be non-negative and non-decreasing: {sequence}")
        previous = sequence
        args += [sequence, _encode(payload)]
    return args


class DraftStore:
    """Drafts, their event streams and their deadlines in one Redis (see the module docstring)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str = "draft",
        max_events: int = 1000,
        timeout_seconds: float = 2.0,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be >= 1")
        self.redis = redis
        self.prefix = prefix
        self.max_events = max_events
        # A Redis that accepts connections but does not answer must not hang a draft action.
        self._timeout = timeout_seconds
        self._deadlines = f"{prefix}:deadlines"
        self._create: Any = redis.register_script(_CREATE)
        self._commit: Any = redis.register_script(_COMMIT)
        self._append: Any = redis.register_script(_APPEND)
        self._events_after: Any = redis.register_script(_EVENTS_AFTER)
        self._prune_due: Any = redis.register_script(_PRUNE_DUE)

    @property
    def timeout_seconds(self) -> float:
        """How long one store call may take before it counts as Redis being down."""
        return self._timeout

    def document_key(self, draft_id: str) -> str:
        """The hash holding the draft's revision and document."""
        return f"{self.prefix}:{draft_id}:doc"

    def events_key(self, draft_id: str) -> str:
        """The stream of the draft's events."""
        return f"{self.prefix}:{draft_id}:events"

    @property
    def deadlines_key(self) -> str:
        """The sorted set of pending deadlines (draft id -> epoch ms)."""
        return self._deadlines

    def draft_id_of(self, events_key: str) -> str:
        """The draft id an events key belongs to (inverse of `events_key`)."""
        return events_key[len(self.prefix) + 1 : -len(":events")]

    async def create(
        self,
        draft_id: str,
        document: dict[str, Any],
        *,
        expires_at: datetime,
        deadline: datetime | None,
        events: Sequence[tuple[int, dict[str, Any]]] = (),
    ) -> None:
        """Write a new draft at revision 1 with its initial events and deadline, all expiring at
        `expires_at`; raises DraftExists if the id is taken."""
        args = [
            _encode(document),
            epoch_ms(expires_at),
            "" if deadline is None else epoch_ms(deadline),
            draft_id,
            self.max_events,
            *_event_args(events),
        ]
        keys = [self.document_key(draft_id), self.events_key(draft_id), self._deadlines]
        with redis_unavailable():
            async with asyncio.timeout(self._timeout):
                created = await self._create(keys=keys, args=args)
        if not int(created):
            raise DraftExists(draft_id)

    async def load(self, draft_id: str) -> StoredDraft | None:
        """The draft's document and revision, or None when it is unknown or expired."""
        with redis_unavailable():
            async with asyncio.timeout(self._timeout):
                revision, document = await self.redis.hmget(
                    self.document_key(draft_id), ["revision", "document"]
                )
        if revision is None or document is None:
            return None
        return StoredDraft(document=orjson.loads(document), revision=int(revision))

    async def commit(
        self,
        draft_id: str,
        *,
        expected_revision: int,
        document: dict[str, Any],
        events: Sequence[tuple[int, dict[str, Any]]],
        expires_at: datetime,
        deadline: datetime | None,
    ) -> bool:
        """Replace the document if its revision is still `expected_revision`, appending `events`
        and setting the deadline and expiry, all at once; False (and nothing written) when the
        draft moved on or is gone. Raises ValueError when the events' sequences go backwards."""
        args = [
            expected_revision,
            _encode(document),
            epoch_ms(expires_at),
            "" if deadline is None else epoch_ms(deadline),
            draft_id,
            self.max_events,
            *_event_args(events),
        ]
        keys = [self.document_key(draft_id), self.events_key(draft_id), self._deadlines]
        with redis_unavailable():
            async with asyncio.timeout(self._timeout):
                outcome = int(await self._commit(keys=keys, args=args))
        if outcome < 0:
            raise ValueError(
                f"draft {draft_id}: event sequence {events[0][0]} is behind the stream's last"
            )
        return outcome == 1

    async def append(
        self, draft_id: str, sequence: int, payload: dict[str, Any]
    ) -> LoggedEvent | None:
        """Append an event computed after a commit (e.g. suggestions for `sequence`), unless the
        draft is gone or already moved past `sequence` (then None: the event is stale)."""
        if sequence < 0:
            raise ValueError(f"sequence must be >= 0, got {sequence}")
        keys = [self.document_key(draft_id), self.events_key(draft_id)]
        with redis_unavailable():
            async with asyncio.timeout(self._timeout):
                entry_id = await self._append(
                    keys=keys, args=[sequence, _encode(payload), self.max_events]
                )
        if entry_id is None:
            return None
        event_id = text(entry_id)
        return LoggedEvent(event_id, sequence_of(event_id), payload)

    async def events_after(self, draft_id: str, after_sequence: int) -> list[LoggedEvent] | None:
        """Every kept event with a sequence above `after_sequence`, oldest first; None when the
        draft is gone or some of those events were trimmed (send a snapshot instead)."""
        keys = [self.document_key(draft_id), self.events_key(draft_id)]
        with redis_unavailable():
            async with asyncio.timeout(self._timeout):
                entries = await self._events_after(keys=keys, args=[max(after_sequence, -1)])
        if entries is None:
            return None
        return [decode_entry(entry_id, fields) for entry_id, fields in entries]

    async def last_event_id(self, draft_id: str) -> str:
        """The id of the draft's newest event, "0-0" when it has none (or is gone)."""
        with redis_unavailable():
            async with asyncio.timeout(self._timeout):
                last = await self.redis.xrevrange(self.events_key(draft_id), count=1)
        return text(last[0][0]) if last else "0-0"

    async def due(self, now: datetime, limit: int = 100) -> list[str]:
        """Ids of up to `limit` drafts whose deadline is at or before `now`, earliest first.
        Several replicas may get the same id: applying a timeout is a compare-and-set commit."""
        with redis_unavailable():
            async with asyncio.timeout(self._timeout):
                candidates = await self.redis.zrangebyscore(
                    self._deadlines, "-inf", epoch_ms(now), start=0, num=limit
                )
                if not candidates:
                    return []
                ids = [text(member) for member in candidates]
                live = await self._prune_due(
                    keys=[self._deadlines, *(self.document_key(i) for i in ids)], args=ids
                )
        return [text(member) for member in live]

    async def ping(self) -> None:
        """Raise DependencyUnavailable("redis") unless Redis answers."""
        with redis_unavailable():
            async with asyncio.timeout(self._timeout):
                await self.redis.ping()

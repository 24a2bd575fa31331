"""Where each ingest source resumes: its cursor, persisted in Redis (never only in memory)."""

from __future__ import annotations

import redis.asyncio as aioredis

_KEY = "counterpick:ingest:cursor:{source}"


class CursorStore:
    """Reads and advances per-source cursors (a sequence number or a match id)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def get(self, source: str) -> int | None:
        """The stored cursor of `source`, or None before its first successful batch."""
        value = await self._client.get(_KEY.format(source=source))
        return None if value is None else int(value)

    async def advance(self, source: str, value: int) -> None:
        """Move the cursor forward; a lower value (an older, slower writer) never wins."""
        # A tiny Lua compare-and-set so two ingest replicas cannot move a cursor backwards.
        await self._client.eval(
            "local current = tonumber(redis.call('GET', KEYS[1]) or '-1') "
            "if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end "
            "return redis.call('GET', KEYS[1])",
            1,
            _KEY.format(source=source),
            str(value),
        )

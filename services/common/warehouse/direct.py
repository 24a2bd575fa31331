"""The read queries of the warehouse, run directly on ClickHouse (embedded chdb or a server).

Counting happens where the data is: hero and pair counts are aggregated in SQL, so only a few
hundred thousand aggregate rows leave ClickHouse whatever the number of matches. The etl service,
which owns the embedded engine's directory, serves the same reads to other processes over its
ReadWarehouse RPC (`etl_rpc.py`). Calls are synchronous (the chdb backend has no async client);
async callers run them in a thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Self

import clickhouse_connect
import pyarrow as pa

_HERO_COUNTS_SQL = """
SELECT patch, skill_bracket, hero_id, count() AS games, sum(won) AS wins
FROM (
    SELECT patch, skill_bracket,
           arrayJoin(arrayConcat(
               arrayMap(h -> (h, toUInt8(radiant_win)), radiant_heroes),
               arrayMap(h -> (h, toUInt8(NOT radiant_win)), dire_heroes))) AS hero_won,
           hero_won.1 AS hero_id, hero_won.2 AS won
    FROM matches FINAL
    WHERE {where}
)
GROUP BY patch, skill_bracket, hero_id
ORDER BY patch, skill_bracket, hero_id
"""


def _pair_count_sql() -> str:
    """Pair counts as 45 positional projections (25 cross-team slot pairs, 10 + 10 same-team)
    unioned and aggregated once.

    The obvious form, arrayJoin over the pairs of each draft, materialises 45 tuples per match
    before aggregating and measured three times slower (13.2 s against 4.3 s for 3M matches on
    2 cores); plain columns straight into one hash aggregation avoid that.
    """
    # Only loop constants go into these strings; user values travel as query parameters.
    projections = [
        f"SELECT patch, skill_bracket, 'vs' AS relation, radiant_heroes[{r}] AS hero_a, "  # noqa: S608
        f"dire_heroes[{d}] AS hero_b, toUInt8(radiant_win) AS won FROM drafts"
        for r in range(1, 6)
        for d in range(1, 6)
    ]
    for team, won in (("radiant_heroes", "radiant_win"), ("dire_heroes", "NOT radiant_win")):
        projections += [
            f"SELECT patch, skill_bracket, 'with' AS relation, "  # noqa: S608
            f"least({team}[{i}], {team}[{j}]) AS hero_a, "
            f"greatest({team}[{i}], {team}[{j}]) AS hero_b, toUInt8({won}) AS won FROM drafts"
            for i in range(1, 6)
            for j in range(i + 1, 6)
        ]
    union = "\n    UNION ALL ".join(projections)
    return (
        "WITH drafts AS (SELECT patch, skill_bracket, radiant_win, radiant_heroes, dire_heroes "  # noqa: S608
        "FROM matches FINAL WHERE {where})\n"
        "SELECT patch, skill_bracket, relation, hero_a, hero_b, count() AS games, "
        f"sum(won) AS wins\nFROM (\n    {union}\n)\n"
        "GROUP BY patch, skill_bracket, relation, hero_a, hero_b\n"
        "ORDER BY patch, skill_bracket, relation, hero_a, hero_b"
    )


_PAIR_COUNTS_SQL = _pair_count_sql()

# The same counts for an incremental read (a few thousand new matches): the positional form
# would evaluate the new-match filter once per projection, 45 times; per-match arrayJoin
# evaluates it once, and on few rows its expansion costs nothing.
_PAIR_DELTA_SQL = """
SELECT patch, skill_bracket, pair.1 AS relation, pair.2 AS hero_a, pair.3 AS hero_b,
       count() AS games, sum(pair.4) AS wins
FROM (
    SELECT patch, skill_bracket,
           arrayJoin(arrayConcat(
               arrayFlatten(arrayMap(
                   r -> arrayMap(d -> ('vs', r, d, toUInt8(radiant_win)), dire_heroes),
                   radiant_heroes)),
               arrayFlatten(arrayMap(
                   a -> arrayMap(b -> ('with', a, b, toUInt8(radiant_win)),
                                 arrayFilter(b -> b > a, radiant_heroes)),
                   radiant_heroes)),
               arrayFlatten(arrayMap(
                   a -> arrayMap(b -> ('with', a, b, toUInt8(NOT radiant_win)),
                                 arrayFilter(b -> b > a, dire_heroes)),
                   dire_heroes)))) AS pair
    FROM matches FINAL
    WHERE {where}
)
GROUP BY patch, skill_bracket, relation, hero_a, hero_b
ORDER BY patch, skill_bracket, relation, hero_a, hero_b
"""

_MATCH_DRAFTS_SQL = """
SELECT match_id, toUnixTimestamp(start_time) AS start_time, patch, skill_bracket, radiant_win,
       radiant_heroes, dire_heroes
FROM matches FINAL
WHERE {where}
ORDER BY start_time NULLS FIRST, match_id
"""

# Player-games per (patch, hero, position) of players with a known position (OpenDota parsed
# matches; see services/etl/lanes.py): at most 5 rows per hero and patch leave the warehouse.
_POSITION_COUNTS_SQL = """
SELECT patch, hero_id, assumeNotNull(position) AS position, count() AS games
FROM match_players FINAL
WHERE position IS NOT NULL AND patch != '' AND ({patch:Nullable(String)} IS NULL
      OR patch = {patch:Nullable(String)})
GROUP BY patch, hero_id, position
ORDER BY patch, hero_id, position
"""

_PLAYER_RECORDS_SQL = """
SELECT p.match_id AS match_id, toUnixTimestamp(m.start_time) AS start_time, m.patch AS patch,
       m.skill_bracket AS skill_bracket, p.hero_id AS hero_id, p.win AS win
FROM (SELECT match_id, hero_id, win FROM match_players FINAL
      WHERE account_id = {account_id:UInt32}) AS p
INNER JOIN (SELECT match_id, start_time, patch, skill_bracket FROM matches FINAL) AS m
    ON p.match_id = m.match_id
ORDER BY start_time, match_id
"""

_PLAYER_GROUPS_SQL = """
SELECT p.account_id AS account_id, p.hero_id AS hero_id, m.patch AS patch,
       m.skill_bracket AS skill_bracket, count() AS games, sum(toUInt8(p.win)) AS wins
FROM (SELECT match_id, account_id, hero_id, win FROM match_players FINAL
      WHERE account_id IS NOT NULL) AS p
INNER JOIN (SELECT match_id, patch, skill_bracket FROM matches FINAL) AS m
    ON p.match_id = m.match_id
GROUP BY account_id, hero_id, patch, skill_bracket
"""


class ReadKind(StrEnum):
    """The fixed read queries of the warehouse (the methods of ClickHouseReader by name)."""

    HERO_COUNTS = "hero_counts"
    PAIR_COUNTS = "pair_counts"
    MATCH_DRAFTS = "match_drafts"
    PLAYER_HERO_RECORDS = "player_hero_records"
    PLAYER_HERO_GROUPS = "player_hero_groups"
    LATEST_LOADED_AT = "latest_loaded_at"
    HERO_POSITION_COUNTS = "hero_position_counts"


@dataclass(frozen=True)
class WarehouseRead:
    """One read query with its arguments, as ClickHouseReader.open_read runs it."""

    kind: ReadKind
    patch: str | None = None
    loaded_after: datetime | None = None
    loaded_until: datetime | None = None
    account_id: int = 0


# Strings as Arrow strings (not binary), as query_arrow asks for them.
_ARROW_SETTINGS = {"output_format_arrow_string_as_string": 1}


class ClickHouseReader:
    """The warehouse reads over one clickhouse-connect client; thread-safe for one process."""

    def __init__(self, client: Any) -> None:
        self._client = client
        # chdb's embedded session is not safe for concurrent queries from several threads.
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, dsn: str) -> Self:
        """Open the warehouse named by `dsn` (chdb:///dir or http(s)://user:pass@host:8123/db)."""
        return cls(clickhouse_connect.get_client(dsn=dsn))

    def close(self) -> None:
        """Release the connection (and, for chdb, the directory lock)."""
        with self._lock:
            self._client.close()

    def hero_counts(
        self,
        patch: str | None = None,
        loaded_after: datetime | None = None,
        loaded_until: datetime | None = None,
    ) -> pa.Table:
        """Games and wins per (patch, skill_bracket, hero_id) over complete 5v5 drafts of the
        matches first stored in (loaded_after, loaded_until] (an unset bound is open)."""
        return self._query_arrow(_HERO_COUNTS_SQL, patch, loaded_after, loaded_until)

    def pair_counts(
        self,
        patch: str | None = None,
        loaded_after: datetime | None = None,
        loaded_until: datetime | None = None,
    ) -> pa.Table:
        """Games and wins per (patch, skill_bracket, relation, hero_a, hero_b), over the same
        matches as hero_counts with the same bounds.

        relation 'vs': a on Radiant against b on Dire, wins = Radiant wins. relation 'with': a and
        b on the same team with a < b, wins = that team's wins. One direction only, half the rows
        of both: readers mirror them (vs (b, a) has games - wins wins; with is symmetric).
        """
        sql = _PAIR_COUNTS_SQL if loaded_after is None else _PAIR_DELTA_SQL
        return self._query_arrow(sql, patch, loaded_after, loaded_until)

    def match_drafts(self, patch: str | None = None) -> pa.Table:
        """One row per complete 5v5 match: match_id, start_time, patch, skill_bracket,
        radiant_win, radiant_heroes, dire_heroes; oldest first (for time-ordered model fits)."""
        return self._query_arrow(_MATCH_DRAFTS_SQL, patch, None, None)

    def hero_position_counts(self, patch: str | None = None) -> pa.Table:
        """Player-games per (patch, hero_id, position 1..5) of the players whose position is
        known, of one patch or of all."""
        with self._lock:
            return self._client.query_arrow(
                _POSITION_COUNTS_SQL, parameters={"patch": patch}, settings=_ARROW_SETTINGS
            )

    def player_hero_records(self, account_id: int) -> pa.Table:
        """The matches of one account: match_id, start_time, patch, skill_bracket, hero_id, win."""
        with self._lock:
            return self._client.query_arrow(
                _PLAYER_RECORDS_SQL, parameters={"account_id": account_id}
            )

    def player_hero_groups(self) -> pa.Table:
        """Games and wins per (account_id, hero_id, patch, skill_bracket) of known accounts: what
        the personal score's prior weight is fitted on."""
        with self._lock:
            return self._client.query_arrow(_PLAYER_GROUPS_SQL)

    @contextmanager
    def open_read(self, read: WarehouseRead) -> Iterator[pa.RecordBatchReader]:
        """The result of one read as record batches, decoded as they are read, for a caller
        that passes them on (ReadWarehouse) without holding the whole result.

        The warehouse is locked until the context exits: consume promptly. A ClickHouse server
        streams blocks as it computes them; embedded chdb hands over its whole Arrow output at
        once, which is still decoded batch by batch.
        """
        if read.kind is ReadKind.LATEST_LOADED_AT:
            table = pa.table(
                {"loaded_at": pa.array([self.latest_loaded_at()], pa.timestamp("ms", "UTC"))}
            )
            yield pa.RecordBatchReader.from_batches(table.schema, table.to_batches())
            return
        sql, parameters = _read_sql(read)
        with self._lock:
            raw = self._client.raw_stream(
                sql, parameters=parameters, settings=_ARROW_SETTINGS, fmt="ArrowStream"
            )
            try:
                with pa.ipc.open_stream(raw) as reader:
                    yield reader
            finally:
                raw.close()

    def latest_loaded_at(self) -> datetime | None:
        """When the newest stored match was loaded: the watermark of an incremental count."""
        with self._lock:
            value = self._client.command("SELECT max(loaded_at) FROM matches")
        if not value or str(value).startswith("1970"):
            return None
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)

    def _query_arrow(
        self,
        sql: str,
        patch: str | None,
        loaded_after: datetime | None,
        loaded_until: datetime | None,
    ) -> pa.Table:
        where, parameters = _filters(patch, loaded_after, loaded_until)
        with self._lock:
            return self._client.query_arrow(sql.format(where=where), parameters=parameters)


def _read_sql(read: WarehouseRead) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of one read (every kind but LATEST_LOADED_AT)."""
    if read.kind is ReadKind.PLAYER_HERO_RECORDS:
        return _PLAYER_RECORDS_SQL, {"account_id": read.account_id}
    if read.kind is ReadKind.PLAYER_HERO_GROUPS:
        return _PLAYER_GROUPS_SQL, {}
    if read.kind is ReadKind.MATCH_DRAFTS:
        where, parameters = _filters(read.patch, None, None)
        return _MATCH_DRAFTS_SQL.format(where=where), parameters
    if read.kind is ReadKind.HERO_POSITION_COUNTS:
        return _POSITION_COUNTS_SQL, {"patch": read.patch}
    if read.kind is ReadKind.HERO_COUNTS:
        sql = _HERO_COUNTS_SQL
    elif read.kind is ReadKind.PAIR_COUNTS:
        sql = _PAIR_COUNTS_SQL if read.loaded_after is None else _PAIR_DELTA_SQL
    else:
        raise ValueError(f"no SQL for {read.kind}")
    where, parameters = _filters(read.patch, read.loaded_after, read.loaded_until)
    return sql.format(where=where), parameters


def _filters(
    patch: str | None, loaded_after: datetime | None, loaded_until: datetime | None
) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (over `matches FINAL`) and its parameters for one read.

    A match belongs to the window its first stored copy falls in: (loaded_after, loaded_until].
    FINAL keeps a re-inserted match's newest copy, whose loaded_at is not when it was first
    stored, so the window is tested on every copy by id: an incremental read counts a match only
    if it has a copy inside the window and none at or before its start, and a bounded full read
    counts one whose newest copy is after the bound but an older one is not. The id sets of the
    subqueries hold only the matches stored inside the window or after the bound (a few thousand
    between two runs), and ids narrow the outer read through the primary key.

    Background merges drop a re-inserted match's older copies; after that its first load time is
    lost and an incremental read may count it again. Re-insertion is rare (the etl skips stored
    ids; ReprocessMatch and repeated imports re-insert) and the periodic full recount repairs it.
    """
    # A match without a known patch (undated pro drafts) belongs to no patch's statistics.
    where = ["length(radiant_heroes) = 5", "length(dire_heroes) = 5", "patch != ''"]
    parameters: dict[str, Any] = {}
    if patch is not None:
        where.append("patch = {patch:String}")
        parameters["patch"] = patch
    after = "{after:DateTime64(3, 'UTC')}"
    until = "{until:DateTime64(3, 'UTC')}"
    if loaded_after is not None:
        parameters["after"] = _utc_naive(loaded_after)
    if loaded_until is not None:
        parameters["until"] = _utc_naive(loaded_until)
    if loaded_after is not None:
        window = f"loaded_at > {after}" + (
            f" AND loaded_at <= {until}" if loaded_until is not None else ""
        )
        in_window = f"SELECT match_id FROM matches WHERE {window}"  # noqa: S608 - constants
        where.append(
            f"match_id IN ({in_window}) AND match_id NOT IN "  # noqa: S608 - constants
            f"(SELECT match_id FROM matches WHERE loaded_at <= {after} "
            f"AND match_id IN ({in_window}))"
        )
    elif loaded_until is not None:
        where.append(
            f"(loaded_at <= {until} OR match_id IN "  # noqa: S608 - constants
            f"(SELECT match_id FROM matches WHERE loaded_at <= {until} AND match_id IN "
            f"(SELECT match_id FROM matches WHERE loaded_at > {until})))"
        )
    return " AND ".join(where), parameters


def _utc_naive(moment: datetime) -> datetime:
    """A DateTime64(3, 'UTC') parameter: UTC wall time, without tzinfo."""
    return moment.astimezone(UTC).replace(tzinfo=None)

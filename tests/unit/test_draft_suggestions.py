"""The suggestions adapter while ModelService is down: retries are jittered, end after the retry
window, and only a bounded number of drafts retry at a time per replica."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from services.common.dota import Side, SkillBracket
from services.common.dota_constants import load_constants
from services.draft.drafts import Drafts, NewDraft
from services.draft.modes import DraftMode
from services.draft.rooms import Actor, CreatorSeat, DraftDocument
from services.draft.suggestions import Suggester, no_token
from tests.conftest import free_port
from tests.unit.test_draft_rooms import MemoryStore

CONSTANTS = load_constants()


@dataclass
class Appended:
    draft_id: str
    sequence: int


class Store(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.appended: list[Appended] = []

    async def append(self, draft_id: str, sequence: int, payload: dict[str, Any]) -> None:
        self.appended.append(Appended(draft_id, sequence))


async def documents(store: Store, count: int) -> list[DraftDocument]:
    app = Drafts(store, CONSTANTS, now=lambda: datetime.now(UTC))
    new = NewDraft(
        mode=DraftMode.CAPTAINS_MODE,
        patch="7.41",
        bracket=SkillBracket.ALL,
        our_side=Side.RADIANT,
        account_id=None,
        first_pick=Side.RADIANT,
        seat=CreatorSeat.BOTH,
        timers=None,
    )
    return [(await app.create(Actor("alice"), new))[0] for _ in range(count)]


async def test_retries_end_after_the_window_and_are_bounded_per_replica() -> None:
    store = Store()
    # Nothing listens there: every model call fails at once with UNAVAILABLE.
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}")
    try:
        suggester = Suggester(
            store,
            channel,
            None,
            no_token,
            frozenset(CONSTANTS.heroes),
            call_timeout=0.5,
            retry_seconds=(0.05, 0.1),
            retry_window_seconds=0.5,
            max_retrying=2,
        )
        drafts = await documents(store, 5)
        started = time.monotonic()
        for document in drafts:
            suggester.schedule(document)
        await asyncio.sleep(0.2)
        assert suggester.retrying == 2  # the other three gave up at once
        async with asyncio.timeout(3):
            await asyncio.gather(*suggester._tasks.values())
        assert time.monotonic() - started < 2
        assert suggester.retrying == 0
        assert store.appended == []
    finally:
        await channel.close()

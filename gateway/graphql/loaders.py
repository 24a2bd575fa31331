"""Hero lookups: a per-process catalog (ListHeroes, cached with a TTL since heroes change only
with the game's constants) and a per-request DataLoader over it, so resolving every hero of a
response costs at most one ListHeroes call and usually none."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from strawberry.dataloader import DataLoader

from counterpick.model.v1 import model_service_pb2 as model_pb
from gateway.clients import MeshClients
from gateway.graphql.types import Hero

HERO_TTL_SECONDS = 300.0


class HeroCatalog:
    """Every hero of the current patch, fetched at most once per TTL per edge process. While the
    model service is unreachable the last good list is served; with none, the error propagates."""

    def __init__(self, clients: MeshClients, ttl_seconds: float = HERO_TTL_SECONDS) -> None:
        self.clients = clients
        self.ttl_seconds = ttl_seconds
        self._heroes: dict[int, Hero] | None = None
        self._order: list[Hero] = []
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    def _fresh(self) -> bool:
        return self._heroes is not None and time.monotonic() - self._fetched_at < self.ttl_seconds

    async def heroes(self, token: str | None) -> dict[int, Hero]:
        """Hero id -> Hero."""
        if self._fresh():
            assert self._heroes is not None
            return self._heroes
        async with self._lock:
            if self._fresh():
                assert self._heroes is not None
                return self._heroes
            try:
                response = await self.clients.list_heroes(model_pb.ListHeroesRequest(), token)
            except Exception:
                if self._heroes is not None:
                    return self._heroes
                raise
            self.fetches += 1
            self._order = [Hero.from_pb(s) for s in response.heroes]
            self._heroes = {hero.id: hero for hero in self._order}
            self._fetched_at = time.monotonic()
            return self._heroes

    async def ordered(self, token: str | None) -> list[Hero]:
        """Every hero, in the service's order."""
        await self.heroes(token)
        return list(self._order)


def hero_loader(catalog: HeroCatalog, token: str | None) -> DataLoader[int, Hero]:
    """A request's hero DataLoader: one batch per tick, answered from the catalog."""

    async def load(ids: Sequence[int]) -> list[Hero]:
        heroes = await catalog.heroes(token)
        return [heroes.get(hero_id) or Hero.unknown(hero_id) for hero_id in ids]

    return DataLoader(load_fn=load)

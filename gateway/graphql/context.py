"""Per-request GraphQL context: the mesh clients, the caller's token and request-scoped loaders."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING

from strawberry.dataloader import DataLoader
from strawberry.fastapi import BaseContext

from counterpick.common.v1 import common_pb2 as c
from counterpick.draft.v1 import draft_service_pb2 as draft_pb
from counterpick.model.v1 import model_service_pb2 as model_pb
from gateway.clients import MeshClients
from gateway.graphql.errors import EdgeError, unauthenticated
from gateway.graphql.loaders import HeroCatalog, hero_loader
from gateway.graphql.types import Hero, Suggestion, Suggestions
from services.common.tokens import Caller, TokenVerifier

if TYPE_CHECKING:
    from gateway.graphql.subscriptions import FeedOpener


def parse_bearer(value: object) -> str | None:
    """The token of "Bearer <token>"; None when absent. A malformed value is refused rather
    than silently read as anonymous."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise EdgeError("authorization must be a string", "UNAUTHENTICATED")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise EdgeError(
            "authorization is not 'Bearer <token>'",
            "UNAUTHENTICATED",
            reason="ERROR_REASON_TOKEN_INVALID",
        )
    return token.strip()


class Context(BaseContext):
    """What resolvers share within one request (or one WebSocket connection)."""

    def __init__(
        self,
        clients: MeshClients,
        catalog: HeroCatalog | None = None,
        *,
        authorization: str | None = None,
        verifier: TokenVerifier | None = None,
        feed: FeedOpener | None = None,
        operator: bool = False,
    ) -> None:
        super().__init__()
        # The request carried the operator token (X-Operator-Token): it may see internal facts
        # such as the services' addresses. Admins qualify through their token (see `is_operator`).
        self.operator = operator
        self.clients = clients
        self.catalog = catalog or HeroCatalog(clients)
        self.authorization = authorization
        self.verifier = verifier
        self.feed = feed

    @property
    def token(self) -> str | None:
        """The caller's access token: the Authorization header, or for a WebSocket the
        graphql-transport-ws connection_init payload's "authorization"."""
        if self.authorization:
            return parse_bearer(self.authorization)
        params = self.connection_params
        if isinstance(params, dict):
            return parse_bearer(params.get("authorization") or params.get("Authorization"))
        return None

    def require_token(self, what: str) -> str:
        """The token, or UNAUTHENTICATED for an anonymous caller."""
        token = self.token
        if token is None:
            raise unauthenticated(what)
        return token

    async def is_operator(self) -> bool:
        """The operator token, or an admin's verified access token."""
        if self.operator:
            return True
        if self.token is None or self.verifier is None:
            return False
        try:
            caller = await self.verifier.verify(self.token)
        except Exception:
            return False
        return caller.has_any_role("admin")

    async def caller(self, what: str) -> Caller:
        """The verified caller (for facts only the token holds: roles, jti)."""
        token = self.require_token(what)
        if self.verifier is None:
            raise EdgeError("token verification is not configured", "UNAVAILABLE")
        from services.common.errors import CounterpickError
        from services.common.tokens import TokenExpired

        try:
            return await self.verifier.verify(token)
        except TokenExpired as error:
            raise EdgeError(
                error.message, "UNAUTHENTICATED", reason="ERROR_REASON_TOKEN_EXPIRED"
            ) from None
        except CounterpickError as error:
            code = "UNAVAILABLE" if error.status_code_name == "UNAVAILABLE" else "UNAUTHENTICATED"
            raise EdgeError(error.message, code, reason=error.reason) from None

    @cached_property
    def heroes(self) -> DataLoader[int, Hero]:
        """Hero id -> Hero, batched per request."""
        return hero_loader(self.catalog, self.token)

    async def hero_catalog(self) -> Mapping[int, Hero]:
        """Every hero by id (the process's cached catalog; a ListHeroes call when stale)."""
        return await self.catalog.heroes(self.token)

    async def draft_suggestions(self, draft: draft_pb.Draft, side: int) -> Suggestions:
        """Pick and ban suggestions for `side` in `draft` (two model calls, concurrently)."""
        team = c.TeamSide.ValueType(side)
        picks, bans, heroes = await asyncio.gather(
            self.clients.suggest_picks(
                model_pb.SuggestPicksRequest(
                    draft=draft.state, side=team, patch=draft.patch, bracket=draft.bracket
                ),
                self.token,
            ),
            self.clients.suggest_bans(
                model_pb.SuggestBansRequest(
                    draft=draft.state, side=team, patch=draft.patch, bracket=draft.bracket
                ),
                self.token,
            ),
            self.hero_catalog(),
        )
        from gateway.graphql.types import Side

        return Suggestions(
            side=Side(side),
            picks=[Suggestion.from_pb(s, heroes) for s in picks.suggestions],
            bans=[Suggestion.from_pb(s, heroes) for s in bans.suggestions],
            win_probability=picks.base_win_probability,
            model_version=picks.model_version,
            fallback_note=picks.fallback_note or None,
        )

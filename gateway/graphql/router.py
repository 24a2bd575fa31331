"""The /graphql router: HTTP queries and mutations, graphql-transport-ws subscriptions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import Response
from starlette.requests import HTTPConnection
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from gateway.clients import MeshClients, client_address
from gateway.graphql.context import Context
from gateway.graphql.errors import REQUEST_CODES
from gateway.graphql.loaders import HeroCatalog
from gateway.graphql.schema import schema
from gateway.graphql.subscriptions import FeedOpener
from gateway.security import OPERATOR_HEADER
from services.common.tokens import TokenVerifier


def _request_error(response_data: Any) -> bool:
    """An answer without data whose errors are all about the request itself (parse, validation,
    limits): GraphQL over HTTP says 400 for those."""
    if not isinstance(response_data, dict) or response_data.get("data") is not None:
        return False
    errors = response_data.get("errors") or []
    return bool(errors) and all(
        (e.get("extensions") or {}).get("code") in REQUEST_CODES for e in errors
    )


class EdgeGraphQLRouter(GraphQLRouter[Context, None]):
    """GraphQLRouter answering 400 to documents refused before execution, with orjson for
    request and response bodies (the standard library's json was ~3% of a suggestPicks)."""

    def decode_json(self, data: str | bytes) -> object:
        # orjson.JSONDecodeError subclasses json.JSONDecodeError: a bad body is still a 400.
        return orjson.loads(data)

    def encode_json(self, data: object) -> str:
        # A str, not bytes: strawberry sends bytes on a WebSocket as binary frames, and
        # graphql-transport-ws clients expect text.
        return orjson.dumps(data).decode()

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        if _request_error(response_data):
            sub_response.status_code = 400
        return super().create_response(response_data, sub_response)


def graphql_router(
    clients: Callable[[], MeshClients],
    verifier: TokenVerifier | None = None,
    feed: Callable[[], FeedOpener | None] = lambda: None,
    operator_token: Callable[[str | None], bool] = lambda _: False,
) -> GraphQLRouter[Context, None]:
    """The router to mount at /graphql; `clients` gives the process's mesh clients."""
    catalogs: dict[int, HeroCatalog] = {}

    def catalog_for(mesh: MeshClients) -> HeroCatalog:
        # One hero catalog per MeshClients (i.e. per app lifespan).
        key = id(mesh)
        if key not in catalogs:
            catalogs.clear()
            catalogs[key] = HeroCatalog(mesh)
        return catalogs[key]

    async def get_context(connection: HTTPConnection) -> Context:
        mesh = clients()
        if connection.client is not None:
            client_address.set(connection.client.host)
        return Context(
            mesh,
            catalog_for(mesh),
            authorization=connection.headers.get("authorization"),
            verifier=verifier,
            feed=feed(),
            operator=operator_token(connection.headers.get(OPERATOR_HEADER)),
        )

    getter: Callable[..., Awaitable[Context]] = get_context
    return EdgeGraphQLRouter(
        schema,
        context_getter=getter,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        # No GraphiQL: strawberry's page loads its scripts from a CDN, which the edge's CSP
        # refuses (and an offline install cannot reach); it rendered blank. The schema is
        # gateway/schema.graphql, for any GraphQL client.
        graphql_ide=None,
    )

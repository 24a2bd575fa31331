"""draftUpdates: a draft's events over graphql-transport-ws.

The caller is authorized with GetDraft (its own token) before any event flows; then the events
come from a feed opener. Today's opener is one WatchDraft per subscriber with the caller's token;
the shared per-process feed (gateway/draft_feed.py: one WatchDraft per draft, fanned out) plugs
in as another `FeedOpener` without changing the resolver.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import grpc
import strawberry

from counterpick.draft.v1 import draft_service_pb2 as draft_pb
from gateway.clients import MeshClients
from gateway.draft_feed import DraftFeed, FeedError
from gateway.graphql.context import Context
from gateway.graphql.errors import EdgeError, from_rpc_error
from gateway.graphql.types import DraftUpdate

# (clients, token, draft id, resume after) -> a context manager yielding the draft's messages.
FeedOpener = Callable[
    [MeshClients, str | None, str, int | None],
    AbstractAsyncContextManager[AsyncIterator[draft_pb.WatchDraftResponse]],
]


@asynccontextmanager
async def watch_directly(
    clients: MeshClients, token: str | None, draft_id: str, resume_after: int | None
) -> AsyncIterator[AsyncIterator[draft_pb.WatchDraftResponse]]:
    """One WatchDraft stream for this subscriber, cancelled when it leaves."""
    stream = clients.watch_draft(
        draft_pb.WatchDraftRequest(draft_id=draft_id, resume_after_sequence=resume_after), token
    )
    try:
        yield stream
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


# The feed's failures (gRPC status code names) as the GraphQL codes the rest of the API uses.
_FEED_CODES = {"NOT_FOUND": "NOT_FOUND", "PERMISSION_DENIED": "FORBIDDEN"}


def shared_feed(feed: DraftFeed) -> FeedOpener:
    """The opener over the edge's shared feed: every subscriber of a draft, GraphQL or /ws,
    rides one WatchDraft (opened by the edge as itself), each event converted once. The caller
    was authorized with their own token before (resolve_draft_updates)."""

    @asynccontextmanager
    async def open_shared(
        clients: MeshClients, token: str | None, draft_id: str, resume_after: int | None
    ) -> AsyncIterator[AsyncIterator[draft_pb.WatchDraftResponse]]:
        del clients, token  # the feed calls as the edge; the caller was checked already
        async with feed.subscribe(draft_id, resume_after) as events:

            async def messages() -> AsyncIterator[draft_pb.WatchDraftResponse]:
                try:
                    async for event in events:
                        yield event.message
                except FeedError as error:
                    raise EdgeError(
                        error.message, _FEED_CODES.get(error.code, "UNAVAILABLE")
                    ) from None

            yield messages()

    return open_shared


def _mapped(error: grpc.aio.AioRpcError) -> EdgeError:
    return from_rpc_error(error) or EdgeError("internal error", "INTERNAL_SERVER_ERROR")


async def resolve_draft_updates(
    info: strawberry.Info[Context, None],
    id: strawberry.ID,
    resume_after: int | None = None,
) -> AsyncGenerator[DraftUpdate]:
    context = info.context
    token = context.token
    try:
        await context.clients.get_draft(str(id), token)  # authorization, and existence
        opener = context.feed or watch_directly
        async with opener(context.clients, token, str(id), resume_after) as messages:
            async for message in messages:
                suggestions = message.WhichOneof("event") == "suggestions_updated"
                heroes = await context.hero_catalog() if suggestions else {}
                yield DraftUpdate.from_pb(message, heroes)
    except grpc.aio.AioRpcError as error:
        raise _mapped(error) from None


@strawberry.type
class Subscription:
    draft_updates = strawberry.subscription(
        resolver=resolve_draft_updates,
        description="A draft's events in order: a snapshot first (unless resuming), then each "
        "action, skipped ban, suggestion update and the completion. Resume with the last "
        "sequence seen to miss nothing.",
    )

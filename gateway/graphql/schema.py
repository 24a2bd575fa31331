"""The public GraphQL schema of the edge: queries, mutations, the draftUpdates subscription,
limits and error mapping."""

from __future__ import annotations

import strawberry
from strawberry.schema.config import StrawberryConfig

from gateway.graphql.document_cache import DocumentCache
from gateway.graphql.errors import GraphQLErrors
from gateway.graphql.limits import limit_extensions_list
from gateway.graphql.mutations import Mutation
from gateway.graphql.queries import Query
from gateway.graphql.subscriptions import Subscription

schema = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    config=StrawberryConfig(auto_camel_case=True),
    extensions=[
        # Pages and overlays send the same few documents over and over: parsing and validating
        # them (with the limit rules) depends only on the text, never on variables, so it is done
        # once per distinct text (see document_cache.py).
        DocumentCache,
        *limit_extensions_list(),
        GraphQLErrors,
    ],
)

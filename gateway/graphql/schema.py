"""The public GraphQL schema of the edge: queries, mutations, the draftUpdates subscription,
limits and error mapping."""

from __future__ import annotations

from functools import partial

import strawberry
from strawberry.extensions import ValidationCache
from strawberry.schema.config import StrawberryConfig

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
        # Pages and overlays send the same few documents over and over: validating them (with
        # the limit rules) was 60% of a suggestPicks request's CPU (bench.edge profile). It
        # depends only on the document, never on variables, so caching it is exact. (strawberry's
        # ParserCache would hide parse errors from GraphQLErrors' classification.)
        partial(ValidationCache, maxsize=512),
        *limit_extensions_list(),
        GraphQLErrors,
    ],
)

"""The public GraphQL schema of the edge: queries, mutations, the draftUpdates subscription,
limits and error mapping."""

from __future__ import annotations

import strawberry
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
    extensions=[*limit_extensions_list(), GraphQLErrors],
)

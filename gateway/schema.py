"""The public GraphQL schema (re-exported from gateway.graphql, where it is built)."""

from gateway.graphql.context import Context
from gateway.graphql.schema import schema

__all__ = ["Context", "schema"]

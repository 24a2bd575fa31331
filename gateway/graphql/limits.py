"""Limits on what one GraphQL document may ask: depth, aliases, tokens and a cost.

Depth and aliases use strawberry's limiters; the cost is a validation rule of our own that
weights list fields, so a query that fans out (30 aliased suggestPicks, or heroes inside heroes)
is refused before any gRPC call. Refusals carry `extensions.code` QUERY_TOO_COMPLEX and
`extensions.limit` ("depth", "aliases", "tokens" or "cost").
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValidationRule,
    get_named_type,
)
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, SchemaExtension
from strawberry.extensions.max_aliases import create_validator as aliases_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule

MAX_DEPTH = 10
MAX_ALIASES = 30
MAX_TOKENS = 2000
MAX_COST = 2000
# How many items a list field is assumed to return when no `limit` argument says so.
DEFAULT_LIST_SIZE = 10
MAX_LIST_SIZE = 50
TOO_COMPLEX = "QUERY_TOO_COMPLEX"


def _is_list(type_: Any) -> bool:
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    return isinstance(type_, GraphQLList)


def _list_size(node: FieldNode) -> int:
    for argument in node.arguments or ():
        if argument.name.value == "limit" and isinstance(argument.value, IntValueNode):
            return max(1, min(int(argument.value.value), MAX_LIST_SIZE))
    return DEFAULT_LIST_SIZE


class CostLimit(ValidationRule):
    """Cost of a field = 1 + (expected list size, or 1) x the cost of its selections."""

    max_cost = MAX_COST

    def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
        schema = self.context.schema
        root = {
            OperationType.QUERY: schema.query_type,
            OperationType.MUTATION: schema.mutation_type,
            OperationType.SUBSCRIPTION: schema.subscription_type,
        }[node.operation]
        if root is None:
            return
        cost = self._cost(root, node.selection_set, frozenset())
        if cost > self.max_cost:
            self.report_error(
                GraphQLError(
                    f"query cost {cost} exceeds the limit of {self.max_cost}",
                    node,
                    extensions={
                        "code": TOO_COMPLEX,
                        "limit": "cost",
                        "cost": cost,
                        "maxCost": self.max_cost,
                    },
                )
            )

    def _cost(
        self, parent: GraphQLNamedType, selections: SelectionSetNode | None, seen: frozenset[str]
    ) -> int:
        total = 0
        for selection in selections.selections if selections else ():
            if isinstance(selection, FieldNode):
                fields = parent.fields if isinstance(parent, GraphQLObjectType) else {}
                definition = fields.get(selection.name.value)
                if definition is None:  # __typename, or an unknown field another rule reports
                    total += 1
                    continue
                inner = self._cost(get_named_type(definition.type), selection.selection_set, seen)
                factor = _list_size(selection) if _is_list(definition.type) else 1
                total += 1 + factor * inner
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = self.context.schema.get_type(condition.name.value) if condition else parent
                total += self._cost(target or parent, selection.selection_set, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.context.get_fragment(name)
                if fragment is None or name in seen:
                    continue
                target = self.context.schema.get_type(fragment.type_condition.name.value)
                total += self._cost(target or parent, fragment.selection_set, seen | {name})
        return total


def limit_extensions(error: GraphQLError) -> dict[str, Any] | None:
    """QUERY_TOO_COMPLEX extensions for a refusal by strawberry's limiters, else None."""
    message = error.message
    if "exceeds maximum operation depth" in message:
        return {"code": TOO_COMPLEX, "limit": "depth", "maxDepth": MAX_DEPTH}
    if "aliases found" in message:
        return {"code": TOO_COMPLEX, "limit": "aliases", "maxAliases": MAX_ALIASES}
    if "more than" in message and "tokens" in message:
        return {"code": TOO_COMPLEX, "limit": "tokens", "maxTokens": MAX_TOKENS}
    return None


# The limit rules, built once: strawberry's QueryDepthLimiter and MaxAliasesLimiter extensions
# build a new rule class each time they are instantiated, i.e. per request, so the validation
# cache (keyed by document and rule classes) never hit and every request was validated afresh.
LIMIT_RULES: tuple[type[ValidationRule], ...] = (
    depth_rule(MAX_DEPTH, None),
    aliases_rule(MAX_ALIASES),
    CostLimit,
)


def limit_extensions_list() -> list[Callable[[], SchemaExtension]]:
    """The schema extensions enforcing the limits (same rule classes for every request)."""
    return [
        partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
        partial(AddValidationRules, list(LIMIT_RULES)),
    ]

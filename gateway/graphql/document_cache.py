"""Parse and validate each distinct GraphQL document once per process, keyed by its text.

Pages and overlays send the same few documents over and over. Parsing one and validating it
(limit rules included) depends only on its text and the schema's rules, never on variables, so
the parsed document and its validation errors are kept in a bounded LRU keyed by the text and the
rule classes. A text that does not parse is not cached: the parse error takes strawberry's normal
path, so `GraphQLErrors` still classifies it (strawberry's ParserCache raises it from the
extension instead).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from graphql import ASTValidationRule, DocumentNode, GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

# Distinct documents kept; a client sending unique texts only ever evicts, never grows memory.
MAX_DOCUMENTS = 512

_Key = tuple[str, tuple[type[ASTValidationRule], ...]]


class _Documents:
    """LRU of query text (and rules) -> parsed document and its validation errors."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[_Key, tuple[DocumentNode, list[GraphQLError]]] = OrderedDict()

    def get(self, key: _Key) -> tuple[DocumentNode, list[GraphQLError]] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: _Key, document: DocumentNode, errors: list[GraphQLError]) -> None:
        self._entries[key] = (document, errors)
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


DOCUMENTS = _Documents(MAX_DOCUMENTS)


class DocumentCache(SchemaExtension):
    """Reuses the parsed document and the validation result of a text seen before."""

    def __init__(self) -> None:
        self._key: _Key | None = None
        self._hit: tuple[DocumentNode, list[GraphQLError]] | None = None

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query is not None and context.graphql_document is None:
            # The rules are set by AddValidationRules.on_operation, before parsing.
            self._key = (context.query, context.validation_rules)
            self._hit = DOCUMENTS.get(self._key)
            if self._hit is not None:
                # strawberry parses only when no document is set yet.
                context.graphql_document = self._hit[0]
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if self._hit is not None:
            context.pre_execution_errors = list(self._hit[1])
        elif (
            self._key is not None
            and context.graphql_document is not None
            and context.pre_execution_errors is None
        ):
            errors = validate_document(
                context.schema._schema, context.graphql_document, context.validation_rules
            )
            DOCUMENTS.put(self._key, context.graphql_document, errors)
            context.pre_execution_errors = list(errors)
        yield

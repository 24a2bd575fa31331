"""The GraphQL limit rules validate a document once, not once per request."""

from __future__ import annotations

import pytest

from gateway.graphql.limits import CostLimit
from gateway.graphql.schema import schema


async def test_a_repeated_document_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    validations = 0
    original = CostLimit.enter_operation_definition

    def counting(self: CostLimit, *args: object) -> None:
        nonlocal validations
        validations += 1
        original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(CostLimit, "enter_operation_definition", counting)
    query = "query RepeatedForTheCache { __typename }"
    for _ in range(3):
        result = await schema.execute(query)
        assert result.errors is None
    # The cache is keyed by the document and the rule classes: rules rebuilt per request (as
    # strawberry's QueryDepthLimiter does) made every request a miss.
    assert validations == 1

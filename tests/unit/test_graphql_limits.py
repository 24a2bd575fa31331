"""The edge parses and validates a GraphQL document once per distinct text, not once per request,
and refusals are the same whether or not the text was seen before."""

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
        assert result.data == {"__typename": "Query"}
    # Rules rebuilt per request (as strawberry's QueryDepthLimiter does) made every request a
    # miss of a cache keyed by the rule classes.
    assert validations == 1


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("{ heroes { id ", "GRAPHQL_PARSE_FAILED"),
        ("{ noSuchField }", "GRAPHQL_VALIDATION_FAILED"),
        ("{ heroes " + "{ a " * 12 + "}" * 13, "QUERY_TOO_COMPLEX"),
    ],
)
async def test_a_refused_document_is_refused_the_same_way_every_time(query: str, code: str) -> None:
    answers = [await schema.execute(query) for _ in range(3)]
    refusals = {
        tuple((e.message, (e.extensions or {}).get("code")) for e in a.errors or ())
        for a in answers
    }
    assert len(refusals) == 1
    assert all(answer.data is None for answer in answers)
    assert code in {code for _, code in refusals.pop()}

"""The SDL export: staleness is detected, and breaking changes against a baseline are named."""

from __future__ import annotations

from pathlib import Path

from gateway.export_schema import breaking_changes, current_sdl, stale


def test_the_checked_in_sdl_is_current() -> None:
    assert not stale()


def test_a_changed_or_missing_file_is_stale(tmp_path: Path) -> None:
    sdl = tmp_path / "schema.graphql"
    assert stale(sdl)
    sdl.write_text(current_sdl().replace("localizedName", "displayName"))
    assert stale(sdl)
    sdl.write_text(current_sdl())
    assert not stale(sdl)


def test_removing_a_field_is_breaking_and_adding_one_is_not() -> None:
    old = "type Query { heroes: [String!]! hero(id: Int!): String }"
    assert breaking_changes(old, "type Query { heroes: [String!]! }") == [
        "FIELD_REMOVED: Field Query.hero was removed."
    ]
    assert breaking_changes(old, old.replace("}", " modelInfo: String }")) == []
    assert breaking_changes("", "type Query { a: Int }") == []

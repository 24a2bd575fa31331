"""Which dead letters are open and which a replay selects (pure logic)."""

from __future__ import annotations

import dataclasses

from services.etl.dead_letters import Letter, count_by_reason, open_letters, select


def _letter(offset: int, match_id: int | None, reason: str, failed_at: float) -> Letter:
    return Letter(
        partition=0,
        offset=offset,
        key=str(match_id).encode(),
        value=b"ref",
        match_id=match_id,
        reason=reason,
        detail=f"letter {offset}",
        failed_at=failed_at,
        original_topic="raw",
        original_partition=1,
        original_offset=100 + offset,
    )


def test_a_match_with_several_letters_is_listed_once_with_its_newest() -> None:
    letters = [
        _letter(0, 7, "unknown_hero", 10.0),
        _letter(1, 8, "fetch_failed", 11.0),
        _letter(2, 7, "invalid_value", 12.0),
    ]
    opened, replayed = open_letters(letters, set())
    assert replayed == 0
    assert [o.newest.offset for o in opened] == [2, 1]  # newest first
    assert [letter.offset for letter in opened[0].letters] == [2, 0]
    assert count_by_reason(opened) == {"invalid_value": 1, "fetch_failed": 1}


def test_replayed_letters_are_closed_and_a_new_failure_opens_the_match_again() -> None:
    letters = [_letter(0, 7, "unknown_hero", 10.0), _letter(1, 8, "fetch_failed", 11.0)]
    opened, replayed = open_letters(letters, {(0, 0)})
    assert (replayed, [o.newest.match_id for o in opened]) == (1, [8])
    letters.append(_letter(2, 7, "unknown_hero", 20.0))  # the replay failed again
    opened, replayed = open_letters(letters, {(0, 0)})
    assert replayed == 1
    assert sorted(o.newest.offset for o in opened) == [1, 2]
    assert all(len(o.letters) == 1 for o in opened)


def test_letters_without_a_match_id_are_told_apart_by_their_record() -> None:
    first = _letter(0, None, "malformed_message", 1.0)
    second = dataclasses.replace(first, offset=1, original_offset=555)
    opened, _ = open_letters([first, second], set())
    assert len(opened) == 2


def test_select_by_match_and_by_reason() -> None:
    letters = [
        _letter(0, 7, "unknown_hero", 10.0),
        _letter(1, 8, "fetch_failed", 11.0),
        _letter(2, 9, "unknown_hero", 12.0),
    ]
    opened, _ = open_letters(letters, set())
    assert [o.newest.match_id for o in select(opened, match_ids={7, 8})] == [8, 7]
    assert [o.newest.match_id for o in select(opened, reason="unknown_hero")] == [9, 7]
    assert select(opened, match_ids={7}, reason="fetch_failed") == []
    assert len(select(opened)) == 3
    assert select(opened, match_ids={404}) == []

"""gateway.gc_policy: a full collection's survivors are frozen, and thawed again every
`thaw_seconds` so that cycles among them are collected in the end."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway.gc_policy import FreezeSurvivors


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.usefixtures("thawed")
def test_survivors_of_a_full_collection_are_frozen_and_thawed_in_time() -> None:
    policy = FreezeSurvivors(thaw_seconds=3600)
    policy("stop", {"generation": 1, "collected": 0, "uncollectable": 0})
    assert gc.get_freeze_count() == 0  # only full collections freeze
    policy("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    assert gc.get_freeze_count() > 0
    assert policy.freezes == 1

    policy.thawed_at -= 3600  # the thaw period is over
    policy("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    assert gc.get_freeze_count() == 0
    assert policy.thaws == 1


@pytest.mark.usefixtures("thawed")
def test_a_cycle_frozen_then_dropped_is_collected_after_the_thaw() -> None:
    class Node:
        peer: object

    policy = FreezeSurvivors(thaw_seconds=3600)
    node = Node()
    node.peer = node
    alive = weakref.ref(node)
    policy("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    del node
    gc.collect()
    assert alive() is not None  # frozen: the collector does not look at it
    policy.thawed_at -= 3600
    policy("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    gc.collect()
    assert alive() is None

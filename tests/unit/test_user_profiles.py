"""The user domain without I/O: who may address whom, display fields, preference rules, plans,
and the rate limiter's caller keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.common.dota import SkillBracket
from services.common.errors import (
    CounterpickError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
)
from services.common.rate_limit import Quota, caller_key, peer_host
from services.common.tokens import Caller
from services.user.migrations import check_schema_name, migrations, redacted_dsn
from services.user.profiles import (
    FIRST_INDIVIDUAL_STEAMID64,
    LAST_INDIVIDUAL_STEAMID64,
    Access,
    DisplayField,
    PreferenceField,
    Preferences,
    Profile,
    Subscription,
    Tier,
    VersionMismatch,
    check_expected_version,
    parse_user_id,
    preferences_update,
    profile_update,
    resolve_target,
    steam_identity,
    stored_bracket,
    validate_avatar_url,
    validate_persona_name,
)

HEROES = frozenset(range(1, 140))
ALICE = "0b6f2c1e-5f7a-4d7e-9a47-2b8c6f1d3e90"
BOB = "7d1e0c4a-3b2f-4e8d-9c6b-5a4f3e2d1c0b"


def caller(user_id: str = ALICE, *roles: str) -> Caller:
    return Caller(user_id=user_id, roles=frozenset(roles or ("user",)), jti="j", expires_at=0)


def field_of(error: CounterpickError) -> str:
    return error.metadata["field"]


# -- addressing ---------------------------------------------------------------------------------


def test_an_empty_user_id_is_the_caller() -> None:
    assert resolve_target(caller(), "", Access.READ) == uuid.UUID(ALICE)
    assert resolve_target(caller(), None, Access.WRITE) == uuid.UUID(ALICE)
    assert resolve_target(caller(), ALICE.upper(), Access.WRITE) == uuid.UUID(ALICE)


@pytest.mark.parametrize(
    ("roles", "access", "allowed"),
    [
        (("user",), Access.READ, False),
        (("user",), Access.WRITE, False),
        (("admin",), Access.READ, True),
        (("admin",), Access.WRITE, True),
        (("service",), Access.READ, True),
        (("service",), Access.WRITE, False),
        (("user", "admin"), Access.WRITE, True),
    ],
)
def test_addressing_another_user_needs_a_role(
    roles: tuple[str, ...], access: Access, allowed: bool
) -> None:
    if allowed:
        assert resolve_target(caller(ALICE, *roles), BOB, access) == uuid.UUID(BOB)
    else:
        with pytest.raises(PermissionDenied) as raised:
            resolve_target(caller(ALICE, *roles), BOB, access)
        assert BOB not in raised.value.message


def test_a_service_or_non_user_token_must_name_the_user() -> None:
    for who in (caller("svc-auth", "service"), caller(ALICE, "service"), caller("not-a-uuid")):
        with pytest.raises(InvalidArgument) as raised:
            resolve_target(who, "", Access.READ)
        assert field_of(raised.value) == "user_id"


@pytest.mark.parametrize(
    "text",
    [
        "nope",
        "' OR 1=1 --",
        "0b6f2c1e5f7a4d7e9a472b8c6f1d3e90",  # hex without hyphens
        "{0b6f2c1e-5f7a-4d7e-9a47-2b8c6f1d3e90}",
        "urn:uuid:0b6f2c1e-5f7a-4d7e-9a47-2b8c6f1d3e90",
        "0b6f2c1e-5f7a-4d7e-9a47-2b8c6f1d3e9g",
        "x" * 10_000,
    ],
)
def test_only_canonical_uuids_are_user_ids(text: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_user_id(text)
    assert field_of(raised.value) == "user_id"
    assert text not in raised.value.message or len(text) < 5


def test_a_malformed_user_id_is_invalid_before_permission_is_checked() -> None:
    with pytest.raises(InvalidArgument):
        resolve_target(caller(), "nope", Access.WRITE)


# -- display fields -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "x" * 32, "Dendi", "日本語のなまえ", "🎮" * 32, "a b"])
def test_valid_persona_names(name: str) -> None:
    assert validate_persona_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 33, "   ", "\t", "a\x00b", "line\nbreak", "\x7f"])
def test_invalid_persona_names(name: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_persona_name(name)
    assert field_of(raised.value) == "persona_name"


@pytest.mark.parametrize(
    "url",
    ["https://a.example/x.png", "HTTPS://A.EXAMPLE/x", "https://a.example:8443/p?q=1#f"],
)
def test_valid_avatar_urls(url: str) -> None:
    assert validate_avatar_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://a.example/x.png",
        "//a.example/x.png",
        "https:///x.png",
        "https://a.example/x y.png",
        "https://a.example/\x00",
        "https://u:p@a.example/x.png",
        "https://[bad/x.png",
        "data:image/png;base64,AAAA",
        "https://a.example/" + "x" * 2031,
    ],
)
def test_invalid_avatar_urls(url: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_avatar_url(url)
    assert field_of(raised.value) == "avatar_url"


def test_the_avatar_limit_is_2048_characters() -> None:
    url = "https://a.example/" + "x" * 2030
    assert len(url) == 2048
    assert validate_avatar_url(url) == url


def test_profile_update_masks() -> None:
    # No mask: the fields that are set.
    assert profile_update([], "Name", None).persona_name_set
    assert not profile_update([], "Name", None).avatar_url_set
    assert profile_update([], None, None).is_empty
    # A masked, unset field goes back to Steam's value (None).
    update = profile_update(["avatar_url"], "ignored", None)
    assert (update.persona_name_set, update.avatar_url_set, update.avatar_url) == (
        False,
        True,
        None,
    )
    # A field set but not masked is not validated or changed.
    assert not profile_update(["avatar_url"], "x" * 100, None).persona_name_set
    with pytest.raises(InvalidArgument) as raised:
        profile_update(["persona_name", "steamid64"], "ok", None)
    assert field_of(raised.value) == "update_mask.paths[1]"


def test_display_fields_follow_steam_until_the_user_overrides_them() -> None:
    steam = DisplayField("old", "old", overridden=False)
    assert steam.refreshed("new") == DisplayField("new", "new", False)
    assert steam.refreshed("") == steam  # unknown keeps the last known value
    own = steam.set_by_user("mine")
    assert own.refreshed("newer") == DisplayField("mine", "newer", True)
    assert own.refreshed("newer").set_by_user(None) == DisplayField("newer", "newer", False)


def test_steam_identity_checks_the_account_range_and_values() -> None:
    for good in (FIRST_INDIVIDUAL_STEAMID64, LAST_INDIVIDUAL_STEAMID64):
        assert steam_identity(good, "", "").steamid64 == good
    for bad in (0, FIRST_INDIVIDUAL_STEAMID64 - 1, LAST_INDIVIDUAL_STEAMID64 + 1, 2**64 - 1):
        with pytest.raises(InvalidArgument) as raised:
            steam_identity(bad, "x", "")
        assert field_of(raised.value) == "steamid64"
    # Steam's own names may be odd but are never longer than 32 characters.
    assert steam_identity(FIRST_INDIVIDUAL_STEAMID64, "\tweird \u200b", "").persona_name
    with pytest.raises(InvalidArgument):
        steam_identity(FIRST_INDIVIDUAL_STEAMID64, "x" * 33, "")
    with pytest.raises(InvalidArgument):
        steam_identity(FIRST_INDIVIDUAL_STEAMID64, "", "http://a.example/x.png")


# -- preferences --------------------------------------------------------------------------------


def update(
    paths: tuple[str, ...] = (),
    *,
    positions: tuple[int, ...] = (),
    pool: tuple[int, ...] = (),
    favourites: tuple[int, ...] = (),
    disliked: tuple[int, ...] = (),
    bracket: SkillBracket | None = None,
) -> Preferences:
    return preferences_update(
        paths,
        preferred_positions=positions,
        hero_pool_hero_ids=pool,
        favourite_hero_ids=favourites,
        disliked_hero_ids=disliked,
        default_skill_bracket=bracket,
        heroes=HEROES,
    ).apply(Preferences(hero_pool_hero_ids=(1, 2), disliked_hero_ids=(9,), version=4))


def test_an_empty_mask_replaces_everything_and_a_mask_only_what_it_names() -> None:
    everything = update(positions=(5, 1), favourites=(3,), bracket=SkillBracket.ALL)
    assert everything == Preferences(
        preferred_positions=(5, 1),
        favourite_hero_ids=(3,),
        default_skill_bracket=SkillBracket.ALL,
        version=4,
    )
    only_pool = update(("hero_pool_hero_ids",), pool=(7,), favourites=(99999,))
    assert only_pool.hero_pool_hero_ids == (7,)
    assert only_pool.disliked_hero_ids == (9,)
    assert only_pool.favourite_hero_ids == ()


def test_unknown_is_no_default_bracket_to_choose_or_read_back() -> None:
    with pytest.raises(InvalidArgument) as raised:
        update(bracket=SkillBracket.UNKNOWN)
    assert field_of(raised.value) == "preferences.default_skill_bracket"
    assert (
        update(("hero_pool_hero_ids",), bracket=SkillBracket.UNKNOWN).default_skill_bracket is None
    )
    assert stored_bracket("legend_ancient") is SkillBracket.LEGEND_ANCIENT
    for name in ("unknown", "immortal"):
        with pytest.raises(ValueError, match=r"skill bracket|not a valid"):
            stored_bracket(name)


@pytest.mark.parametrize(
    ("kwargs", "reason", "field_name"),
    [
        ({"pool": (1, 1000)}, "ERROR_REASON_UNKNOWN_HERO", "preferences.hero_pool_hero_ids[1]"),
        ({"favourites": (0,)}, "ERROR_REASON_UNKNOWN_HERO", "preferences.favourite_hero_ids[0]"),
        ({"disliked": (3, 3)}, "ERROR_REASON_DUPLICATE_HERO", "preferences.disliked_hero_ids[1]"),
        (
            {"favourites": (4,), "disliked": (4,)},
            "ERROR_REASON_DUPLICATE_HERO",
            "preferences.disliked_hero_ids",
        ),
        (
            {"pool": tuple(range(1, 32))},
            "ERROR_REASON_INVALID_ARGUMENT",
            "preferences.hero_pool_hero_ids",
        ),
        (
            {"favourites": tuple(range(1, 12))},
            "ERROR_REASON_INVALID_ARGUMENT",
            "preferences.favourite_hero_ids",
        ),
        (
            {"disliked": tuple(range(1, 32))},
            "ERROR_REASON_INVALID_ARGUMENT",
            "preferences.disliked_hero_ids",
        ),
        (
            {"positions": (0,)},
            "ERROR_REASON_INVALID_ARGUMENT",
            "preferences.preferred_positions[0]",
        ),
        (
            {"positions": (1, 2, 1)},
            "ERROR_REASON_INVALID_ARGUMENT",
            "preferences.preferred_positions[2]",
        ),
        (
            {"positions": (1, 2, 3, 4, 5, 6)},
            "ERROR_REASON_INVALID_ARGUMENT",
            "preferences.preferred_positions",
        ),
    ],
)
def test_preference_rules(kwargs: dict[str, object], reason: str, field_name: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        update(**kwargs)  # type: ignore[arg-type]
    assert (raised.value.reason, field_of(raised.value)) == (reason, field_name)


def test_the_limits_themselves_are_allowed() -> None:
    full = update(
        positions=(1, 2, 3, 4, 5),
        pool=tuple(range(1, 31)),
        favourites=tuple(range(1, 11)),
        disliked=tuple(range(100, 130)),
    )
    assert len(full.hero_pool_hero_ids) == 30
    assert len(full.disliked_hero_ids) == 30


def test_overlaps_with_what_stays_stored_blame_the_changed_list() -> None:
    # Stored: pool (1, 2), disliked (9).
    with pytest.raises(InvalidArgument) as raised:
        update(("favourite_hero_ids",), favourites=(9,))
    assert (raised.value.reason, field_of(raised.value)) == (
        "ERROR_REASON_DUPLICATE_HERO",
        "preferences.favourite_hero_ids",
    )
    with pytest.raises(InvalidArgument) as raised:
        update(("disliked_hero_ids",), disliked=(2,))
    assert field_of(raised.value) == "preferences.disliked_hero_ids"
    assert raised.value.metadata["hero_id"] == "2"


def test_unknown_mask_paths_are_named() -> None:
    with pytest.raises(InvalidArgument) as raised:
        update(("favourite_hero_ids", "preferences.version"))
    assert field_of(raised.value) == "update_mask.paths[1]"
    assert {member.value for member in PreferenceField} == {
        "preferred_positions",
        "hero_pool_hero_ids",
        "favourite_hero_ids",
        "disliked_hero_ids",
        "default_skill_bracket",
    }


def test_expected_version() -> None:
    check_expected_version("preferences", None, 3)
    check_expected_version("preferences", 3, 3)
    with pytest.raises(VersionMismatch) as raised:
        check_expected_version("preferences", 2, 3)
    assert isinstance(raised.value, FailedPrecondition)
    assert raised.value.reason == "ERROR_REASON_VERSION_MISMATCH"
    assert raised.value.metadata == {"expected_version": "2", "current_version": "3"}


# -- plans --------------------------------------------------------------------------------------


def test_a_paid_plan_is_in_force_until_it_expires() -> None:
    now = datetime(2025, 6, 1, tzinfo=UTC)
    plus = Subscription(Tier.PLUS, now - timedelta(days=1), None, now + timedelta(days=1))
    assert plus.effective(now) == plus
    assert plus.effective(now + timedelta(days=2)) == Subscription()
    assert Subscription(Tier.PRO, now, now + timedelta(days=30), None).effective(now).tier is (
        Tier.PRO
    )
    assert Subscription().effective(now) == Subscription()
    profile = Profile(uuid.UUID(ALICE), FIRST_INDIVIDUAL_STEAMID64, "a", "", now, now, 1)
    assert profile.account_id == 1


# -- rate-limit keys and settings names ----------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.0.0.7:5123", "10.0.0.7"),
        ("ipv6:[::1]:5123", "::1"),
        ("ipv6:%5B::1%5D:5123", "::1"),
        ("unix:/tmp/grpc.sock", "unix:/tmp/grpc.sock"),
    ],
)
def test_peers_are_keyed_by_address_without_port(peer: str, host: str) -> None:
    assert peer_host(peer) == host
    assert caller_key(None, peer) == f"peer:{host}"


def test_signed_in_callers_are_keyed_by_user() -> None:
    assert caller_key(caller(), "ipv4:1.2.3.4:5") == f"user:{ALICE}"


def test_quotas_must_allow_something() -> None:
    with pytest.raises(ValueError, match="calls must be"):
        Quota("x", 0, 60)
    with pytest.raises(ValueError, match="calls must be"):
        Quota("x", 1, 0)


def test_migrations_are_numbered_and_schema_names_checked() -> None:
    shipped = migrations()
    assert [m.version for m in shipped] == list(range(1, len(shipped) + 1))
    assert check_schema_name("user_service") == "user_service"
    for bad in ("User", "a-b", 'x"; DROP SCHEMA public; --', "", "1abc", "a" * 64):
        with pytest.raises(ValueError, match="schema name"):
            check_schema_name(bad)
    assert redacted_dsn("postgresql://me:secret@db:5432/counterpick") == (
        "postgresql://db:5432/counterpick"
    )

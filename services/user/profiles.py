"""The user domain: profiles, draft preferences and subscriptions, and the rules they obey.

Plain dataclasses and validation only: no gRPC, protobuf or asyncpg types. Every rejected value
raises `InvalidArgument` naming the request field (`preferences.hero_pool_hero_ids[2]`), so a
client can point at the exact input; messages never echo user-supplied text, only ids and limits.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum, StrEnum
from urllib.parse import urlsplit

from services.common.dota import SkillBracket
from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.common.tokens import STEAM_ID64_BASE, Caller

# Individual-account SteamIDs: universe public, type individual, instance 1 (the contract's range).
FIRST_INDIVIDUAL_STEAMID64 = STEAM_ID64_BASE + 1
LAST_INDIVIDUAL_STEAMID64 = 76561202255233023
PERSONA_NAME_MAX = 32
AVATAR_URL_MAX = 2048
POSITIONS_MAX = 5
HERO_POOL_MAX = 30
FAVOURITES_MAX = 10
DISLIKED_MAX = 30
# Dota's positions 1 (carry) to 5 (hard support); the proto's Position numbers are the same.
POSITIONS = range(1, 6)

UNKNOWN_HERO = "ERROR_REASON_UNKNOWN_HERO"
DUPLICATE_HERO = "ERROR_REASON_DUPLICATE_HERO"
VERSION_MISMATCH = "ERROR_REASON_VERSION_MISMATCH"

ADMIN_ROLE = "admin"
SERVICE_ROLE = "service"


class VersionMismatch(FailedPrecondition):
    """An update named an expected_version that is no longer the stored one; nothing changed."""

    reason = VERSION_MISMATCH

    def __init__(self, what: str, *, expected: int, current: int) -> None:
        super().__init__(
            f"{what} changed concurrently: expected version {expected}, stored version {current}; "
            "read it again and retry",
            metadata={"expected_version": str(expected), "current_version": str(current)},
        )


class Tier(StrEnum):
    """A subscription tier, as stored."""

    FREE = "free"
    PLUS = "plus"
    PRO = "pro"


class PreferenceField(StrEnum):
    """The update_mask paths of UpdatePreferences."""

    PREFERRED_POSITIONS = "preferred_positions"
    HERO_POOL = "hero_pool_hero_ids"
    FAVOURITES = "favourite_hero_ids"
    DISLIKED = "disliked_hero_ids"
    DEFAULT_SKILL_BRACKET = "default_skill_bracket"


class ProfileField(StrEnum):
    """The update_mask paths of UpdateProfile."""

    PERSONA_NAME = "persona_name"
    AVATAR_URL = "avatar_url"


@dataclass(frozen=True)
class Preferences:
    """A user's draft preferences; the defaults are what a user who never set any has."""

    preferred_positions: tuple[int, ...] = ()
    hero_pool_hero_ids: tuple[int, ...] = ()
    favourite_hero_ids: tuple[int, ...] = ()
    disliked_hero_ids: tuple[int, ...] = ()
    # None means "all"; never UNKNOWN, which names unrated matches, not a bracket to prefer.
    default_skill_bracket: SkillBracket | None = None
    version: int = 0
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Subscription:
    """A user's plan as billed; `effective` says what is in force at a moment."""

    tier: Tier = Tier.FREE
    started_at: datetime | None = None
    renews_at: datetime | None = None
    expires_at: datetime | None = None

    def effective(self, now: datetime) -> Subscription:
        """The plan in force at `now`: a paid period that ended falls back to free."""
        if self.tier is Tier.FREE or (self.expires_at is not None and self.expires_at <= now):
            return Subscription()
        return self


@dataclass(frozen=True)
class Profile:
    """A user as the API shows it: display fields, sign-in times, tier and preferences."""

    user_id: uuid.UUID
    steamid64: int
    persona_name: str
    avatar_url: str
    created_at: datetime
    last_login_at: datetime
    version: int
    subscription: Subscription = field(default_factory=Subscription)
    preferences: Preferences = field(default_factory=Preferences)

    @property
    def account_id(self) -> int:
        """The 32-bit Steam account id."""
        return self.steamid64 - STEAM_ID64_BASE


# -- who may address whom --------------------------------------------------------------------


class Access(Enum):
    """What a call does to the addressed user."""

    READ = "read"
    WRITE = "write"


def parse_user_id(text: str, field_name: str = "user_id") -> uuid.UUID:
    """A user id in its canonical hyphenated form (any case), else INVALID_ARGUMENT."""
    try:
        parsed = uuid.UUID(text) if len(text) == 36 else None
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != text.lower():
        raise InvalidArgument(
            f"{field_name} must be a UUID such as 0b6f2c1e-5f7a-4d7e-9a47-2b8c6f1d3e90",
            field=field_name,
        )
    return parsed


def resolve_target(caller: Caller, requested: str | None, access: Access) -> uuid.UUID:
    """The user a call addresses: the caller when `requested` is empty, else another user, which
    needs "admin" (or "service" to read).

    The permission check does not look at the database, so PERMISSION_DENIED is the same whether
    or not the other user exists: nobody can probe for user ids.
    """
    if not requested:
        try:
            own = uuid.UUID(caller.user_id)
        except ValueError:
            own = None
        if own is None or caller.has_any_role(SERVICE_ROLE):
            raise InvalidArgument("user_id is required: the caller is not a user", field="user_id")
        return own
    target = parse_user_id(requested)
    if caller.user_id.lower() == str(target):
        return target
    allowed = (ADMIN_ROLE, SERVICE_ROLE) if access is Access.READ else (ADMIN_ROLE,)
    if not caller.has_any_role(*allowed):
        verb = "read" if access is Access.READ else "change"
        raise PermissionDenied(f"you may not {verb} another user's data")
    return target


# -- profiles ---------------------------------------------------------------------------------


def _has_control_characters(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


def validate_persona_name(name: str, field_name: str = "persona_name") -> str:
    """A display name a user chose: 1..32 characters, not blank, no control characters."""
    if not 1 <= len(name) <= PERSONA_NAME_MAX:
        raise InvalidArgument(
            f"{field_name} must be 1..{PERSONA_NAME_MAX} characters, got {len(name)}",
            field=field_name,
        )
    if not name.strip():
        raise InvalidArgument(f"{field_name} must not be blank", field=field_name)
    if _has_control_characters(name):
        raise InvalidArgument(f"{field_name} must not contain control characters", field=field_name)
    return name


def validate_avatar_url(url: str, field_name: str = "avatar_url") -> str:
    """An avatar URL: https with a host, at most 2048 characters, no spaces or control chars."""
    if len(url) > AVATAR_URL_MAX:
        raise InvalidArgument(
            f"{field_name} must be at most {AVATAR_URL_MAX} characters, got {len(url)}",
            field=field_name,
        )
    if any(char.isspace() for char in url) or _has_control_characters(url):
        raise InvalidArgument(
            f"{field_name} must not contain spaces or control characters", field=field_name
        )
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme.lower() != "https" or not host:
        raise InvalidArgument(f"{field_name} must be an https URL", field=field_name)
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument(f"{field_name} must not carry credentials", field=field_name)
    return url


def validate_steamid64(steamid64: int) -> int:
    """An individual Steam account's 64-bit id (the contract's range), else INVALID_ARGUMENT."""
    if not FIRST_INDIVIDUAL_STEAMID64 <= steamid64 <= LAST_INDIVIDUAL_STEAMID64:
        raise InvalidArgument(
            f"steamid64 {steamid64} is not an individual Steam account id "
            f"({FIRST_INDIVIDUAL_STEAMID64}..{LAST_INDIVIDUAL_STEAMID64})",
            field="steamid64",
        )
    return steamid64


@dataclass(frozen=True)
class SteamIdentity:
    """What Steam says about an account at sign-in; empty strings mean "unknown"."""

    steamid64: int
    persona_name: str = ""
    avatar_url: str = ""


def steam_identity(steamid64: int, persona_name: str, avatar_url: str) -> SteamIdentity:
    """Validate UpsertSteamUser's input. Steam never sends a persona over 32 characters or a
    non-https avatar, so such values mean a broken caller and are rejected, never cut."""
    validate_steamid64(steamid64)
    if persona_name:
        if len(persona_name) > PERSONA_NAME_MAX:
            raise InvalidArgument(
                f"persona_name must be at most {PERSONA_NAME_MAX} characters, "
                f"got {len(persona_name)}",
                field="persona_name",
            )
        if "\x00" in persona_name:
            raise InvalidArgument("persona_name must not contain NUL", field="persona_name")
    if avatar_url:
        validate_avatar_url(avatar_url)
    return SteamIdentity(steamid64, persona_name, avatar_url)


@dataclass(frozen=True)
class DisplayField:
    """One display field as stored: the value shown, Steam's value, and whether the user's own
    value overrides Steam's."""

    shown: str
    steam: str
    overridden: bool

    def refreshed(self, steam_value: str) -> DisplayField:
        """After a Steam sign-in: an unknown (empty) Steam value keeps the last known one."""
        steam = steam_value or self.steam
        return DisplayField(self.shown if self.overridden else steam, steam, self.overridden)

    def set_by_user(self, value: str | None) -> DisplayField:
        """The user's own value, or None to go back to Steam's."""
        if value is None:
            return DisplayField(self.steam, self.steam, False)
        return DisplayField(value, self.steam, True)


@dataclass(frozen=True)
class ProfileUpdate:
    """A validated UpdateProfile: for each field, whether it changes, and to what (None = back
    to the Steam value)."""

    persona_name_set: bool = False
    persona_name: str | None = None
    avatar_url_set: bool = False
    avatar_url: str | None = None

    @property
    def is_empty(self) -> bool:
        """True when nothing would change."""
        return not (self.persona_name_set or self.avatar_url_set)


def _mask_paths[F: StrEnum](paths: Sequence[str], fields: type[F]) -> set[F]:
    known = {member.value: member for member in fields}
    chosen: set[F] = set()
    for index, path in enumerate(paths):
        member = known.get(path)
        if member is None:
            allowed = ", ".join(sorted(known))
            raise InvalidArgument(
                f"update_mask.paths[{index}] is not one of: {allowed}",
                field=f"update_mask.paths[{index}]",
            )
        chosen.add(member)
    return chosen


def profile_update(
    mask_paths: Sequence[str], persona_name: str | None, avatar_url: str | None
) -> ProfileUpdate:
    """Validate UpdateProfile's fields and mask (None = the field is unset in the request)."""
    if mask_paths:
        chosen = _mask_paths(mask_paths, ProfileField)
    else:
        chosen = {
            member
            for member, value in (
                (ProfileField.PERSONA_NAME, persona_name),
                (ProfileField.AVATAR_URL, avatar_url),
            )
            if value is not None
        }
    if ProfileField.PERSONA_NAME in chosen and persona_name is not None:
        validate_persona_name(persona_name)
    if ProfileField.AVATAR_URL in chosen and avatar_url is not None:
        validate_avatar_url(avatar_url)
    return ProfileUpdate(
        persona_name_set=ProfileField.PERSONA_NAME in chosen,
        persona_name=persona_name,
        avatar_url_set=ProfileField.AVATAR_URL in chosen,
        avatar_url=avatar_url,
    )


# -- preferences ------------------------------------------------------------------------------


def _field(name: PreferenceField) -> str:
    return f"preferences.{name.value}"


def _hero_list(
    hero_ids: Sequence[int], name: PreferenceField, limit: int, heroes: Collection[int]
) -> tuple[int, ...]:
    where = _field(name)
    if len(hero_ids) > limit:
        raise InvalidArgument(
            f"{where} holds {len(hero_ids)} heroes; at most {limit} are allowed", field=where
        )
    seen: set[int] = set()
    for index, hero_id in enumerate(hero_ids):
        if hero_id not in heroes:
            raise InvalidArgument(
                f"{where}[{index}]: {hero_id} is not a known hero",
                field=f"{where}[{index}]",
                reason=UNKNOWN_HERO,
                metadata={"hero_id": str(hero_id)},
            )
        if hero_id in seen:
            raise InvalidArgument(
                f"{where}[{index}]: hero {hero_id} is listed twice",
                field=f"{where}[{index}]",
                reason=DUPLICATE_HERO,
                metadata={"hero_id": str(hero_id)},
            )
        seen.add(hero_id)
    return tuple(hero_ids)


def _positions(positions: Sequence[int]) -> tuple[int, ...]:
    where = _field(PreferenceField.PREFERRED_POSITIONS)
    if len(positions) > POSITIONS_MAX:
        raise InvalidArgument(
            f"{where} holds {len(positions)} positions; at most {POSITIONS_MAX}", field=where
        )
    seen: set[int] = set()
    for index, position in enumerate(positions):
        if position not in POSITIONS:
            raise InvalidArgument(
                f"{where}[{index}] must be a position 1..5, not unspecified or unknown "
                f"({position})",
                field=f"{where}[{index}]",
            )
        if position in seen:
            raise InvalidArgument(
                f"{where}[{index}]: position {position} is listed twice", field=f"{where}[{index}]"
            )
        seen.add(position)
    return tuple(positions)


def _default_bracket(bracket: SkillBracket | None) -> SkillBracket | None:
    if bracket is SkillBracket.UNKNOWN:
        where = _field(PreferenceField.DEFAULT_SKILL_BRACKET)
        raise InvalidArgument(f"{where} must be a skill bracket or unset", field=where)
    return bracket


def stored_bracket(name: str) -> SkillBracket:
    """The default skill bracket stored as `name`; ValueError for anything a user cannot choose
    (the schema's CHECK allows the same names)."""
    bracket = SkillBracket(name)
    if bracket is SkillBracket.UNKNOWN:
        raise ValueError(f"{name!r} is not a default skill bracket")
    return bracket


@dataclass(frozen=True)
class PreferencesUpdate:
    """A validated UpdatePreferences: which fields are replaced, and with what."""

    fields: frozenset[PreferenceField]
    values: Preferences

    def apply(self, current: Preferences) -> Preferences:
        """The preferences after the update (same version; the store bumps it), checking the
        rules across lists against what stays stored."""
        changes = {name.value: getattr(self.values, name.value) for name in self.fields}
        merged = replace(current, **changes)
        check_disjoint(merged, self.fields)
        return merged


def check_disjoint(preferences: Preferences, changed: Collection[PreferenceField]) -> None:
    """Disliked heroes may be neither favourites nor in the hero pool (DUPLICATE_HERO), blamed on
    a list the update changed."""
    disliked = set(preferences.disliked_hero_ids)
    for other in (PreferenceField.FAVOURITES, PreferenceField.HERO_POOL):
        values: tuple[int, ...] = getattr(preferences, other.value)
        overlap = sorted(disliked.intersection(values))
        if not overlap:
            continue
        blamed = PreferenceField.DISLIKED if PreferenceField.DISLIKED in changed else other
        raise InvalidArgument(
            f"hero {overlap[0]} is in both {_field(PreferenceField.DISLIKED)} and {_field(other)}",
            field=_field(blamed),
            reason=DUPLICATE_HERO,
            metadata={"hero_id": str(overlap[0])},
        )


def preferences_update(
    mask_paths: Sequence[str],
    *,
    preferred_positions: Sequence[int],
    hero_pool_hero_ids: Sequence[int],
    favourite_hero_ids: Sequence[int],
    disliked_hero_ids: Sequence[int],
    default_skill_bracket: SkillBracket | None,
    heroes: Collection[int],
) -> PreferencesUpdate:
    """Validate UpdatePreferences' values (known heroes, limits, no repeats) and mask; an empty
    mask replaces every field."""
    chosen = _mask_paths(mask_paths, PreferenceField) if mask_paths else set(PreferenceField)
    values = Preferences(
        preferred_positions=(
            _positions(preferred_positions) if PreferenceField.PREFERRED_POSITIONS in chosen else ()
        ),
        hero_pool_hero_ids=(
            _hero_list(hero_pool_hero_ids, PreferenceField.HERO_POOL, HERO_POOL_MAX, heroes)
            if PreferenceField.HERO_POOL in chosen
            else ()
        ),
        favourite_hero_ids=(
            _hero_list(favourite_hero_ids, PreferenceField.FAVOURITES, FAVOURITES_MAX, heroes)
            if PreferenceField.FAVOURITES in chosen
            else ()
        ),
        disliked_hero_ids=(
            _hero_list(disliked_hero_ids, PreferenceField.DISLIKED, DISLIKED_MAX, heroes)
            if PreferenceField.DISLIKED in chosen
            else ()
        ),
        default_skill_bracket=(
            _default_bracket(default_skill_bracket)
            if PreferenceField.DEFAULT_SKILL_BRACKET in chosen
            else None
        ),
    )
    update = PreferencesUpdate(frozenset(chosen), values)
    # Overlaps inside this request are reported before touching the store.
    check_disjoint(values, chosen)
    return update


def check_expected_version(what: str, expected: int | None, current: int) -> None:
    """VersionMismatch unless `expected` is unset or equal to `current`."""
    if expected is not None and expected != current:
        raise VersionMismatch(what, expected=expected, current=current)

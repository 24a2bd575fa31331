-- Users, their draft preferences and their subscriptions. Table names are unqualified: the
-- migration runner sets search_path to the user service's own schema.

CREATE TABLE users (
    user_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Individual Steam accounts only (universe 1, type individual, instance 1).
    steamid64 bigint NOT NULL UNIQUE
        CHECK (steamid64 BETWEEN 76561197960265729 AND 76561202255233023),
    account_id bigint GENERATED ALWAYS AS (steamid64 - 76561197960265728) STORED,
    -- What the API shows: Steam's values unless the user set their own (the *_overridden flags).
    persona_name text NOT NULL DEFAULT '' CHECK (char_length(persona_name) <= 32),
    avatar_url text NOT NULL DEFAULT '' CHECK (char_length(avatar_url) <= 2048),
    persona_name_overridden boolean NOT NULL DEFAULT false,
    avatar_url_overridden boolean NOT NULL DEFAULT false,
    -- The latest values Steam reported, kept so an override can be reverted.
    steam_persona_name text NOT NULL DEFAULT '' CHECK (char_length(steam_persona_name) <= 32),
    steam_avatar_url text NOT NULL DEFAULT '' CHECK (char_length(steam_avatar_url) <= 2048),
    created_at timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz NOT NULL DEFAULT now(),
    -- Version of persona_name and avatar_url, for optimistic concurrency.
    version bigint NOT NULL DEFAULT 1 CHECK (version >= 1)
);

CREATE TABLE preferences (
    user_id uuid PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    preferred_positions smallint[] NOT NULL DEFAULT '{}'
        CHECK (cardinality(preferred_positions) <= 5
               AND preferred_positions <@ ARRAY[1, 2, 3, 4, 5]::smallint[]),
    hero_pool_hero_ids integer[] NOT NULL DEFAULT '{}'
        CHECK (cardinality(hero_pool_hero_ids) <= 30),
    favourite_hero_ids integer[] NOT NULL DEFAULT '{}'
        CHECK (cardinality(favourite_hero_ids) <= 10),
    disliked_hero_ids integer[] NOT NULL DEFAULT '{}'
        CHECK (cardinality(disliked_hero_ids) <= 30),
    -- NULL: unspecified, which means "all".
    default_skill_bracket text CHECK (default_skill_bracket IN (
        'all', 'herald_guardian', 'crusader_archon', 'legend_ancient', 'divine_immortal')),
    -- 0 until the user first saves preferences.
    version bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
    updated_at timestamptz
);

-- No row: the free tier.
CREATE TABLE subscriptions (
    user_id uuid PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    tier text NOT NULL CHECK (tier IN ('free', 'plus', 'pro')),
    started_at timestamptz,
    renews_at timestamptz,
    expires_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Matches, their players and their drafts. ReplacingMergeTree keyed on the match makes
-- re-inserting a match harmless (at-least-once delivery); readers use FINAL so a match counts once
-- even before the background merge has removed the older copy.
CREATE TABLE IF NOT EXISTS matches
(
    match_id UInt64,
    match_seq_num Nullable(UInt64),
    start_time Nullable(DateTime('UTC')),
    duration_seconds Nullable(UInt32),
    patch LowCardinality(String),
    game_mode Nullable(UInt8),
    lobby_type Nullable(UInt8),
    cluster Nullable(UInt16),
    region Nullable(UInt16),
    avg_rank_tier Nullable(UInt8),
    skill_bracket LowCardinality(String),
    radiant_win Bool,
    source LowCardinality(String),
    -- The draft denormalised for the model's per-match queries (ascending hero ids).
    radiant_heroes Array(UInt16),
    dire_heroes Array(UInt16),
    loaded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY match_id;

CREATE TABLE IF NOT EXISTS match_players
(
    match_id UInt64,
    player_slot UInt8,
    side Enum8('radiant' = 0, 'dire' = 1),
    hero_id UInt16,
    account_id Nullable(UInt32),
    position Nullable(UInt8),
    lane_role Nullable(UInt8),
    win Bool,
    kills Nullable(UInt16),
    deaths Nullable(UInt16),
    assists Nullable(UInt16),
    gold_per_min Nullable(UInt16),
    xp_per_min Nullable(UInt16),
    items Array(UInt16),
    leaver_status Nullable(UInt8),
    patch LowCardinality(String),
    start_time Nullable(DateTime('UTC')),
    loaded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY (match_id, player_slot);

CREATE TABLE IF NOT EXISTS picks_bans
(
    match_id UInt64,
    ord UInt8,
    is_pick Bool,
    side Enum8('radiant' = 0, 'dire' = 1),
    hero_id UInt16,
    loaded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY (match_id, ord);

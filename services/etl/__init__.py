"""etl service: consumes `match_ids_raw`, enriches and cleans matches, loads ClickHouse."""

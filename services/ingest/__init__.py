"""ingest service: captures public match ids from OpenDota and Steam into Kafka `match_ids_raw`."""

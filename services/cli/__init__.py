"""The `counterpick` command: run the whole mesh locally, one service, or check health."""

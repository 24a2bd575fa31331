"""user service: Player profiles, preferences and subscription tier, stored in PostgreSQL."""

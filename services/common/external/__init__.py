"""Clients of the external match APIs (OpenDota, Steam Web API), polite and failure-tolerant."""

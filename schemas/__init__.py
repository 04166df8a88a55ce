"""Event contracts and table schemas: the one source of truth for every record type."""

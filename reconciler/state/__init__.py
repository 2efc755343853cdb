"""The local state: one SQLite database holding the catalog, observations, the journal and
shares, with the lock that keeps one writer at a time."""

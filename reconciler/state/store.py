"""The embedded SQLite state: catalog, cached observations, verifications, runs and the journal.

One connection, used from one thread; callers that work in threads report back to the
thread that owns the store. WAL mode keeps readers (``status``) from blocking a running apply.
"""

from __future__ import annotations

from reconciler.state.decisions import DecisionTables
from reconciler.state.journal import JournalTables


class StateStore(DecisionTables, JournalTables):
    """The state of one site: each part keeps its own tables (``state.catalog``,
    ``state.observations``, ``state.verifications``, ``state.shares``, ``state.decisions``,
    ``state.journal``) over one database (``state.database``)."""

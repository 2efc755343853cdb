"""Recovery points (create, verify, restore, forget), archive restores, rekeying and
rebuilding the state from the destinations."""

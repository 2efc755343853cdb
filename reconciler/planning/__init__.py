"""The pure planner and its rules (selection, retention, pruning, schedules, sharing,
partial copies): functions of config, catalog and observations, with no I/O."""

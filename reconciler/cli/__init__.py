"""The command line: one module per command group; plans and events are rendered here."""

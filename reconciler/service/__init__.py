"""Running day and night: watch, the integration API, metrics, health, notifications and
reports."""

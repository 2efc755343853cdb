"""Transforms applied to an instance on its way to a destination: bytes in, bytes out.

Pure functions with no knowledge of destinations, state or the config file: ``compression``
re-encodes pixel data losslessly (verified), ``pool`` runs it in worker processes,
``encryption`` seals objects with envelope encryption, ``anonymize`` de-identifies instances
(PS3.15 Basic Profile and options: ``anonymization_profile``, ``presets``, ``ps315_actions``,
``pseudonyms``, ``anonymization_check``, ``anonymization_errors``), ``settings`` holds the
pydantic models a destination's or policy's config uses for them.
"""

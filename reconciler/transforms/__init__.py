"""Transforms applied to an instance on its way to a destination: bytes in, bytes out.

Pure functions with no knowledge of destinations, state or the config file: ``compression``
re-encodes pixel data losslessly (verified), ``encryption`` seals objects with envelope
encryption, ``anonymize`` de-identifies instances (PS3.15 Basic Profile and options),
``share_bundle`` writes a share's AES-encrypted ZIP, ``settings`` holds the pydantic models
a destination's or policy's config uses for them.
"""

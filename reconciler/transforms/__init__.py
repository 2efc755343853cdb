"""Transforms applied to an instance on its way to a destination: bytes in, bytes out.

Pure functions with no knowledge of destinations, state or the config file: ``compression``
re-encodes pixel data losslessly (verified), ``encryption`` seals objects with envelope
encryption, ``settings`` holds the pydantic models a destination's config uses for them.
"""

"""A YAML scanner for loading configs: ruamel's round-trip one, blind to comments.

Loading needs every value's position, never the comments (only ``fmt`` keeps them). ruamel's
round-trip scanner gathers runs of blank lines and comments by string concatenation, which
takes quadratic time: a file of a million blank lines took minutes to load. Skipping them
as the plain (non round-trip) scanner does is linear, and makes no comment tokens at all.
"""

from __future__ import annotations

from ruamel.yaml.scanner import RoundTripScanner, Scanner


class CommentBlindScanner(RoundTripScanner):
    def scan_to_next_token(self) -> None:
        # Spaces, line breaks and comments, skipped; None: no comment token to keep.
        Scanner.scan_to_next_token(self)

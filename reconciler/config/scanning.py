"""A YAML scanner for loading configs: ruamel's round-trip one, blind to comments.

Loading needs every value's position, never the comments (only ``fmt`` keeps them). ruamel's
round-trip scanner gathers runs of blank lines and comments by string concatenation, which
takes quadratic time when the string cannot grow in place: a file of a million blank lines
took half a minute to load. Here whole lines of spaces and comments are skipped with one
regular expression, and no comment token is made at all.
"""

from __future__ import annotations

import re

from ruamel.yaml.scanner import RoundTripScanner, Scanner

# Whole lines holding only spaces and perhaps a comment, ended by \n or \r\n. Other line
# breaks, and tabs, are left to ruamel's own loop.
_BLANK_OR_COMMENT_LINES = re.compile(r"(?:[ ]*(?:#[^\r\n\x85\u2028\u2029]*)?\r?\n)+")


class CommentBlindScanner(RoundTripScanner):
    def scan_to_next_token(self) -> None:
        self._skip_whole_lines()
        # The rest of the line, and anything the expression left: None, no comment to keep.
        Scanner.scan_to_next_token(self)

    def _skip_whole_lines(self) -> None:
        reader = self.reader
        whole_text = reader._stream is None and reader.raw_buffer is None  # loaded from a str
        # Only from the start of a line, in block context, with the text all in the buffer.
        if not whole_text or reader.column != 0 or self.flow_level:
            return
        if reader.buffer[reader.pointer] == "\ufeff":
            return
        match = _BLANK_OR_COMMENT_LINES.match(reader.buffer, reader.pointer)
        if match is None:
            return
        skipped = match.end() - match.start()
        reader.pointer += skipped
        reader.index += skipped
        reader.line += match.group(0).count("\n")
        self.allow_simple_key = True

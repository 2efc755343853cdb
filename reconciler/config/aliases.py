"""A bound on what YAML aliases may repeat, so a small file cannot expand into a huge config.

Nine anchors of nine aliases each (``a1: &a1 [*a0, *a0, ...]``) read as a few hundred bytes
and expand to hundreds of millions of values: every later step (merging, references,
validation) would walk them all, for minutes and gigabytes. The composer sees each alias as
it is read, so it counts the values aliases repeat and stops, at the alias that passes the
bound, in time proportional to the text actually read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

# Far beyond any real config's use of aliases (shared retry or schedule settings), and far
# below what would take a noticeable time to walk.
MAX_ALIASED_VALUES = 100_000


class BoundedAliasComposer(Composer):
    """ruamel's composer, except that aliases may repeat at most ``MAX_ALIASED_VALUES`` values
    per document; beyond that, a located error."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader=loader)
        self._sizes: dict[int, int] = {}  # id of a composed node -> values it expands to
        self._aliased = 0

    def compose_document(self) -> Any:
        self._sizes, self._aliased = {}, 0
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        if not self.parser.check_event(AliasEvent):
            node = super().compose_node(parent, index)
            self._sizes[id(node)] = 1 + sum(self._sizes.get(id(c), 1) for c in _children(node))
            return node
        mark = self.parser.peek_event().start_mark
        node = super().compose_node(parent, index)
        # An alias to a value still being read (a cycle) has no size yet; it repeats nothing.
        self._aliased += self._sizes.get(id(node), 1)
        if self._aliased > MAX_ALIASED_VALUES:
            raise ComposerError(
                None,
                None,
                f"aliases (*name) repeat more than {MAX_ALIASED_VALUES} values in this file; "
                "write the settings out instead of nesting aliases",
                mark,
            )
        return node


def _children(node: Node) -> Iterator[Node]:
    if isinstance(node, SequenceNode):
        yield from node.value
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            yield key
            yield value

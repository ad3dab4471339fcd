"""YAML from outside (recipes, sweeps, model cards' front matter), parsed with bounds.

`yaml.safe_load` runs no code, but it expands aliases: nine anchors of nine aliases each ("billion laughs") make a
few hundred bytes stand for 9**9 values. PyYAML shares the repeated objects, so loading is cheap; the bill comes when
the data is printed, serialized or compared, and that is exactly what a validator or a model card does with it. So
the loader here refuses, before anything is constructed:

- a text longer than `MAX_TEXT` characters,
- more than `MAX_ALIASES` aliases, or a document that, with its aliases written out, would hold more than
  `MAX_NODES` nodes (a handful of `&defaults` / `*defaults` stays fine),
- an alias that refers to the node it sits in (a recursive structure, which JSON and most code cannot handle),
- nesting deeper than `MAX_DEPTH` (PyYAML's composer would hit Python's recursion limit).

No torch or transformers here: recipes are validated without them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, SequenceNode

from ..errors import InputLimitError
from ..scrub import cut

MAX_TEXT = 2 * 1024 * 1024
MAX_ALIASES = 100
MAX_NODES = 200_000
MAX_DEPTH = 64
MAX_INT_CHARS = 100

# huggingface_hub's own pattern for a card's front matter (repocard.REGEX_YAML_BLOCK), so that we read what it reads.
_FRONT_MATTER = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")


class YamlLimitError(InputLimitError, yaml.YAMLError):
    """A YAML document beyond the bounds above. Also a `yaml.YAMLError`, so that code which treats invalid YAML as
    invalid (the local Hub's card parser, say) treats this one the same way."""


class BoundedSafeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that counts aliases and depth while composing, and weighs the document before constructing
    it."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YamlLimitError(
                    f"the YAML uses more than {MAX_ALIASES} aliases (*name); hfsoup reads at most {MAX_ALIASES}, "
                    "which bounds how far a small file can expand",
                    fix="Write the repeated values out, or use fewer anchors.",
                )
            return super().compose_node(parent, index)
        collection = self.check_event(CollectionStartEvent)
        if collection:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise YamlLimitError(
                    f"the YAML nests lists and mappings more than {MAX_DEPTH} levels deep; hfsoup reads at most "
                    f"{MAX_DEPTH}",
                    fix="Flatten the document.",
                )
        try:
            return super().compose_node(parent, index)
        finally:
            if collection:
                self._depth -= 1

    def compose_document(self) -> Node:
        node = super().compose_document()
        _weigh(node)
        return node

    def construct_bounded_int(self, node: Node) -> int:
        # PyYAML reads `1:0:0:...` as a base-60 integer, built in time quadratic in its length: 2 MB of it is minutes
        # of CPU. No base-60 integer a recipe or card means is longer than this. (Decimal ones are bounded by
        # Python's own limit on digits, and power-of-two bases are built in linear time.)
        if ":" in node.value and len(node.value) > MAX_INT_CHARS:
            raise YamlLimitError(
                f"the YAML holds a base-60 integer of {len(node.value):,} characters; hfsoup reads at most "
                f"{MAX_INT_CHARS}",
                fix="Write the value as a string (in quotes) if it is not a number.",
            )
        return self.construct_yaml_int(node)


BoundedSafeLoader.add_constructor("tag:yaml.org,2002:int", BoundedSafeLoader.construct_bounded_int)


def _weigh(root: Node) -> None:
    """Refuse a document that, with every alias expanded, exceeds MAX_NODES values or MAX_DEPTH levels (aliases can
    stack nesting: an alias at depth 60 of a node 60 deep is 120 deep), or that contains itself."""
    memo: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels) with its aliases expanded
    open_nodes: set[int] = set()

    def too_deep() -> YamlLimitError:
        return YamlLimitError(
            f"the YAML nests lists and mappings, with its aliases expanded, more than {MAX_DEPTH} levels deep; hfsoup "
            f"reads at most {MAX_DEPTH}",
            fix="Flatten the document, or write the aliased values out.",
        )

    def weigh(node: Node, level: int) -> tuple[int, int]:
        key = id(node)
        if key in memo:
            if level + memo[key][1] > MAX_DEPTH:
                raise too_deep()
            return memo[key]
        if key in open_nodes:
            raise YamlLimitError(
                "the YAML holds an alias inside the very node it refers to (a structure that contains itself)",
                fix="Remove the recursive alias.",
            )
        if level > MAX_DEPTH:  # also bounds this recursion
            raise too_deep()
        open_nodes.add(key)
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        total, height = 1, 0
        for child in children:
            values, levels = weigh(child, level + 1)
            total, height = total + values, max(height, levels + 1)
            if total > MAX_NODES:
                raise YamlLimitError(
                    f"the YAML expands, with its aliases written out, to more than {MAX_NODES:,} values; hfsoup "
                    f"reads at most {MAX_NODES:,} (a few aliases nested inside each other multiply, as in 'billion "
                    "laughs')",
                    fix="Write the repeated values out, or use fewer nested aliases.",
                )
        open_nodes.discard(key)
        memo[key] = (total, height)
        return memo[key]

    weigh(root, 0)


def load(text: str) -> Any:
    """Parse one YAML document within the bounds above; raise `YamlLimitError` beyond them and `yaml.YAMLError` for
    invalid YAML."""
    if len(text) > MAX_TEXT:
        raise YamlLimitError(
            f"the YAML is {len(text):,} characters long; hfsoup reads at most {MAX_TEXT:,}",
            fix="A recipe or a model card's metadata is a few kilobytes: check that this is the right file.",
        )
    loader = BoundedSafeLoader(text)
    try:
        return loader.get_single_data()
    except (ValueError, OverflowError) as e:
        # A scalar PyYAML resolves but Python refuses to build: a 5,000-digit integer, the date 2020-13-45.
        raise yaml.constructor.ConstructorError(problem=f"a value that cannot be read ({cut(str(e), 200)})") from None
    finally:
        loader.dispose()


def read_text(path: Path, limit: int = MAX_TEXT) -> str:
    """The text of `path`, reading at most `limit` characters' worth (a huge file is refused, never read whole)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read(limit + 1)
    if len(text) > limit:
        raise YamlLimitError(
            f"the file is larger than the {limit:,} characters hfsoup reads from it",
            fix="Check that this is the right file.",
        )
    return text


def card_metadata(path: Path) -> dict[str, Any] | None:
    """The YAML front matter of the model card at `path`, parsed with bounds; None when it has none (or it is not a
    mapping); `YamlLimitError` or `yaml.YAMLError` when it cannot be read safely."""
    with open(path, encoding="utf-8", errors="replace") as f:
        head = f.read(MAX_TEXT + 64)  # the front matter opens the card; the body may be long and is not read
    match = _FRONT_MATTER.search(head)
    if match is None:
        if len(head) > MAX_TEXT and head.lstrip().startswith("---"):
            raise YamlLimitError(
                f"the metadata (front matter) of {path} is longer than the {MAX_TEXT:,} characters hfsoup reads",
                fix="Check that this is the right file.",
            )
        return None
    data = load(match.group(2))
    return data if isinstance(data, dict) else None

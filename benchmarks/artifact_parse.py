"""Measure: does every VQL block of an artifact library parse?

``python -m benchmarks.artifact_parse DIR`` reads every ``*.yaml`` under DIR (Velociraptor's
artifact definitions), takes each VQL block (each source's ``query`` and ``precondition``, the
artifact's ``precondition`` and its ``export``, and each entry of the older ``queries`` list;
non-empty strings only), parses it with the
engine's parser, prints one line per block that fails (file, line and column in the file, and
the reason), and ends with one JSON line: ``{"blocks", "parsed", "failed"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from velotui.vql.parser import VQLSyntaxError, parse


@dataclass
class Block:
    """One VQL text of an artifact file, and the file line its text starts on (1-based, or 0
    when unknown)."""

    path: Path
    where: str  # e.g. "sources[2].query"
    text: str
    first_line: int


def _blocks_of_node(path: Path, root: yaml.Node) -> Iterator[Block]:
    if not isinstance(root, yaml.MappingNode):
        return

    def field(mapping: yaml.MappingNode, name: str) -> yaml.Node | None:
        for key, value in mapping.value:
            if isinstance(key, yaml.ScalarNode) and key.value == name:
                return value
        return None

    def block(node: yaml.Node | None, where: str) -> Iterator[Block]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":str") and node.value.strip():
            start = node.start_mark.line + 1
            if node.style in ("|", ">"):
                start += 1
            yield Block(path, where, node.value, start)

    yield from block(field(root, "precondition"), "precondition")
    yield from block(field(root, "export"), "export")
    sources = field(root, "sources")
    if isinstance(sources, yaml.SequenceNode):
        for index, source in enumerate(sources.value):
            if isinstance(source, yaml.MappingNode):
                yield from block(field(source, "precondition"), f"sources[{index}].precondition")
                yield from block(field(source, "query"), f"sources[{index}].query")
                queries = field(source, "queries")  # the older form: a list of texts
                if isinstance(queries, yaml.SequenceNode):
                    for number, query in enumerate(queries.value):
                        yield from block(query, f"sources[{index}].queries[{number}]")


def artifact_blocks(directory: Path) -> Iterator[Block | tuple[Path, str]]:
    """Every VQL block under ``directory``; a (path, reason) pair for a file that is not YAML."""
    for path in sorted(directory.rglob("*.yaml")):
        try:
            root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            yield (path, f"not YAML: {str(error).splitlines()[0]}")
            continue
        if root is not None:
            yield from _blocks_of_node(path, root)


def _file_position(block: Block, error: VQLSyntaxError) -> tuple[int, int]:
    """The error's line in the file when the block's start is known (block scalars are
    indented, so the column is the block's own)."""
    if block.first_line:
        return block.first_line + error.line - 1, error.column
    return error.line, error.column


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="Velociraptor's artifacts/definitions")
    options = parser.parse_args(argv)
    if not options.directory.is_dir():
        print(f"artifact_parse: {options.directory} is not a directory", file=sys.stderr)
        return 2
    counts: dict[str, Any] = {"blocks": 0, "parsed": 0, "failed": 0}
    unreadable = 0
    for item in artifact_blocks(options.directory):
        if isinstance(item, tuple):
            path, reason = item
            print(f"{path}: {reason}")
            unreadable += 1
            continue
        counts["blocks"] += 1
        try:
            parse(item.text)
        except VQLSyntaxError as error:
            counts["failed"] += 1
            line, column = _file_position(item, error)
            print(f"{item.path}:{line}:{column}: {item.where}: {error.message}")
            continue
        counts["parsed"] += 1
    print(json.dumps(counts))
    return 0 if counts["failed"] == 0 and not unreadable else 1


if __name__ == "__main__":
    sys.exit(main())

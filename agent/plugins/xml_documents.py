"""parse_xml(): an XML document as nested dicts, in the shape Velociraptor gives it.

An element is a dict: each attribute as ``Attr<name>``, each child element under its tag (a
list when the tag repeats), and its text under ``#text``; an element with nothing but text is
that text. The document is ``{root tag: element}``. Python's expat parser refuses entity
expansion bombs, so a hostile file costs a bounded amount of memory.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from typing import Any

from agent.plugins.accessors import accessor_for
from agent.plugins.arguments import os_error_text
from agent.plugins.blocking import call_blocking
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

MAX_XML_BYTES = 64 * 1024 * 1024


def register(registry: Registry) -> None:
    registry.function(parse_xml)


def _element(node: ElementTree.Element) -> Any:
    value: dict[str, Any] = {f"Attr{name}": text for name, text in node.attrib.items()}
    for child in node:
        converted = _element(child)
        if child.tag in value:
            existing = value[child.tag]
            if isinstance(existing, list):
                existing.append(converted)
            else:
                value[child.tag] = [existing, converted]
        else:
            value[child.tag] = converted
    text = (node.text or "").strip()
    if not value:
        return text
    if text:
        value["#text"] = text
    return value


async def parse_xml(scope: Scope, *, file: Any, accessor: Any = None) -> Any:
    """The XML document ``file`` (through ``accessor``) as nested dicts, or NULL."""
    reader = accessor_for(scope, "parse_xml", accessor)
    target = None if reader is None else reader.target(scope, "parse_xml", "file", file)
    if reader is None or target is None:
        return None
    try:
        content = await call_blocking(reader.read, target, 0, MAX_XML_BYTES)
        root = await call_blocking(ElementTree.fromstring, content)
    except OSError as error:
        scope.error(f"parse_xml(): cannot read {reader.describe(target)}: "
                    f"{os_error_text(error)}")
        return None
    except ElementTree.ParseError as error:
        scope.error(f"parse_xml(): {reader.describe(target)} is not XML: {error}")
        return None
    return {root.tag: _element(root)}

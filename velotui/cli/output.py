"""Writing rows for people and for other programs: JSON lines, JSON, CSV and aligned tables."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import AsyncIterator, Iterable
from typing import Any, TextIO

from velotui.vql.values import cell_text, to_json_value

FORMATS = ("jsonl", "json", "csv", "table")


def columns_of(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Every column of ``rows``, in the order first seen."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


async def write_rows(rows: AsyncIterator[dict[str, Any]], fmt: str, out: TextIO) -> int:
    """Write ``rows`` to ``out`` in ``fmt``; JSON lines stream, the others need every row first.
    Returns how many rows were written."""
    if fmt == "jsonl":
        count = 0
        async for row in rows:
            out.write(json.dumps(to_json_value(row), ensure_ascii=False) + "\n")
            out.flush()
            count += 1
        return count
    collected = [row async for row in rows]
    write_collected(collected, fmt, out)
    return len(collected)


def write_collected(rows: list[dict[str, Any]], fmt: str, out: TextIO) -> None:
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(to_json_value(row), ensure_ascii=False) + "\n")
    elif fmt == "json":
        json.dump([to_json_value(row) for row in rows], out, indent=2, ensure_ascii=False)
        out.write("\n")
    elif fmt == "csv":
        columns = columns_of(rows)
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([cell_text(row.get(column)) for column in columns])
    elif fmt == "table":
        out.write(render_table(rows))
    else:
        raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def _clip(text: str, width: int) -> str:
    text = text.replace("\n", " ").replace("\t", " ")
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def render_table(rows: list[dict[str, Any]], max_width: int | None = None) -> str:
    """Rows as an aligned text table that fits the terminal, long cells clipped with '…'."""
    if not rows:
        return "(no rows)\n"
    columns = columns_of(rows)
    cells = [[cell_text(row.get(column)) for column in columns] for row in rows]
    widths = [
        max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)
    ]
    available = max_width or shutil.get_terminal_size((120, 24)).columns
    # Shrink the widest columns until the table fits (never below 8 characters).
    while sum(widths) + 2 * (len(widths) - 1) > available and max(widths) > 8:
        widest = widths.index(max(widths))
        widths[widest] -= 1
    header = "  ".join(_clip(c, w).ljust(w) for c, w in zip(columns, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = [
        "  ".join(_clip(cell, w).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]
    return "\n".join([header.rstrip(), rule, *body]) + "\n"

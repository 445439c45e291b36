"""Writing rows for people and for other programs: JSON lines, JSON, CSV and aligned tables."""

from __future__ import annotations

import csv
import json
import shutil
import sys
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


ID_COLUMNS = frozenset({"ID", "Id", "Client", "Hunt", "Flow", "Target"})
"""Columns holding IDs (with those named ``...Id``, ``...ID`` or ``..._id``): never clipped,
so an ID can always be copied from a table."""


def is_id_column(name: str) -> bool:
    return name in ID_COLUMNS or name.endswith(("Id", "ID", "_id"))


def _one_line(text: str) -> str:
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def render_table(rows: list[dict[str, Any]], max_width: int | None = None,
                 clip: bool | None = None) -> str:
    """Rows as an aligned text table, each cell on one line. With ``clip`` (by default: when
    ``max_width`` is given or standard output is a terminal), cells are clipped with '…' until
    the table fits ``max_width`` (by default the terminal's width), never below 8 characters
    and never in an ID column (``is_id_column``). Without it, nothing is clipped: output for
    another program keeps every character."""
    if not rows:
        return "(no rows)\n"
    if clip is None:
        clip = max_width is not None or sys.stdout.isatty()
    columns = columns_of(rows)
    cells = [[_one_line(cell_text(row.get(column))) for column in columns] for row in rows]
    widths = [
        max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)
    ]
    if clip:
        available = max_width or shutil.get_terminal_size((120, 24)).columns
        clippable = [i for i, column in enumerate(columns) if not is_id_column(column)]
        # Shrink the widest clippable column until the table fits (never below 8 characters).
        while clippable and sum(widths) + 2 * (len(widths) - 1) > available:
            widest = max(clippable, key=lambda i: widths[i])
            if widths[widest] <= 8:
                break
            widths[widest] -= 1
    header = "  ".join(_clip(c, w).ljust(w) for c, w in zip(columns, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = [
        "  ".join(_clip(cell, w).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]
    return "\n".join([header.rstrip(), rule, *body]) + "\n"

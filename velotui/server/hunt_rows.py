"""A hunt's stored rows as an operator triages them: filtered, paged and tallied.

Every row is seen as the operator sees it, with ``ClientId``, ``Fqdn`` and ``FlowId`` first, and
each cell as ``cell_text`` renders it (the table's text, the CSV's cell). The rows are read a few
stored batches at a time (``ResultReader.hunt_batches``), so a scan of a big hunt holds one read's
batches and the page or counts it builds, never the whole hunt.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from velotui.server.data.results import HuntMember, ResultReader
from velotui.vql.values import cell_text

AddedColumns = Callable[[HuntMember], dict[str, Any]]


@dataclass(frozen=True)
class RowFilter:
    """Which rows a page or a tally takes: those where some cell's text holds ``text`` (any
    case), and, with ``column``, whose ``column`` cell's text is exactly ``value``."""

    text: str = ""
    column: str | None = None
    value: str = ""
    _folded: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_folded", self.text.casefold())

    @property
    def takes_every_row(self) -> bool:
        return not self.text and self.column is None

    def matches(self, row: dict[str, Any]) -> bool:
        if self.column is not None and cell_text(row.get(self.column)) != self.value:
            return False
        if not self._folded:
            return True
        return any(self._folded in cell_text(cell).casefold() for cell in row.values())


async def hunt_rows(reader: ResultReader, hunt_id: str, added: AddedColumns
                    ) -> AsyncIterator[dict[str, Any]]:
    """Every stored row of the hunt in order, each with the columns ``added`` gives its member
    first."""
    async for member, rows in reader.hunt_batches(hunt_id):
        extra = added(member)
        for row in rows:
            yield {**extra, **row}


async def filtered_page(rows: AsyncIterator[dict[str, Any]], wanted: RowFilter, offset: int,
                        limit: int) -> tuple[list[dict[str, Any]], int]:
    """Matching rows ``offset`` to ``offset + limit`` and how many rows match in all."""
    page: list[dict[str, Any]] = []
    total = 0
    async for row in rows:
        if not wanted.matches(row):
            continue
        if offset <= total < offset + limit:
            page.append(row)
        total += 1
    return page, total


@dataclass
class _Tallied:
    rows: int = 0
    clients: set[str] = field(default_factory=set)


async def tally(rows: AsyncIterator[dict[str, Any]], column: str, wanted: RowFilter,
                limit: int) -> dict[str, Any]:
    """Matching rows counted by the text of their ``column`` cell (a row without it counts
    under ""): ``{"column", "values": [{"value", "rows", "clients"}] most rows first and ties
    by value, at most ``limit`` of them, "distinct", "rows", "truncated"}``."""
    counts: dict[str, _Tallied] = {}
    counted = 0
    async for row in rows:
        if not wanted.matches(row):
            continue
        counted += 1
        value = cell_text(row.get(column))
        entry = counts.get(value)
        if entry is None:
            entry = counts[value] = _Tallied()
        entry.rows += 1
        entry.clients.add(str(row.get("ClientId", "")))
    ranked = sorted(counts.items(), key=lambda item: (-item[1].rows, item[0]))
    return {
        "column": column,
        "values": [{"value": value, "rows": entry.rows, "clients": len(entry.clients)}
                   for value, entry in ranked[:limit]],
        "distinct": len(counts),
        "rows": counted,
        "truncated": len(counts) > limit,
    }

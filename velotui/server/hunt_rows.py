"""A hunt's stored rows as an operator triages them: filtered, paged and tallied.

Every row is seen as the operator sees it, with ``ClientId``, ``Fqdn`` and ``FlowId`` first, and
each cell as ``cell_text`` renders it (the table's text, the CSV's cell). The rows are read a
group of stored batches at a time (``ResultReader.hunt_batches``, bounded in count and bytes), so
a scan of a big hunt holds one group and the page or counts it builds, never the whole hunt.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
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
        if self.column is not None:
            cell = row.get(self.column)
            if (cell if cell.__class__ is str else cell_text(cell)) != self.value:
                return False
        folded = self._folded
        if not folded:
            return True
        for cell in row.values():
            # Most cells are text: cell_text would give them back as they are.
            text = cell if cell.__class__ is str else cell_text(cell)
            if folded in text.casefold():
                return True
        return False


async def hunt_rows(reader: ResultReader, hunt_id: str, added: AddedColumns
                    ) -> AsyncIterator[dict[str, Any]]:
    """Every stored row of the hunt in order, each with the columns ``added`` gives its member
    first."""
    async for batch in reader.hunt_batches(hunt_id):
        extra = added(batch.member)
        for row in batch.rows:
            yield {**extra, **row}


_ROW_BITS = 32  # a match is (batch number << _ROW_BITS) | the row's index in its batch


@dataclass(frozen=True)
class MatchIndex:
    """Where the rows a filter takes are, in order: the stored batches holding any, and each
    match as its batch's number among those and its index in the batch. Stored batches never
    change, so this holds for as long as the hunt's ``rows_version`` is ``version``."""

    version: tuple[Any, ...]
    batches: list[tuple[HuntMember, int]]  # (member, seq)
    matches: array[int]

    def __len__(self) -> int:
        return len(self.matches)


async def index_matches(reader: ResultReader, hunt_id: str, added: AddedColumns,
                        wanted: RowFilter) -> tuple[MatchIndex, bool]:
    """Read every stored row of the hunt once and note where those ``wanted`` takes are; and
    whether the hunt's rows stayed the same meanwhile (if not, the index is right for this
    read but not worth keeping)."""
    version = await reader.rows_version(hunt_id)
    batches: list[tuple[HuntMember, int]] = []
    matches = array("q")
    async for batch in reader.hunt_batches(hunt_id):
        extra = added(batch.member)
        number = len(batches) << _ROW_BITS
        found = [index for index, row in enumerate(batch.rows)
                 if wanted.matches({**extra, **row})]
        if found:
            batches.append((batch.member, batch.seq))
            matches.extend(number | index for index in found)
    settled = await reader.rows_version(hunt_id) == version
    return MatchIndex(version, batches, matches), settled


async def rows_of_matches(reader: ResultReader, index: MatchIndex, offset: int, limit: int,
                          added: AddedColumns) -> list[dict[str, Any]]:
    """Matches ``offset`` to ``offset + limit`` of ``index``, reading each member's batches
    that hold them in one read."""
    page = [(match >> _ROW_BITS, match & ((1 << _ROW_BITS) - 1))
            for match in index.matches[offset:offset + limit]]
    wanted: dict[HuntMember, list[int]] = {}
    for number, _position in page:
        member, seq = index.batches[number]
        seqs = wanted.setdefault(member, [])
        if not seqs or seqs[-1] != seq:
            seqs.append(seq)
    stored = {member: await reader.batches_rows(member, seqs) for member, seqs in wanted.items()}
    rows = []
    for number, position in page:
        member, seq = index.batches[number]
        rows.append({**added(member), **stored[member][seq][position]})
    return rows


class MatchCache:
    """The ``MatchIndex`` of the filters operators used last, so that paging through a
    filtered hunt reads the hunt once, not once a page. Bounded by the matches it holds (8
    bytes each); an index whose hunt's rows have changed since is made again (a client's FQDN
    that changed meanwhile is matched as it was until then)."""

    def __init__(self, max_matches: int = 4_000_000, max_entries: int = 32) -> None:
        self.max_matches = max_matches
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, RowFilter], MatchIndex] = OrderedDict()

    def get(self, hunt_id: str, wanted: RowFilter, version: tuple[Any, ...]
            ) -> MatchIndex | None:
        key = (hunt_id, wanted)
        index = self._entries.get(key)
        if index is None:
            return None
        if index.version != version:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return index

    def put(self, hunt_id: str, wanted: RowFilter, index: MatchIndex) -> None:
        if len(index) > self.max_matches:
            return
        self._entries[(hunt_id, wanted)] = index
        held = sum(len(entry) for entry in self._entries.values())
        while held > self.max_matches or len(self._entries) > self.max_entries:
            _key, dropped = self._entries.popitem(last=False)
            held -= len(dropped)


async def filtered_page(reader: ResultReader, hunt_id: str, added: AddedColumns,
                        wanted: RowFilter, offset: int, limit: int, cache: MatchCache
                        ) -> tuple[list[dict[str, Any]], int]:
    """Matching rows ``offset`` to ``offset + limit`` and how many rows match in all: from the
    cached index of ``wanted`` when the hunt has not changed since it was made; otherwise the
    hunt is read once to make it (kept for the next page unless rows arrived meanwhile)."""
    index = cache.get(hunt_id, wanted, await reader.rows_version(hunt_id))
    if index is None:
        index, settled = await index_matches(reader, hunt_id, added, wanted)
        if settled:
            cache.put(hunt_id, wanted, index)
    return await rows_of_matches(reader, index, offset, limit, added), len(index)


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
        value = row.get(column)
        if value.__class__ is not str:
            value = cell_text(value)
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

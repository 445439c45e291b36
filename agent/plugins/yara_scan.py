"""yara() and proc_yara(): YARA rules over files and process memory, with YARA-X, with the
arguments and rows of Velociraptor's plugins.

Rules are compiled once per rule text (a small cache shared by the queries of the agent), and
every scan runs in a worker thread, a file or a memory region at a time, so the event loop never
waits on one. A row is one hit: the rule, its meta and tags, and String {Name, Offset, Data,
HexData} with ``context`` bytes either side of the hit.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yara_x

from agent.plugins.arguments import int_argument, os_error_text
from agent.plugins.blocking import CHECKPOINT, stream_blocking
from agent.plugins.files import file_row
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

DEFAULT_HITS = 1
DEFAULT_END = 100 * 1024 * 1024
DEFAULT_BLOCKSIZE = 1024 * 1024
# Accessors whose paths are files of this machine. The accessor module of the file plugins can
# take over here once it exists; until then the files are read directly.
_OS_ACCESSORS = frozenset({"", "auto", "file"})
_SHORTHAND = re.compile(r"^(wide|wide ascii|wide nocase|wide nocase ascii)\s*:(.*)$", re.DOTALL)
_COMPILED_CACHE_SIZE = 32
# A memory region is scanned in chunks of this size; each chunk also sees the next few KiB, so a
# hit that starts near a chunk's end is found whole.
_MEMORY_CHUNK = 16 * 1024 * 1024
_MEMORY_OVERLAP = 4096
_LARGEST_OFFSET = 2**63 - 1


@dataclass(frozen=True)
class _Problem:
    """Said by a scan running in a worker thread; logged by the query's own thread (a query's
    log sink belongs to the event loop)."""

    level: str
    message: str


class RulesError(ValueError):
    """The rules did not compile; the message says where and why, in one line."""


def expand_shorthand(rules: str) -> str:
    """Velociraptor's shorthand ``wide nocase ascii:word1,word2`` as a rule matching any of the
    words; rules in the YARA language unchanged."""
    text = rules.strip()
    match = _SHORTHAND.match(text)
    if match is None:
        return rules
    modifiers, words = match.groups()
    strings = " ".join(
        f"$ = {_yara_string(word.strip())} {modifiers}" for word in words.split(",")
        if word.strip()
    )
    return f"rule X {{ strings: {strings} condition: any of them }}"


def _yara_string(word: str) -> str:
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def compile_error_text(error: Exception) -> str:
    """YARA-X's multi-line report as one line: ``line L, column C: reason``."""
    text = str(error)
    lines = text.splitlines()
    reason = lines[0] if lines else text
    reason = re.sub(r"^error(\[\w+\])?:\s*", "", reason)
    where = re.search(r"-->\s*line:(\d+):(\d+)", text)
    return f"line {where.group(1)}, column {where.group(2)}: {reason}" if where else reason


@functools.lru_cache(maxsize=_COMPILED_CACHE_SIZE)
def _compile(text: str, namespace: str, variables: tuple[tuple[str, Any], ...]) -> yara_x.Rules:
    compiler = yara_x.Compiler()
    problem = None
    for name, value in variables:
        try:
            compiler.define_global(name, value)
        except (TypeError, ValueError) as error:
            problem = f"variable {name!r}: {error}"
            break
    if problem is None:
        if namespace:
            compiler.new_namespace(namespace)
        try:
            compiler.add_source(expand_shorthand(text))
        except yara_x.CompileError as error:
            problem = compile_error_text(error)
    if problem is not None:
        # A compiler must be dropped on the thread that made it: no traceback may carry it to
        # the event loop's thread.
        del compiler
        raise RulesError(problem)
    return compiler.build()


def compiled_rules(text: str, namespace: str = "", variables: Mapping[str, Any] | None = None
                   ) -> yara_x.Rules:
    """The rules compiled (once per text, namespace and variables; blocking). Raises RulesError
    with a one-line reason when they do not compile."""
    return _compile(text, namespace, tuple(sorted((variables or {}).items())))


def hex_dump(data: bytes, base: int = 0) -> list[str]:
    """Lines like Go's hex.Dump: offset, 16 bytes in hex in two groups of 8, and the printable
    characters between bars."""
    lines = []
    for at in range(0, len(data), 16):
        chunk = data[at:at + 16]
        hex_part = " ".join(f"{byte:02x}" for byte in chunk[:8])
        if len(chunk) > 8:
            hex_part += "  " + " ".join(f"{byte:02x}" for byte in chunk[8:])
        text = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in chunk)
        lines.append(f"{base + at:08x}  {hex_part:<48}  |{text}|")
    return lines


def _meta(rule: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for name, value in rule.metadata:
        meta[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return meta


@dataclass(frozen=True)
class ScanOptions:
    """What a scan reports: hits wanted (per file or process) and bytes of context."""

    number: int = DEFAULT_HITS
    context: int = 0
    end: int = DEFAULT_END


def _hits(results: Any, limit: int | None) -> Iterator[tuple[Any, str | None, int, int]]:
    """(rule, pattern name, offset, length) per hit, or a None name for a rule that matched
    without a string; offsets at or past ``limit`` (within the scanned data) are left out."""
    for rule in results.matching_rules:
        matched = False
        for pattern in rule.patterns:
            for match in pattern.matches:
                if limit is not None and match.offset >= limit:
                    continue
                matched = True
                yield rule, pattern.identifier, match.offset, match.length
        if not matched:
            yield rule, None, 0, 0


def _row(rule: Any, string: dict[str, Any] | None) -> dict[str, Any]:
    return {"Rule": rule.identifier, "Meta": _meta(rule), "Tags": list(rule.tags),
            "String": string}


def _string(name: str, offset: int, data: bytes, data_start: int) -> dict[str, Any]:
    return {"Name": name, "Offset": offset, "HexData": hex_dump(data, data_start), "Data": data}


# yara() ---------------------------------------------------------------------------------------


def _read_at(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


class _FileScan:
    """One file's scan, as a blocking generator of rows."""

    def __init__(self, scope: Scope, rules: yara_x.Rules, options: ScanOptions) -> None:
        self.scope = scope
        self.rules = rules
        self.options = options

    def rows(self, path: str, data: bytes | None, start: int, blocksize: int,
             whole: bool) -> Iterator[Any]:
        if data is None:
            try:
                info: dict[str, Any] | None = file_row(path)
            except OSError as error:
                yield _Problem("error", f"yara(): cannot read {path}: {os_error_text(error)}")
                return
        else:
            info = None
        reported = 0
        for item in self._matches(path, data, start, blocksize, whole):
            if not isinstance(item, dict):  # a checkpoint or a problem
                yield item
                continue
            yield {**item, "File": info, "FileName": path}
            reported += 1
            if reported >= self.options.number:
                return

    def _matches(self, path: str, data: bytes | None, start: int, blocksize: int,
                 whole: bool) -> Iterator[Any]:
        scanner = yara_x.Scanner(self.rules)
        context = self.options.context
        end = self.options.end
        if whole and data is None:
            # The whole file at once (mapped by YARA-X), as libyara scans a real file: rules
            # that look at the header and deep in the file work.
            try:
                results = scanner.scan_file(path)
            except (yara_x.ScanError, OSError) as error:
                yield _Problem("error", f"yara(): cannot scan {path}: {error}")
                return
            for rule, name, offset, length in _hits(results, end):
                yield self._hit_row(rule, name, offset, length, path, None, context)
            return
        # In blocks from start to end, as Velociraptor scans what it reads through an accessor.
        position = start
        while position < end:
            try:
                block = (data[position:position + blocksize] if data is not None
                         else _read_at(path, position, blocksize))
            except OSError as error:
                yield _Problem("error", f"yara(): cannot read {path}: {os_error_text(error)}")
                return
            if not block:
                return
            try:
                results = scanner.scan(block)
            except yara_x.ScanError as error:
                yield _Problem("error", f"yara(): cannot scan {path}: {error}")
                return
            for rule, name, offset, length in _hits(results, end - position):
                yield self._hit_row(rule, name, position + offset, length, path, data, context)
            position += len(block)
            # Past the query's deadline the scan ends here (DeadlineExceeded reaches the query).
            self.scope.context.check_deadline()
            yield CHECKPOINT

    def _hit_row(self, rule: Any, name: str | None, offset: int, length: int, path: str,
                 data: bytes | None, context: int) -> dict[str, Any]:
        if name is None:
            return _row(rule, None)
        data_start = max(offset - context, 0)
        size = offset + length + context - data_start
        try:
            hit = (data[data_start:data_start + size] if data is not None
                   else _read_at(path, data_start, size))
        except OSError:
            hit = b""
        return _row(rule, _string(name, offset, hit, data_start))


async def _logged(scope: Scope, items: AsyncIterator[Any]) -> AsyncIterator[dict[str, Any]]:
    """The rows of a scan, logging its problems here, in the query's thread."""
    async for item in items:
        if isinstance(item, _Problem):
            scope.context.log(item.level, item.message)
        else:
            yield item


def _path_of(item: Any) -> str | None:
    if isinstance(item, Mapping):
        item = item.get("OSPath", item.get("FullPath"))
    if isinstance(item, str | os.PathLike):
        path = os.fspath(item)
        return path if isinstance(path, str) and path else None
    return None


def _rules_argument(scope: Scope, function: str, rules: Any, namespace: Any, variables: Any
                    ) -> tuple[str, str, dict[str, Any]] | None:
    if not isinstance(rules, str) or not rules.strip():
        scope.error(f"{function}(): rules must be YARA rules as text, not {rules!r}")
        return None
    if namespace is not None and not isinstance(namespace, str):
        scope.error(f"{function}(): namespace must be a string, not {namespace!r}")
        return None
    if variables is not None and not isinstance(variables, Mapping):
        scope.error(f"{function}(): vars must be a dict of names to values, not {variables!r}")
        return None
    return rules, namespace or "", dict(variables or {})


async def _compiled(scope: Scope, function: str, text: str, namespace: str,
                    variables: dict[str, Any]) -> yara_x.Rules | None:
    try:
        return await asyncio.to_thread(compiled_rules, text, namespace, variables)
    except RulesError as error:
        scope.error(f"{function}(): cannot compile the rules: {error}")
        return None


def _options(scope: Scope, function: str, number: Any, context: Any, end: Any = None
             ) -> ScanOptions | None:
    hits = DEFAULT_HITS if number is None else int_argument(scope, function, "number", number,
                                                            minimum=1)
    around = 0 if context is None else int_argument(scope, function, "context", context)
    until = DEFAULT_END if end is None else int_argument(scope, function, "end", end, minimum=1)
    if hits is None or around is None or until is None:
        return None
    return ScanOptions(number=hits, context=around, end=until)


async def yara(
    scope: Scope,
    *,
    rules: Any,
    files: Any,
    accessor: Any = None,
    context: Any = None,
    start: Any = None,
    end: Any = None,
    number: Any = None,
    blocksize: Any = None,
    key: Any = None,
    namespace: Any = None,
    vars: Any = None,
    force_buffers: Any = None,
) -> AsyncIterator[dict[str, Any]]:
    """Scan each of ``files`` (paths, or rows with OSPath) with the YARA ``rules``; one row per
    hit: Rule, Meta, Tags, String {Name, Offset, HexData, Data} (NULL for a rule matching without
    a string), File (the file's stat() row) and FileName. ``number`` hits per file (1),
    ``context`` bytes either side of each hit in Data. A file is scanned whole unless ``start``
    or ``force_buffers`` is given; then in ``blocksize`` blocks (1 MiB) from ``start`` to ``end``
    (100 MiB). accessor "data" scans the strings given as files. ``key`` is accepted: rules are
    cached by their text."""
    del key  # compiled rules are cached by their text, which a key could only alias
    checked = _rules_argument(scope, "yara", rules, namespace, vars)
    options = _options(scope, "yara", number, context, end)
    first = 0 if start is None else int_argument(scope, "yara", "start", start)
    block = DEFAULT_BLOCKSIZE if blocksize is None else int_argument(
        scope, "yara", "blocksize", blocksize, minimum=1)
    if checked is None or options is None or first is None or block is None:
        return
    accessor_name = accessor or ""
    if not isinstance(accessor_name, str) or accessor_name not in _OS_ACCESSORS | {"data"}:
        scope.error(f"yara(): accessor {accessor!r} is not supported on this agent "
                    "(use file, auto or data)")
        return
    compiled = await _compiled(scope, "yara", *checked)
    if compiled is None:
        return
    scan = _FileScan(scope, compiled, options)
    whole = first == 0 and not force_buffers
    async for item in scope.iterate(files):
        scope.context.check_deadline()  # many files without a hit yield no row to check at
        if accessor_name == "data":
            data = item.encode("utf-8") if isinstance(item, str) else item
            if not isinstance(data, bytes):
                scope.error(f"yara(): with accessor data, files must be strings, not {item!r}")
                continue
            rows = scan.rows("data", data, first, block, whole)
        else:
            path = _path_of(item)
            if path is None:
                scope.error(f"yara(): files must be paths or rows with OSPath, not {item!r}")
                continue
            rows = scan.rows(path, None, first, block, whole)
        async for row in _logged(scope, stream_blocking(rows, max_items=64, max_checkpoints=4)):
            yield row


# proc_yara() ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryRegion:
    """A readable mapping of a process: [start, end) and what /proc/PID/maps names it."""

    start: int
    end: int
    name: str


def readable_regions(pid: int) -> list[MemoryRegion]:
    """The process's readable mappings from /proc/PID/maps; raises OSError when they cannot be
    read (no such process, not allowed)."""
    with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as handle:
        return parse_maps(handle.read())


def parse_maps(text: str) -> list[MemoryRegion]:
    """The readable mappings listed in the text of a /proc/PID/maps file, less the kernel's
    pages that cannot be read through /proc/PID/mem."""
    regions = []
    for line in text.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 5 or not fields[1].startswith("r"):
            continue
        name = fields[5].strip() if len(fields) > 5 else ""
        if name.startswith("[vvar"):
            continue  # the kernel's variables page: reading it fails
        low_text, _, high_text = fields[0].partition("-")
        try:
            low, high = int(low_text, 16), int(high_text, 16)
        except ValueError:
            continue
        if high > _LARGEST_OFFSET:
            continue  # [vsyscall], above what a file offset can name
        regions.append(MemoryRegion(low, high, name))
    return regions


class _MemoryScan:
    def __init__(self, scope: Scope, rules: yara_x.Rules, options: ScanOptions, pid: int
                 ) -> None:
        self.scope = scope
        self.rules = rules
        self.options = options
        self.pid = pid
        self.memory = -1  # /proc/PID/mem while the scan runs

    def rows(self, regions: list[MemoryRegion]) -> Iterator[Any]:
        # Opened here, in the generator, so that it is closed by whichever thread ends the scan.
        try:
            self.memory = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY)
        except OSError as error:
            yield _Problem("error", f"proc_yara(): cannot read the memory of process "
                                    f"{self.pid}: {os_error_text(error)}")
            return
        reported = 0
        try:
            for region in regions:
                for row in self._region_rows(region):
                    yield row
                    if isinstance(row, _Problem):
                        continue
                    reported += 1
                    if reported >= self.options.number:
                        return
                self.scope.context.check_deadline()
                yield CHECKPOINT
        finally:
            os.close(self.memory)

    def _region_rows(self, region: MemoryRegion) -> Iterator[Any]:
        scanner = yara_x.Scanner(self.rules)
        position = region.start
        while position < region.end:
            size = min(_MEMORY_CHUNK, region.end - position)
            try:
                chunk = os.pread(self.memory, min(size + _MEMORY_OVERLAP,
                                                  region.end - position), position)
            except OSError:
                return  # a region that cannot be read (a guard page, a device): skipped
            if not chunk:
                return
            try:
                results = scanner.scan(chunk)
            except yara_x.ScanError as error:
                yield _Problem("warning", f"proc_yara(): pid {self.pid}: cannot scan the region "
                                          f"at {position:#x}: {error}")
                return
            for rule, name, offset, length in _hits(results, size):
                yield self._hit_row(rule, name, position + offset, length, chunk, position)
            position += size

    def _hit_row(self, rule: Any, name: str | None, address: int, length: int, chunk: bytes,
                 chunk_start: int) -> dict[str, Any]:
        row = _row(rule, None)
        row["Pid"] = self.pid
        if name is not None:
            context = self.options.context
            data_start = max(address - context, 0)
            try:
                hit = os.pread(self.memory, address + length + context - data_start, data_start)
            except OSError:  # the context reaches into an unreadable page: the hit alone
                data_start = address
                hit = chunk[address - chunk_start:address - chunk_start + length]
            row["String"] = _string(name, address, hit, data_start)
        return row


def _check_readable(pid: int) -> list[MemoryRegion]:
    regions = readable_regions(pid)
    os.close(os.open(f"/proc/{pid}/mem", os.O_RDONLY))  # refused here, not mid-scan
    return regions


async def proc_yara(
    scope: Scope,
    *,
    rules: Any,
    pid: Any,
    context: Any = None,
    key: Any = None,
    namespace: Any = None,
    vars: Any = None,
    number: Any = None,
) -> AsyncIterator[dict[str, Any]]:
    """Scan the readable memory of process ``pid`` with the YARA ``rules`` (each mapping of
    /proc/PID/maps on its own; mappings that cannot be read are skipped). One row per hit:
    Rule, Meta, Tags, String {Name, Offset (the address), HexData, Data} and Pid; ``number``
    hits (1), ``context`` bytes either side of each hit. A process the agent may not read is an
    error."""
    del key  # compiled rules are cached by their text
    checked = _rules_argument(scope, "proc_yara", rules, namespace, vars)
    options = _options(scope, "proc_yara", number, context)
    wanted = int_argument(scope, "proc_yara", "pid", pid)
    if checked is None or options is None or wanted is None:
        return
    if not os.path.isdir("/proc/self"):
        scope.error("proc_yara(): process memory can only be read on Linux (/proc)")
        return
    compiled = await _compiled(scope, "proc_yara", *checked)
    if compiled is None:
        return
    try:
        regions = await asyncio.to_thread(_check_readable, wanted)
    except FileNotFoundError:
        scope.error(f"proc_yara(): no process {wanted}")
        return
    except OSError as error:
        scope.error(f"proc_yara(): cannot read the memory of process {wanted}: "
                    f"{os_error_text(error)}")
        return
    scan = _MemoryScan(scope, compiled, options, wanted)
    async for row in _logged(scope, stream_blocking(scan.rows(regions), max_items=64,
                                                    max_checkpoints=4)):
        yield row


def register(registry: Registry) -> None:
    """Add yara() and proc_yara() to the registry."""
    registry.plugin(yara)
    registry.plugin(proc_yara)

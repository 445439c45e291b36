"""Parsers of file formats, with Velociraptor's names, arguments and columns: parse_csv(),
parse_jsonl(), parse_yaml(), parse_records_with_regex() and split_records().

Each reads through an accessor (``accessor=``), so ``accessor='data'`` parses a string. The
plugins stream: a worker thread reads and parses a batch of rows at a time.

Regular expressions are written in Go's syntax, as Velociraptor's artifacts write them; the few
spellings Python reads differently are translated (see ``go_regex``).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import yaml

from agent.plugins.accessors import Accessor, Target, accessor_for, targets
from agent.plugins.arguments import int_argument, os_error_text
from agent.plugins.blocking import call_blocking, stream_blocking
from agent.plugins.files import MAX_LINE_BYTES, open_maybe_gzip
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
"""parse_yaml() and parse_records_with_regex() read a whole file: at most this much of it."""

READ_BYTES = 64 * 1024

DEFAULT_SPLIT_REGEX = r"\s+"
DEFAULT_RECORD_REGEX = r"\r?\n"

_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z_])")
_INLINE_FLAGS = re.compile(r"\(\?([imsU]+)\)")


def go_regex(pattern: str) -> re.Pattern[str]:
    """A Go regular expression compiled by Python's ``re``; raises ``re.error``.

    Go accepts ``(?<name>...)`` for a named group, inline flags anywhere (they apply from there
    on; here to the whole pattern) and ``\\z`` for the end of the text.
    """
    translated = _NAMED_GROUP.sub("(?P<", pattern).replace(r"\z", r"\Z")
    flags = set()
    for match in _INLINE_FLAGS.finditer(translated):
        flags.update(match.group(1))
    if flags:
        flags.discard("U")  # Go's ungreedy switch has no Python spelling; rarely used
        translated = _INLINE_FLAGS.sub("", translated)
        if flags:
            translated = f"(?{''.join(sorted(flags))})" + translated
    return re.compile(translated)


def _regex_argument(scope: Scope, function: str, argument: str, value: Any
                    ) -> re.Pattern[str] | None:
    if not isinstance(value, str):
        scope.error(f"{function}(): {argument} must be a regular expression, not {value!r}")
        return None
    try:
        return go_regex(value)
    except (re.error, OverflowError, RecursionError) as error:
        scope.error(f"{function}(): {argument} {value!r} is not a valid regular expression: "
                    f"{error}")
        return None


def _names_argument(scope: Scope, function: str, argument: str, value: Any
                    ) -> list[str] | None:
    """Column names: a string or a list of strings (an empty list when NULL)."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        scope.error(f"{function}(): {argument} must be a list of column names, not {value!r}")
        return None
    return list(names)


def _row(values: list[str], headers: list[str]) -> dict[str, Any]:
    """Values under their headers; values past the headers are Column<index>, as in
    Velociraptor."""
    return {
        (headers[index] if index < len(headers) else f"Column{index}"): value
        for index, value in enumerate(values)
    }


def _read_whole(reader: Accessor, target: Target) -> tuple[bytes, bool]:
    """The target's bytes (at most MAX_DOCUMENT_BYTES) and whether it was longer."""
    with open_maybe_gzip(reader, target) as handle:
        data = handle.read(MAX_DOCUMENT_BYTES + 1)
    return data[:MAX_DOCUMENT_BYTES], len(data) > MAX_DOCUMENT_BYTES


async def _each_target(
    scope: Scope, function: str, argument: str, value: Any, accessor: Any
) -> tuple[Accessor, list[Target]] | None:
    reader = accessor_for(scope, function, accessor)
    if reader is None:
        return None
    found = targets(scope, function, argument, value, reader)
    return None if found is None else (reader, found)


# parse_csv() ----------------------------------------------------------------------------------


def _single_character(scope: Scope, argument: str, value: Any, default: str | None
                      ) -> str | bool | None:
    """The one-character argument, its default when NULL, or False after logging an error."""
    if value is None or value == "":
        return default
    if isinstance(value, str) and len(value) == 1:
        return value
    scope.error(f"parse_csv(): {argument} must be a single character, not {value!r}")
    return False


def _csv_rows(reader: Accessor, target: Target, separator: str, comment: str | None,
              columns: list[str], auto_headers: bool) -> Iterator[dict[str, Any]]:
    with open_maybe_gzip(reader, target) as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="replace", newline="")
        lines: Iterator[str] = text
        if comment is not None:
            lines = (line for line in text if not line.startswith(comment))
        records = csv.reader(lines, delimiter=separator)
        headers = list(columns)
        try:
            for values in records:
                if not values:
                    continue
                if not headers and not auto_headers:
                    headers = values
                    continue
                yield _row(values, headers)
        except csv.Error as error:
            raise OSError(f"line {records.line_num}: {error}") from error


async def parse_csv(
    scope: Scope,
    *,
    filename: Any,
    accessor: Any = None,
    auto_headers: Any = False,
    separator: Any = None,
    comment: Any = None,
    columns: Any = None,
) -> AsyncIterator[dict[str, Any]]:
    """One row per CSV record of each file, under the names in its first row; under
    ``columns`` when given (then the first row is a record), or Column0, Column1, ... with
    ``auto_headers``. ``separator`` (default ``,``) and ``comment`` are single characters."""
    found = await _each_target(scope, "parse_csv", "filename", filename, accessor)
    delimiter = _single_character(scope, "separator", separator, ",")
    comment_mark = _single_character(scope, "comment", comment, None)
    names = _names_argument(scope, "parse_csv", "columns", columns)
    if found is None or delimiter is False or comment_mark is False or names is None:
        return
    reader, files = found
    for target in files:
        rows = _csv_rows(reader, target, delimiter, comment_mark,  # type: ignore[arg-type]
                         names, bool(auto_headers))
        try:
            async for row in stream_blocking(rows):
                yield row
        except OSError as error:
            scope.error(f"parse_csv(): {reader.describe(target)}: {os_error_text(error)}")


# parse_jsonl() --------------------------------------------------------------------------------


class _BadLines:
    """Lines of a JSONL file that are not JSON objects: counted, the first one named."""

    def __init__(self) -> None:
        self.count = 0
        self.first: tuple[int, str] | None = None


def _jsonl_rows(reader: Accessor, target: Target, bad: _BadLines) -> Iterator[dict[str, Any]]:
    with open_maybe_gzip(reader, target) as handle:
        number = 0
        while raw := handle.readline(MAX_LINE_BYTES):
            number += 1
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except ValueError as error:
                reason = f"not JSON ({error})"
            else:
                if isinstance(value, dict):
                    yield value
                    continue
                reason = f"a JSON {type(value).__name__}, not an object"
            bad.count += 1
            if bad.first is None:
                bad.first = (number, reason)


async def parse_jsonl(scope: Scope, *, filename: Any, accessor: Any = None
                      ) -> AsyncIterator[dict[str, Any]]:
    """One row per line of the file holding a JSON object, with its keys as columns; other
    lines are skipped and counted in one error."""
    found = await _each_target(scope, "parse_jsonl", "filename", filename, accessor)
    if found is None:
        return
    reader, files = found
    for target in files:
        bad = _BadLines()
        try:
            async for row in stream_blocking(_jsonl_rows(reader, target, bad)):
                yield row
        except OSError as error:
            scope.error(f"parse_jsonl(): {reader.describe(target)}: {os_error_text(error)}")
        if bad.first is not None:
            line, reason = bad.first
            scope.error(f"parse_jsonl(): {reader.describe(target)}: skipped {bad.count} "
                        f"line(s), the first (line {line}) is {reason}")


# parse_yaml() ---------------------------------------------------------------------------------


def _load_yaml(reader: Accessor, target: Target) -> Any:
    data, truncated = _read_whole(reader, target)
    if truncated:
        raise OSError(f"larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        return yaml.safe_load(data)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise OSError(f"not YAML{at}: {problem}") from error


async def parse_yaml(scope: Scope, *, filename: Any, accessor: Any = None, schema: Any = None
                     ) -> Any:
    """The YAML document in the file as a value (a dict, a list, ...); NULL when it cannot be
    read or parsed. A ``schema`` is not checked (a warning says so)."""
    reader = accessor_for(scope, "parse_yaml", accessor)
    target = reader.target(scope, "parse_yaml", "filename", filename) if reader else None
    if reader is None or target is None:
        return None
    if schema is not None:
        scope.warn("parse_yaml(): schema= is not checked here; the document is returned as is")
    try:
        return await call_blocking(_load_yaml, reader, target)
    except OSError as error:
        scope.error(f"parse_yaml(): {reader.describe(target)}: {os_error_text(error)}")
        return None


# parse_records_with_regex() -------------------------------------------------------------------


def _regex_records(reader: Accessor, target: Target, patterns: list[re.Pattern[str]],
                   truncated: list[bool]) -> Iterator[dict[str, Any]]:
    data, truncated[0] = _read_whole(reader, target)
    text = data.decode("utf-8", errors="replace")
    for pattern in patterns:
        names = list(pattern.groupindex)
        for match in pattern.finditer(text):
            # A group that took no part in the match is an empty string, as in Go.
            yield {name: match.group(name) or "" for name in names}


async def parse_records_with_regex(
    scope: Scope, *, file: Any, regex: Any, accessor: Any = None, buffer_size: Any = None
) -> AsyncIterator[dict[str, Any]]:
    """One row per match of each regular expression in each file, with the named groups as
    columns. The whole file (up to 64 MiB) is matched at once; ``buffer_size`` is accepted
    for Velociraptor's sake and not needed."""
    del buffer_size
    found = await _each_target(scope, "parse_records_with_regex", "file", file, accessor)
    expressions = regex if isinstance(regex, list | tuple) else [regex]
    if not expressions:
        scope.error("parse_records_with_regex(): regex is an empty list")
    patterns = [_regex_argument(scope, "parse_records_with_regex", "regex", expression)
                for expression in expressions]
    if found is None or not patterns or None in patterns:
        return
    reader, files = found
    for target in files:
        truncated = [False]
        records = _regex_records(reader, target, patterns, truncated)  # type: ignore[arg-type]
        try:
            async for row in stream_blocking(records):
                yield row
        except OSError as error:
            scope.error(f"parse_records_with_regex(): {reader.describe(target)}: "
                        f"{os_error_text(error)}")
        if truncated[0]:
            scope.warn(f"parse_records_with_regex(): {reader.describe(target)}: only the first "
                       f"{MAX_DOCUMENT_BYTES} bytes were read")


# split_records() ------------------------------------------------------------------------------


def split_go(pattern: re.Pattern[str], text: str, count: int = -1) -> list[str]:
    """``text`` split at the matches of ``pattern`` as Go's ``Regexp.Split`` splits it: groups
    in the pattern add nothing, and ``count`` > 0 gives at most that many parts."""
    parts: list[str] = []
    begin = end = 0
    for match in pattern.finditer(text):
        if count > 0 and len(parts) == count - 1:
            break
        end = match.start()
        if match.end() != 0:
            parts.append(text[begin:end])
        begin = match.end()
    if end != len(text):
        parts.append(text[begin:])
    return parts


def _records(reader: Accessor, target: Target, record_pattern: re.Pattern[str],
             max_record: int) -> Iterator[str]:
    """The records of the file, split at ``record_pattern``, read a block at a time."""
    with open_maybe_gzip(reader, target) as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8", errors="replace", newline="")
        pending = ""
        finished = False
        while not finished:
            block = text.read(READ_BYTES)
            finished = not block
            pending += block
            start = 0
            for match in record_pattern.finditer(pending):
                if not finished and match.end() == len(pending):
                    break  # the separator may go on in the next block
                if match.end() == match.start():
                    continue
                yield pending[start:match.start()]
                start = match.end()
            pending = pending[start:]
            while len(pending) > max_record:
                yield pending[:max_record]  # no separator in sight: cut, as lines are
                pending = pending[max_record:]
        if pending:
            yield pending


def _split_rows(reader: Accessor, target: Target, split: re.Pattern[str],
                record_pattern: re.Pattern[str], columns: list[str], headers_first: bool,
                count: int, max_record: int) -> Iterator[dict[str, Any]]:
    headers = list(columns)
    for record in _records(reader, target, record_pattern, max_record):
        if not record:
            continue
        values = split_go(split, record, count)
        if headers_first and not headers:
            headers = values
            continue
        yield _row(values, headers)


async def split_records(
    scope: Scope,
    *,
    filenames: Any,
    accessor: Any = None,
    regex: Any = None,
    columns: Any = None,
    first_row_is_headers: Any = False,
    count: Any = None,
    record_regex: Any = None,
    buffer_size: Any = None,
) -> AsyncIterator[dict[str, Any]]:
    """One row per record of each file (records end at ``record_regex``, a line end by
    default), split at ``regex`` (whitespace by default) into at most ``count`` values. The
    values are named by ``columns``, else by the first record with ``first_row_is_headers``;
    values past the names are Column0, Column1, ... by position."""
    found = await _each_target(scope, "split_records", "filenames", filenames, accessor)
    split = _regex_argument(scope, "split_records", "regex",
                            DEFAULT_SPLIT_REGEX if regex is None else regex)
    record_pattern = _regex_argument(
        scope, "split_records", "record_regex",
        DEFAULT_RECORD_REGEX if record_regex is None else record_regex)
    names = _names_argument(scope, "split_records", "columns", columns)
    parts = -1 if count is None else int_argument(scope, "split_records", "count", count)
    max_record = int_argument(scope, "split_records", "buffer_size",
                              MAX_LINE_BYTES if buffer_size is None else buffer_size, minimum=1)
    if (found is None or split is None or record_pattern is None or names is None
            or parts is None or max_record is None):
        return
    reader, files = found
    for target in files:
        rows = _split_rows(reader, target, split, record_pattern, names,
                           bool(first_row_is_headers), parts or -1, max_record)
        try:
            async for row in stream_blocking(rows):
                yield row
        except OSError as error:
            scope.error(f"split_records(): {reader.describe(target)}: {os_error_text(error)}")


def register(registry: Registry) -> None:
    """Add parse_csv(), parse_jsonl(), parse_yaml(), parse_records_with_regex() and
    split_records() to the registry."""
    registry.plugin(parse_csv)
    registry.plugin(parse_jsonl)
    registry.function(parse_yaml)
    registry.plugin(parse_records_with_regex)
    registry.plugin(split_records)

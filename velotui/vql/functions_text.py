"""VQL functions that take text apart or convert it: numbers from strings, byte encodings,
substrings, regular-expression extraction and command lines (Velociraptor's names and
arguments). Bad input is logged and gives NULL; nothing here raises into a query."""

from __future__ import annotations

import base64
import binascii
import builtins
import math
import re
import shlex
import zlib
from datetime import UTC, datetime
from typing import Any

from velotui.vql.gofmt import go_text
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope


def register(registry: Registry) -> None:
    """Add the text functions to ``registry``."""
    for fn in (
        atoi,
        parse_float,
        substr,
        base64encode,
        base64decode,
        unhex,
        utf16,
        xor,
        parse_string_with_regex,
        regex_transform,
        commandline_split,
        humanize,
        rot13,
        base85decode,
        utf16_encode,
        entropy,
        crypto_rc4,
        gunzip,
    ):
        registry.function(fn)


# Go's regular expressions, read by Python --------------------------------------------------------

_GO_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z_])")
_GO_INLINE_FLAGS = re.compile(r"\(\?([imsU]+)\)")
_PYTHON_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}


def go_regex(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """Compile a Go (RE2) pattern: ``(?<name>...)`` groups and flag groups such as ``(?i)``
    anywhere in the pattern (Python only takes them at the start, so they apply to all of it).
    Raises ``re.error`` when the pattern is invalid."""
    flags = re.IGNORECASE if ignore_case else 0

    def take_flags(found: re.Match[str]) -> str:
        nonlocal flags
        for letter in found.group(1):
            flags |= _PYTHON_FLAGS.get(letter, 0)
        return ""

    cleaned = _GO_INLINE_FLAGS.sub(take_flags, _GO_NAMED_GROUP.sub("(?P<", pattern))
    return re.compile(cleaned, flags)


def _regex_list(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return list(value)
    return None


# Numbers -----------------------------------------------------------------------------------------

_GO_INTEGER = re.compile(
    r"[+-]?(0[bB][01_]+|0[oO][0-7_]+|0[xX][0-9a-fA-F_]+|0[0-7_]*|[1-9][0-9_]*)"
)


def _go_parse_int(text: str) -> int | None:
    """Go's strconv.ParseInt(text, 0, 64): sign, 0b/0o/0x/0 prefixes, underscores between
    digits; None when the text is not such a number or does not fit in 64 bits."""
    if not _GO_INTEGER.fullmatch(text):
        return None
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if "__" in body or body.endswith("_"):
        return None
    body = body.replace("_", "")
    if len(body) > 1 and body[0] == "0" and body[1].isdigit():
        body = "0o" + body[1:]
    try:
        number = sign * int(body, 0)
    except ValueError:
        return None
    if not -(2**63) <= number < 2**63:
        return None
    return number


def atoi(scope: Scope, *, string: Any) -> Any:
    """``string`` as a 64-bit integer, read the way Go's strconv.ParseInt reads it (a sign, then
    0b, 0o or 0, or 0x for other bases, underscores allowed). Integers pass through and floats
    are truncated. Text that is not a number gives 0, as in Velociraptor; NULL gives NULL."""
    if string is None:
        return None
    if isinstance(string, bool):
        return int(string)
    if isinstance(string, int):
        return string
    if isinstance(string, float):
        return int(string) if math.isfinite(string) else 0
    if isinstance(string, bytes):
        string = string.decode("utf-8", errors="replace")
    if not isinstance(string, str):
        scope.error(f"atoi(): cannot convert {go_text(string)!r} to an integer")
        return None
    number = _go_parse_int(string)
    return 0 if number is None else number


def parse_float(scope: Scope, *, string: Any) -> Any:
    """``string`` as a float (Go's strconv.ParseFloat); numbers pass through. Text that is not a
    number gives 0, as in Velociraptor; NULL gives NULL."""
    if string is None:
        return None
    if isinstance(string, int | float):
        return float(string)
    if isinstance(string, bytes):
        string = string.decode("utf-8", errors="replace")
    if not isinstance(string, str):
        scope.error(f"parse_float(): cannot convert {go_text(string)!r} to a float")
        return None
    text = string.strip().replace("_", "")
    if text.lower().lstrip("+-") in ("inf", "infinity", "nan"):
        return float(text)
    try:
        return float(text)
    except ValueError:
        try:
            return float(int(text, 16)) if text.lower().startswith(("0x", "-0x")) else 0.0
        except ValueError:
            return 0.0


# Substrings --------------------------------------------------------------------------------------


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        return _go_parse_int(value.strip())
    return None


def substr(scope: Scope, *, str: Any, start: Any = None, end: Any = None) -> Any:
    """The part of ``str`` from character ``start`` (default 0) up to ``end`` (default the end).
    Bounds past either end are clamped and an empty range gives ""; NULL gives NULL."""
    if str is None:
        return None
    text = str if isinstance(str, builtins.str) else go_text(str)
    lower = 0 if start is None else _integer(start)
    upper = len(text) if end is None else _integer(end)
    if lower is None or upper is None:
        scope.error("substr(): start and end must be integers")
        return None
    lower = min(max(lower, 0), len(text))
    upper = min(max(upper, 0), len(text))
    return text[lower:upper] if lower < upper else ""


# Byte encodings ----------------------------------------------------------------------------------


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return go_text(value).encode("utf-8")


def _bytes_as_text(data: bytes) -> str | bytes:
    """Decoded bytes as a VQL value: text when they are UTF-8, else the bytes themselves (a Go
    string holds any bytes; ours hold text, so binary stays bytes and base64encode(), hex
    formatting and the like still see every byte)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def base64encode(scope: Scope, *, string: Any) -> Any:
    """``string`` (text as UTF-8, or bytes) in standard base64 with padding; NULL gives NULL."""
    if string is None:
        return None
    return base64.b64encode(_as_bytes(string)).decode("ascii")


def base64decode(scope: Scope, *, string: Any) -> Any:
    """The bytes standard base64 ``string`` stands for, as text (or bytes when they are not
    UTF-8). Padding may be missing. Text that is not base64 is logged and gives NULL."""
    if string is None:
        return None
    text = go_text(string).strip()
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        scope.error(f"base64decode(): not base64: {text[:40]!r}")
        return None
    return _bytes_as_text(data)


def unhex(scope: Scope, *, string: Any = None) -> Any:
    """The bytes hex ``string`` stands for (two hex digits a byte), as text (or bytes when they
    are not UTF-8). Text that is not hex is logged and gives NULL."""
    if string is None:
        return None
    text = go_text(string).strip()
    try:
        data = bytes.fromhex(text)
    except ValueError:
        scope.error(f"unhex(): not hex: {text[:40]!r}")
        return None
    return _bytes_as_text(data)


def utf16(scope: Scope, *, string: Any) -> Any:
    """``string`` (bytes, or text as its UTF-8 bytes) read as UTF-16 little-endian and decoded
    to text; trailing NUL characters are dropped. NULL gives NULL."""
    if string is None:
        return None
    data = _as_bytes(string)
    if len(data) % 2:
        data = data[:-1]
    return data.decode("utf-16-le", errors="replace").rstrip("\x00")


def xor(scope: Scope, *, string: Any, key: Any) -> Any:
    """``string`` with each byte XORed with ``key`` (repeated), as text (or bytes when they
    are not UTF-8). An empty key is logged and gives NULL."""
    if string is None or key is None:
        return None
    data, key_bytes = _as_bytes(string), _as_bytes(key)
    if not key_bytes:
        scope.error("xor(): key is empty")
        return None
    mixed = bytes(byte ^ key_bytes[index % len(key_bytes)] for index, byte in enumerate(data))
    return _bytes_as_text(mixed)


# Regular expressions -----------------------------------------------------------------------------


def parse_string_with_regex(scope: Scope, *, string: Any, regex: Any) -> Any:
    """A dict of what each regex in ``regex`` (one or a list, case-insensitive) captures in
    ``string``: named groups under their names, unnamed ones as g1, g2 ... Every match counts,
    later ones overwriting earlier; a group that takes no part in a match is "". An invalid
    regex is logged and gives NULL, as in Velociraptor; NULL gives NULL."""
    patterns = _regex_list(regex)
    if patterns is None:
        scope.error("parse_string_with_regex(): regex must be a string or a list of strings")
        return None
    if string is None:
        return None
    text = go_text(string)
    result: dict[str, Any] = {}
    for pattern in patterns:
        try:
            compiled = go_regex(pattern, ignore_case=True)
        except re.error as error:
            scope.error(f"parse_string_with_regex(): invalid regex {pattern!r}: {error}")
            return None
        names = {index: name for name, index in compiled.groupindex.items()}
        for found in compiled.finditer(text):
            for index in range(1, compiled.groups + 1):
                value = found.group(index)
                result[names.get(index, f"g{index}")] = "" if value is None else value
    return result


_GO_TEMPLATE = re.compile(r"\$(\$|\{(\w+)\}|(\w+))")


def go_expand(template: str, match: re.Match[str]) -> str:
    """Go's Regexp.Expand: $1, ${1}, $name, ${name}; $$ is a dollar; unknown groups are empty."""

    def group(found: re.Match[str]) -> str:
        if found.group(1) == "$":
            return "$"
        name = found.group(2) or found.group(3)
        try:
            value = match.group(int(name)) if name.isdigit() else match.group(name)
        except (IndexError, re.error):
            return ""
        return value or ""

    return _GO_TEMPLATE.sub(group, template)


def regex_transform(scope: Scope, *, source: Any, map: Any, key: Any = None) -> Any:
    """``source`` with each regex of ``map`` (a dict of regex to replacement, applied in its
    order) replaced by its value; ``$1`` and ``$name`` expand groups. Matching is
    case-insensitive, as in regex_replace(). An invalid regex is logged and gives NULL. ``key``
    (Velociraptor's cache key for the compiled map) is accepted and not needed."""
    if source is None:
        return None
    if not isinstance(map, dict):
        scope.error("regex_transform(): map must be a dict of regex to replacement")
        return None
    text = go_text(source)
    for pattern, replacement in map.items():
        try:
            compiled = go_regex(str(pattern), ignore_case=True)
        except re.error as error:
            scope.error(f"regex_transform(): invalid regex {pattern!r}: {error}")
            return None
        template = go_text(replacement) if replacement is not None else ""
        text = compiled.sub(lambda found, template=template: go_expand(template, found), text)
    return text


# Command lines -----------------------------------------------------------------------------------


def _windows_arguments(command: str) -> list[str]:
    """Split the way Windows programs read their command line (the rules Go's os/exec follows,
    with the pre-2008 reading of ""): spaces and tabs separate outside quotes; 2n backslashes
    before a quote are n backslashes and the quote toggles quoting, 2n+1 are n and a literal
    quote; "" inside quotes is a literal quote that also ends the quoting; other backslashes
    are literal."""
    arguments: list[str] = []
    index, length = 0, len(command)
    while index < length:
        if command[index] in " \t":
            index += 1
            continue
        current: list[str] = []
        in_quotes = False
        slashes = 0
        while index < length:
            char = command[index]
            if char in " \t" and not in_quotes:
                index += 1
                break
            if char == "\\":
                slashes += 1
            elif char == '"':
                current.append("\\" * (slashes // 2))
                if slashes % 2:
                    current.append('"')
                else:
                    if in_quotes and index + 1 < length and command[index + 1] == '"':
                        current.append('"')
                        index += 1
                    in_quotes = not in_quotes
                slashes = 0
            else:
                current.append("\\" * slashes + char)
                slashes = 0
            index += 1
        current.append("\\" * slashes)
        arguments.append("".join(current))
    return arguments


def commandline_split(scope: Scope, *, command: Any, bash_style: Any = False) -> Any:
    """The arguments of ``command``, split by Windows' rules (double quotes and backslashes as
    CommandLineToArgvW reads them) or, with ``bash_style``, by a POSIX shell's (single and
    double quotes, backslash escapes). Unbalanced quotes under bash rules are logged and give
    an empty list, as in Velociraptor; NULL gives NULL."""
    if command is None:
        return None
    text = go_text(command)
    if bash_style is True or (bash_style not in (None, False) and bool(bash_style)):
        try:
            return shlex.split(text, posix=True)
        except ValueError as error:
            scope.error(f"commandline_split(): {error}")
            return []
    return _windows_arguments(text)


# Human-readable numbers --------------------------------------------------------------------------

_SI_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
_IEC_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def _size_text(count: int, base: int, units: tuple[str, ...]) -> str:
    """go-humanize's Bytes/IBytes: under 10 as is, else one decimal below 10 units, none above."""
    if count < 10:
        return f"{count} B"
    exponent = 0
    while exponent + 1 < len(units) and count >= base ** (exponent + 1):
        exponent += 1
    value = math.floor(count / base**exponent * 10 + 0.5) / 10
    return f"{value:.1f} {units[exponent]}" if value < 10 else f"{value:.0f} {units[exponent]}"


def _comma_text(number: int) -> str:
    return f"{number:,}"


_DAY = 86400
_MONTH = 30 * _DAY  # go-humanize's month and year
_YEAR = 12 * _MONTH
_RELATIVE_STEPS = (
    (1, "now", None),
    (2, "1 second", None),
    (60, "%d seconds", 1),
    (120, "1 minute", None),
    (3600, "%d minutes", 60),
    (7200, "1 hour", None),
    (_DAY, "%d hours", 3600),
    (2 * _DAY, "1 day", None),
    (7 * _DAY, "%d days", _DAY),
    (14 * _DAY, "1 week", None),
    (_MONTH, "%d weeks", 7 * _DAY),
    (2 * _MONTH, "1 month", None),
    (_YEAR, "%d months", _MONTH),
    (18 * _MONTH, "1 year", None),
    (2 * _YEAR, "2 years", None),
    (37 * _YEAR, "%d years", _YEAR),
)


def _relative_time(moment: datetime) -> str:
    """go-humanize's Time: '3 hours ago', '2 days from now', 'now'."""
    seconds = (datetime.now(UTC) - moment).total_seconds()
    suffix = "ago" if seconds >= 0 else "from now"
    seconds = abs(seconds)
    for limit, label, divisor in _RELATIVE_STEPS:
        if seconds < limit:
            if label == "now":
                return "now"
            text = label % (seconds // divisor) if divisor else label
            return f"{text} {suffix}"
    return "a long while ago" if suffix == "ago" else "a long while from now"


def _count(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return _go_parse_int(value.strip())
    return _integer(value)


def humanize(
    scope: Scope, *, bytes: Any = None, ibytes: Any = None, time: Any = None, comma: Any = None
) -> Any:
    """A number made readable, the first given of: ``time`` relative to now ("3 hours ago"),
    ``comma`` with thousands separators ("1,230"), ``bytes`` in SI units ("83 MB"), ``ibytes``
    in binary units ("79 MiB"). As in Velociraptor, NULL and 0 count as not given, so with
    none of them the result is "0 B". Numeric text counts as its number; text that is not a
    number is logged and gives NULL."""
    numbers: dict[str, int] = {}
    for name, value in (("comma", comma), ("bytes", bytes), ("ibytes", ibytes)):
        if value is None:
            continue
        number = _count(value)
        if number is None:
            scope.error(f"humanize(): {name} is not an integer: {go_text(value)!r}")
            return None
        numbers[name] = number
    if time is not None:
        if not isinstance(time, datetime):
            scope.error("humanize(): time must be a timestamp")
            return None
        return _relative_time(time if time.tzinfo else time.replace(tzinfo=UTC))
    if numbers.get("comma"):
        return _comma_text(numbers["comma"])
    if numbers.get("bytes"):
        count = numbers["bytes"]
        return ("-" if count < 0 else "") + _size_text(abs(count), 1000, _SI_UNITS)
    count = numbers.get("ibytes", 0)
    return ("-" if count < 0 else "") + _size_text(abs(count), 1024, _IEC_UNITS)


# More byte transforms ---------------------------------------------------------------------------

_ROT13 = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "NOPQRSTUVWXYZABCDEFGHIJKLMnopqrstuvwxyzabcdefghijklm",
)


def rot13(scope: Scope, *, string: Any = None) -> Any:
    """``string`` with each Latin letter moved 13 places (its own inverse); NULL gives NULL."""
    if string is None:
        return None
    return go_text(string).translate(_ROT13)


def base85decode(scope: Scope, *, string: Any) -> Any:
    """The bytes Ascii85 ``string`` stands for (Go's encoding/ascii85, ``z`` for four zero
    bytes; ``<~ ~>`` delimiters allowed), as text (or bytes when they are not UTF-8).
    Text that is not Ascii85 is logged and gives NULL."""
    if string is None:
        return None
    text = "".join(go_text(string).split())
    try:
        data = base64.a85decode(text, adobe=text.startswith("<~"))
    except ValueError as error:
        scope.error(f"base85decode(): not base85: {error}")
        return None
    return _bytes_as_text(data)


def utf16_encode(scope: Scope, *, string: Any) -> Any:
    """``string`` as UTF-16 little-endian bytes (the inverse of utf16()): text when those bytes
    happen to be UTF-8 ("A\\x00B\\x00"), else bytes. NULL gives NULL."""
    if string is None:
        return None
    return _bytes_as_text(go_text(string).encode("utf-16-le"))


def entropy(scope: Scope, *, string: Any) -> Any:
    """The Shannon entropy of ``string``'s bytes, in bits a byte (0 for one repeated byte, up
    to 8); text counts as its code points 0-255 or UTF-8. An empty string gives 0."""
    if string is None:
        return None
    data = _as_bytes(string)
    if not data:
        return 0.0
    counts: dict[int, int] = {}
    for byte in data:
        counts[byte] = counts.get(byte, 0) + 1
    total = len(data)
    return -sum(count / total * math.log2(count / total) for count in counts.values()) + 0.0


def crypto_rc4(scope: Scope, *, string: Any, key: Any) -> Any:
    """``string`` encrypted (or decrypted: RC4 is its own inverse) with the RC4 ``key`` (1 to
    256 bytes), as text (or bytes when they are not UTF-8). A key of a bad length is
    logged and gives NULL."""
    if string is None or key is None:
        return None
    data, key_bytes = _as_bytes(string), _as_bytes(key)
    if not 1 <= len(key_bytes) <= 256:
        scope.error("crypto_rc4(): key must be 1 to 256 bytes")
        return None
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key_bytes[i % len(key_bytes)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return _bytes_as_text(bytes(out))


_GUNZIP_DEFAULT_LIMIT = 100 * 1024 * 1024


def gunzip(scope: Scope, *, string: Any, max_bytes: Any = None) -> Any:
    """The gzip-compressed bytes of ``string`` uncompressed, as text (or bytes when they are
    not UTF-8), at most ``max_bytes`` of it (default 100 MiB). Data that is not gzip is logged
    and gives NULL."""
    if string is None:
        return None
    data = _as_bytes(string)
    limit = _integer(max_bytes) if max_bytes is not None else _GUNZIP_DEFAULT_LIMIT
    if limit is None or limit <= 0:
        limit = _GUNZIP_DEFAULT_LIMIT
    limit = min(limit, _GUNZIP_DEFAULT_LIMIT * 100)
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = inflater.decompress(data, limit)
    except zlib.error as error:
        scope.error(f"gunzip(): not gzip data: {error}")
        return None
    return _bytes_as_text(out)

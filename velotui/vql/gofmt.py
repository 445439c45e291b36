"""Go's fmt.Sprintf for VQL's ``format()`` function.

Velociraptor formats with Go's ``fmt`` package, so ``format(format='%5.2f', args=x)`` must give
what Go gives. ``go_format`` follows Go's ``doPrintf`` (flags, width, precision, ``*`` and ``[n]``
argument indexes, the ``%!verb(...)`` error forms) for the values a VQL query can hold, and is
lenient in a few places VQL users rely on (``%s`` of anything, ``%d`` of a whole float).
``go_text`` is the ``%v`` text of one value.

Go types stand in for Python ones: int is int64, float is float64, list is ``[]interface {}``,
dict is Velociraptor's ``*ordereddict.Dict`` (which prints as its JSON).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

# Go rejects widths and precisions beyond a million (fmt's tooLarge); this also bounds the output.
_MAX_WIDTH = 1_000_000

_FLAG_FIELDS = {"#": "sharp", "0": "zero", "+": "plus", "-": "minus", " ": "space"}
_INTEGER_BASES = {"v": 10, "d": 10, "b": 2, "o": 8, "O": 8, "x": 16, "X": 16}
_STRINGER_VERBS = "vsxXq"
_QUOTE_ESCAPES = {
    "\a": r"\a",
    "\b": r"\b",
    "\f": r"\f",
    "\n": r"\n",
    "\r": r"\r",
    "\t": r"\t",
    "\v": r"\v",
}


def go_text(value: Any) -> str:
    """Return the text Go's ``%v`` gives for a VQL value.

    None is ``<nil>``, floats are Go's shortest ``%g``, lists are ``[a b]``, dicts are their JSON
    (as Velociraptor prints them) and datetimes are RFC 3339 in UTC.
    """
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _strconv_float(value, "g", -1)
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return _json_text(value)
    if isinstance(value, datetime):
        return _rfc3339(value)
    return str(value)


def go_format(template: str, args: list[Any]) -> str:
    """Return ``template`` with ``args`` formatted into it as Go's ``fmt.Sprintf`` would.

    Never raises: problems show in the text the way Go shows them, e.g. ``%!d(MISSING)``,
    ``%!d(string=hello)``, ``%!(EXTRA int64=3)``, ``%!(NOVERB)``, ``%!(BADWIDTH)``.
    """
    return _Printf(template, list(args)).run()


# --- the template scanner ---------------------------------------------------------------------


@dataclass
class _Spec:
    """One directive's flags, width and precision (None when absent)."""

    minus: bool = False
    plus: bool = False
    sharp: bool = False
    space: bool = False
    zero: bool = False
    width: int | None = None
    precision: int | None = None

    @property
    def zero_pad(self) -> bool:
        # Zero padding is only ever on the left, so '-' cancels '0'.
        return self.zero and not self.minus


class _Printf:
    """One run of Go's ``doPrintf``: walks the template, consuming arguments as directives ask."""

    def __init__(self, template: str, args: list[Any]) -> None:
        self.template = template
        self.args = args
        self.pos = 0
        self.arg_num = 0
        self.good_arg_num = True
        # Once an explicit [n] index is seen, unused arguments are no longer reported as EXTRA.
        self.reordered = False
        self.out: list[str] = []

    def run(self) -> str:
        while self.pos < len(self.template):
            percent = self.template.find("%", self.pos)
            if percent < 0:
                self.out.append(self.template[self.pos :])
                break
            self.out.append(self.template[self.pos : percent])
            self.pos = percent + 1
            self._directive()
        if not self.reordered and self.arg_num < len(self.args):
            extras = [
                "<nil>" if arg is None else f"{_go_type(arg)}={_format_value(arg, 'v', _Spec())}"
                for arg in self.args[self.arg_num :]
            ]
            self.out.append("%!(EXTRA " + ", ".join(extras) + ")")
        return "".join(self.out)

    def _directive(self) -> None:
        """Read one directive after its '%' and write what it formats to."""
        template, end = self.template, len(self.template)
        spec = _Spec()
        self.good_arg_num = True
        while self.pos < end and template[self.pos] in _FLAG_FIELDS:
            setattr(spec, _FLAG_FIELDS[template[self.pos]], True)
            self.pos += 1

        after_index = self._arg_index()
        if self._at("*"):
            self.pos += 1
            spec.width = self._int_arg()
            if spec.width is None:
                self.out.append("%!(BADWIDTH)")
            elif spec.width < 0:
                spec.width, spec.minus = -spec.width, True
            after_index = False
        else:
            spec.width, self.pos = _parse_number(template, self.pos, end)
            if after_index and spec.width is not None:  # "%[3]2d"
                self.good_arg_num = False

        # A '.' that ends the template is the verb, not a precision.
        if self.pos + 1 < end and template[self.pos] == ".":
            self.pos += 1
            if after_index:  # "%[3].2d"
                self.good_arg_num = False
            after_index = self._arg_index()
            if self._at("*"):
                self.pos += 1
                spec.precision = self._int_arg()
                if spec.precision is None or spec.precision < 0:
                    spec.precision = None
                    self.out.append("%!(BADPREC)")
                after_index = False
            else:
                precision, self.pos = _parse_number(template, self.pos, end)
                spec.precision = precision or 0  # "%.f" means precision 0

        if not after_index:
            self._arg_index()
        if self.pos >= end:
            self.out.append("%!(NOVERB)")
            return
        verb = template[self.pos]
        self.pos += 1

        if verb == "%":
            self.out.append("%")
        elif not self.good_arg_num:
            self.out.append(f"%!{verb}(BADINDEX)")
        elif self.arg_num >= len(self.args):
            self.out.append(f"%!{verb}(MISSING)")
        else:
            if verb == "v":
                # %+v and %#v are Go's struct-field and Go-syntax forms; VQL values print as %v.
                spec.plus = spec.sharp = False
            self.out.append(_format_value(self.args[self.arg_num], verb, spec))
            self.arg_num += 1

    def _at(self, char: str) -> bool:
        return self.pos < len(self.template) and self.template[self.pos] == char

    def _arg_index(self) -> bool:
        """Go's argNumber: read an explicit ``[n]``; True when one parsed, even out of range."""
        if not self._at("["):
            return False
        self.reordered = True
        index, consumed, parsed = 0, 1, False
        if len(self.template) - self.pos >= 3:
            close = self.template.find("]", self.pos + 1)
            if close >= 0:
                consumed = close - self.pos + 1
                number, after = _parse_number(self.template, self.pos + 1, close)
                if number is not None and after == close:
                    index, parsed = number - 1, True
        self.pos += consumed
        if parsed and 0 <= index < len(self.args):
            self.arg_num = index
            return True
        self.good_arg_num = False
        return parsed

    def _int_arg(self) -> int | None:
        """Go's intFromArg: consume the next argument as a width or precision (None if unusable)."""
        if self.arg_num >= len(self.args):
            return None
        value = self.args[self.arg_num]
        self.arg_num += 1
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _MAX_WIDTH:
            return value
        return None


def _parse_number(text: str, start: int, end: int) -> tuple[int | None, int]:
    """Go's parsenum: the decimal number at ``start`` (None if none) and the position after it."""
    number = None
    pos = start
    while pos < end and "0" <= text[pos] <= "9":
        if number is not None and number > _MAX_WIDTH:
            # Go gives up on an absurd number and skips to the end, which then reads as NOVERB.
            return None, end
        number = (number or 0) * 10 + ord(text[pos]) - ord("0")
        pos += 1
    return number, pos


# --- one argument under one verb --------------------------------------------------------------


def _format_value(value: Any, verb: str, spec: _Spec) -> str:
    """Go's printArg: the text of one argument for one verb."""
    if value is None:
        if verb in "vT":
            return _pad("<nil>", spec)
        if verb == "s":
            return _format_text("<nil>", spec)
        return _bad_verb(value, verb, spec)
    if verb == "T":
        return _format_text(_go_type(value), spec)
    if verb == "p":
        return _bad_verb(value, verb, spec)
    if isinstance(value, bool):
        return _format_bool(value, verb, spec)
    if isinstance(value, int):
        return _format_integer(value, verb, spec)
    if isinstance(value, float):
        return _format_float(value, verb, spec)
    if isinstance(value, str):
        return _format_string(value, verb, spec)
    if isinstance(value, (bytes, bytearray)):
        return _format_bytes(bytes(value), verb, spec)
    if isinstance(value, (list, tuple)):
        return _format_list(value, verb, spec)
    # Dicts, times and the rest behave like Go Stringers: their text under the string verbs.
    if verb in _STRINGER_VERBS:
        return _format_string(go_text(value), verb, spec)
    return _bad_verb(value, verb, spec)


def _bad_verb(value: Any, verb: str, spec: _Spec) -> str:
    """Go's ``%!verb(type=value)``, the value printed by %v under the same flags as in Go."""
    if value is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({_go_type(value)}={_format_value(value, 'v', spec)})"


def _go_type(value: Any) -> str:
    """The Go type name Velociraptor would report for a VQL value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (bytes, bytearray)):
        return "[]uint8"
    if isinstance(value, (list, tuple)):
        return "[]interface {}"
    if isinstance(value, dict):
        return "*ordereddict.Dict"
    if isinstance(value, datetime):
        return "time.Time"
    return type(value).__name__


def _pad(text: str, spec: _Spec, *, zeros: bool = True) -> str:
    """Pad to the width: on the right with '-', else on the left with spaces or zeros."""
    missing = (spec.width or 0) - len(text)
    if missing <= 0:
        return text
    if spec.minus:
        return text + " " * missing
    return ("0" if zeros and spec.zero else " ") * missing + text


def _format_text(text: str, spec: _Spec) -> str:
    """Go's fmtS: the text cut to the precision (in characters), then padded."""
    if spec.precision is not None:
        text = text[: spec.precision]
    return _pad(text, spec)


def _format_bool(value: bool, verb: str, spec: _Spec) -> str:
    if verb in "tv":
        return _pad("true" if value else "false", spec)
    if verb == "s":
        return _format_text(go_text(value), spec)
    return _bad_verb(value, verb, spec)


def _format_list(items: list[Any] | tuple[Any, ...], verb: str, spec: _Spec) -> str:
    """Go applies the verb, flags and width to each element of a slice."""
    parts = ["<nil>" if item is None else _format_value(item, verb, spec) for item in items]
    return "[" + " ".join(parts) + "]"


# --- integers ---------------------------------------------------------------------------------


def _format_integer(number: int, verb: str, spec: _Spec) -> str:
    if verb in _INTEGER_BASES:
        return _format_in_base(number, verb, spec)
    if verb == "c":
        return _pad(_rune(number), spec)
    if verb == "q":
        return _pad(_go_quote(_rune(number), "'", ascii_only=spec.plus), spec)
    if verb == "U":
        return _format_code_point(number, spec)
    if verb == "s":
        return _format_text(go_text(number), spec)
    return _bad_verb(number, verb, spec)


def _format_in_base(number: int, verb: str, spec: _Spec) -> str:
    """Go's fmtInteger: sign, base prefix, digits zero-filled to the precision, then padding."""
    base = _INTEGER_BASES[verb]
    negative = number < 0
    magnitude = -number if negative else number
    if spec.precision is not None:
        min_digits = spec.precision
        if min_digits == 0 and magnitude == 0:
            return " " * (spec.width or 0)
    elif spec.zero_pad and spec.width is not None:
        # %05d zero-fills like a precision, leaving room for the sign.
        min_digits = spec.width - (1 if negative or spec.plus or spec.space else 0)
    else:
        min_digits = 0
    digits = format(magnitude, {2: "b", 8: "o", 10: "d", 16: "x"}[base]).rjust(min_digits, "0")
    if verb == "X":
        digits = digits.upper()
    if spec.sharp:
        if base == 2:
            digits = "0b" + digits
        elif base == 8 and not digits.startswith("0"):
            digits = "0" + digits
        elif base == 16:
            digits = ("0X" if verb == "X" else "0x") + digits
    if verb == "O":
        digits = "0o" + digits
    sign = "-" if negative else "+" if spec.plus else " " if spec.space else ""
    return _pad(sign + digits, spec, zeros=False)


def _rune(number: int) -> str:
    """The character with that code point; Go substitutes U+FFFD for anything that is not one."""
    if 0 <= number <= 0x10FFFF and not 0xD800 <= number <= 0xDFFF:
        return chr(number)
    return "\ufffd"


def _format_code_point(number: int, spec: _Spec) -> str:
    """Go's %U: ``U+0041``, and with '#' the character too: ``U+0041 'A'``."""
    code = number & 0xFFFF_FFFF_FFFF_FFFF if number < 0 else number
    text = "U+" + f"{code:X}".rjust(max(4, spec.precision or 0), "0")
    if spec.sharp and code <= 0x10FFFF and chr(code).isprintable():
        text += f" '{chr(code)}'"
    return _pad(text, spec, zeros=False)


# --- floats -----------------------------------------------------------------------------------


def _format_float(number: float, verb: str, spec: _Spec) -> str:
    if verb in "vgG":
        return _format_float_as(number, "G" if verb == "G" else "g", -1, spec)
    if verb in "eEfF":
        return _format_float_as(number, "f" if verb == "F" else verb, 6, spec)
    if verb == "b":
        return _format_float_as(number, "b", -1, spec)
    if verb == "s":
        return _format_text(go_text(number), spec)
    if verb == "d" and number.is_integer():
        return _format_in_base(int(number), "d", spec)
    # Go's %x of a float is a hexadecimal mantissa and binary exponent; not worth reproducing.
    return _bad_verb(number, verb, spec)


def _format_float_as(number: float, conversion: str, default_precision: int, spec: _Spec) -> str:
    """Go's fmt.fmtFloat: strconv's text, then sign, '#' and padding rules."""
    precision = default_precision if spec.precision is None else spec.precision
    text = _strconv_float(number, conversion, precision)
    sign, body = (text[0], text[1:]) if text[0] in "+-" else ("+", text)
    if spec.space and sign == "+" and not spec.plus:
        sign = " "
    if body in ("Inf", "NaN"):
        if body == "NaN" and not (spec.space or spec.plus):
            return _pad(body, spec, zeros=False)
        return _pad(sign + body, spec, zeros=False)
    if spec.sharp and conversion != "b":
        body = _keep_point_and_zeros(body, conversion, precision)
    if spec.plus or sign != "+":
        if spec.zero_pad and spec.width is not None and spec.width > len(body) + 1:
            return sign + "0" * (spec.width - len(body) - 1) + body
        return _pad(sign + body, spec)
    return _pad(body, spec)


def _keep_point_and_zeros(body: str, conversion: str, precision: int) -> str:
    """Go's '#' for floats: always a decimal point, and %g keeps its trailing zeros."""
    wanted = (6 if precision < 0 else precision) if conversion in "gG" else 0
    exponent_at = next((i for i, char in enumerate(body) if char in "eE"), len(body))
    mantissa, tail = body[:exponent_at], body[exponent_at:]
    seen_nonzero = False
    for char in mantissa:
        if char == ".":
            continue
        seen_nonzero = seen_nonzero or char != "0"
        if seen_nonzero:
            wanted -= 1
    if "." not in mantissa:
        if mantissa == "0":
            wanted -= 1
        mantissa += "."
    return mantissa + "0" * max(wanted, 0) + tail


def _strconv_float(number: float, conversion: str, precision: int) -> str:
    """Go's strconv.FormatFloat for 'e', 'E', 'f', 'g', 'G' and 'b'; precision -1 is shortest."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if conversion == "b":
        return _binary_float(number)
    if precision < 0:
        return _shortest_float(number, upper=conversion == "G")
    # Python's printf rounds the exact binary value like Go and C, and writes exponents alike.
    return f"%.*{conversion}" % (precision, number)


def _shortest_float(number: float, *, upper: bool) -> str:
    """Go's shortest %g: the fewest digits that read back as the same float64."""
    sign = "-" if math.copysign(1.0, number) < 0 else ""
    if number == 0:
        return sign + "0"
    # repr gives the same shortest round-trip digits as Go's strconv.
    _, digit_tuple, exponent = Decimal(repr(abs(number))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    point = len(digit_tuple) + int(exponent)  # the value is 0.<digits> * 10**point
    decimal_exponent = point - 1
    # With shortest precision Go switches to the exponent form outside 1e-4 <= |x| < 1e6.
    if decimal_exponent < -4 or decimal_exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        exponent_sign = "-" if decimal_exponent < 0 else "+"
        marker = "E" if upper else "e"
        return f"{sign}{mantissa}{marker}{exponent_sign}{abs(decimal_exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _binary_float(number: float) -> str:
    """Go's %b of a float64: integer mantissa and power of two, as in ``4503599627370496p-52``."""
    bits = struct.unpack("<Q", struct.pack("<d", number))[0]
    biased_exponent = (bits >> 52) & 0x7FF
    mantissa = bits & ((1 << 52) - 1)
    if biased_exponent == 0:
        biased_exponent = 1  # subnormal: no implicit leading bit
    else:
        mantissa |= 1 << 52
    sign = "-" if bits >> 63 else ""
    return f"{sign}{mantissa}p{biased_exponent - 1023 - 52:+d}"


# --- strings and bytes ------------------------------------------------------------------------


def _format_string(text: str, verb: str, spec: _Spec) -> str:
    if verb in "vs":
        return _format_text(text, spec)
    if verb in "xX":
        return _format_hex(text.encode("utf-8", "surrogatepass"), verb == "X", spec)
    if verb == "q":
        return _format_quoted(_go_string(text.encode("utf-8", "surrogatepass")), spec)
    return _bad_verb(text, verb, spec)


def _format_bytes(data: bytes, verb: str, spec: _Spec) -> str:
    if verb in "vs":
        return _format_text(go_text(data), spec)
    if verb in "xX":
        return _format_hex(data, verb == "X", spec)
    if verb == "q":
        return _format_quoted(_go_string(data), spec)
    # Other verbs see a byte slice as the list of its byte values, as Go does: %d -> [104 105].
    return _format_list(list(data), verb, spec)


def _format_hex(data: bytes, upper: bool, spec: _Spec) -> str:
    """Go's %x of a string or bytes: two hex digits a byte; ' ' separates, '#' adds 0x."""
    if spec.precision is not None:
        data = data[: spec.precision]
    if not data:
        return _pad("", spec)
    prefix = "0X" if upper else "0x"
    pairs = [f"{byte:02X}" if upper else f"{byte:02x}" for byte in data]
    if spec.space:
        text = " ".join(prefix + pair if spec.sharp else pair for pair in pairs)
    else:
        text = (prefix if spec.sharp else "") + "".join(pairs)
    return _pad(text, spec)


def _go_string(data: bytes) -> str:
    """Bytes as text, each byte that is not UTF-8 kept as a lone surrogate U+DC80..U+DCFF."""
    return data.decode("utf-8", "surrogateescape")


def _format_quoted(text: str, spec: _Spec) -> str:
    """Go's %q of a string (given as ``_go_string`` text): quoted, or backquoted with '#'."""
    if spec.precision is not None:
        text = text[: spec.precision]
    if spec.sharp and _can_backquote(text):
        return _pad("`" + text + "`", spec)
    return _pad(_go_quote(text, '"', ascii_only=spec.plus), spec)


def _go_quote(text: str, quote: str, *, ascii_only: bool) -> str:
    """Go's strconv.Quote (quote '"') or QuoteRune (quote "'"), ASCII-only for %+q."""
    parts = [quote]
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            parts.append(f"\\x{code - 0xDC00:02x}")  # a byte that was not UTF-8
        elif char in (quote, "\\"):
            parts.append("\\" + char)
        elif char.isprintable() and (code < 0x80 or not ascii_only):
            parts.append(char)
        elif char in _QUOTE_ESCAPES:
            parts.append(_QUOTE_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            parts.append(f"\\x{code:02x}")
        elif code < 0x10000:
            parts.append(f"\\u{code:04x}")
        else:
            parts.append(f"\\U{code:08x}")
    parts.append(quote)
    return "".join(parts)


def _can_backquote(text: str) -> bool:
    """Go's strconv.CanBackquote: no control characters but tab, no backquote, no BOM."""
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF or char == "\ufeff":
            return False
        if (code < 0x20 and char != "\t") or char == "`" or code == 0x7F:
            return False
    return True


# --- dicts and times --------------------------------------------------------------------------


def _json_text(value: dict[Any, Any]) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        # Keys JSON cannot hold, or a dict that contains itself.
        return str(value)


def _rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with 'Z'; fractional seconds only when there are some. Naive means UTC."""
    if moment.utcoffset() is not None:
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:
            return moment.isoformat()  # within a day of year 1 or 9999
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    return text + "Z"

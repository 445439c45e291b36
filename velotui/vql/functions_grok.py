"""grok(): parse a line of a log with a Grok expression, named patterns such as
``%{SYSLOGTIMESTAMP:Timestamp}`` standing for regular expressions, as Velociraptor's syslog
artifacts (Linux.Syslog.SSHLogin, Linux.Sys.Services) do.

The base patterns are the common ones those artifacts and everyday logs use, written here for
Python's ``re``; an expression may add or override patterns with ``patterns``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from velotui.vql.functions_text import go_regex
from velotui.vql.gofmt import go_text
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope


def register(registry: Registry) -> None:
    """Add grok() to ``registry``."""
    registry.function(grok)


BASE_PATTERNS: dict[str, str] = {
    # Words, numbers and space.
    "WORD": r"\b\w+\b",
    "NOTSPACE": r"\S+",
    "SPACE": r"\s*",
    "DATA": r".*?",
    "GREEDYDATA": r".*",
    "INT": r"[+-]?[0-9]+",
    "POSINT": r"\b[1-9][0-9]*\b",
    "NONNEGINT": r"\b[0-9]+\b",
    "NUMBER": r"[+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)",
    "BASE10NUM": r"[+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)",
    "BASE16NUM": r"[+-]?(?:0x)?[0-9A-Fa-f]+",
    "QUOTEDSTRING": r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`",
    "QS": r"%{QUOTEDSTRING}",
    "UUID": r"[A-Fa-f0-9]{8}-(?:[A-Fa-f0-9]{4}-){3}[A-Fa-f0-9]{12}",
    "LOGLEVEL": (
        r"(?:[Aa]lert|ALERT|[Tt]race|TRACE|[Dd]ebug|DEBUG|[Nn]otice|NOTICE|[Ii]nfo|INFO|"
        r"[Ww]arn(?:ing)?|WARN(?:ING)?|[Ee]rr(?:or)?|ERR(?:OR)?|[Cc]rit(?:ical)?|CRIT(?:ICAL)?|"
        r"[Ff]atal|FATAL|[Ss]evere|SEVERE|EMERG(?:ENCY)?|[Ee]merg(?:ency)?)"
    ),
    # Names, users and addresses.
    "USERNAME": r"[a-zA-Z0-9._-]+",
    "USER": r"%{USERNAME}",
    "EMAILLOCALPART": r"[a-zA-Z][a-zA-Z0-9_.+-=:]+",
    "EMAILADDRESS": r"%{EMAILLOCALPART}@%{HOSTNAME}",
    "IPV4": (
        r"(?<![0-9])(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]{1,2})\.){3}"
        r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]{1,2})(?![0-9])"
    ),
    "IPV6": (
        r"(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|"
        r"(?:[0-9A-Fa-f]{1,4}:){1,7}:|"
        r"(?:[0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}|"
        r"(?:[0-9A-Fa-f]{1,4}:){1,5}(?::[0-9A-Fa-f]{1,4}){1,2}|"
        r"(?:[0-9A-Fa-f]{1,4}:){1,4}(?::[0-9A-Fa-f]{1,4}){1,3}|"
        r"(?:[0-9A-Fa-f]{1,4}:){1,3}(?::[0-9A-Fa-f]{1,4}){1,4}|"
        r"(?:[0-9A-Fa-f]{1,4}:){1,2}(?::[0-9A-Fa-f]{1,4}){1,5}|"
        r"[0-9A-Fa-f]{1,4}:(?::[0-9A-Fa-f]{1,4}){1,6}|"
        r":(?:(?::[0-9A-Fa-f]{1,4}){1,7}|:)|"
        r"::(?:[Ff]{4}:)?%{IPV4})(?:%[0-9A-Za-z]+)?"
    ),
    "IP": r"(?:%{IPV6}|%{IPV4})",
    "HOSTNAME": r"\b[0-9A-Za-z][0-9A-Za-z-]{0,62}(?:\.[0-9A-Za-z][0-9A-Za-z-]{0,62})*\.?\b",
    "HOST": r"%{HOSTNAME}",
    "IPORHOST": r"(?:%{IP}|%{HOSTNAME})",
    "HOSTPORT": r"%{IPORHOST}:%{POSINT}",
    "MAC": r"(?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}|(?:[0-9A-Fa-f]{4}\.){2}[0-9A-Fa-f]{4}",
    # Paths and URIs.
    "UNIXPATH": r"(?:/[\w_%!$@:.,+~-]*)+",
    "WINPATH": r"(?:[A-Za-z]+:|\\)(?:\\[^\\?*]*)+",
    "PATH": r"(?:%{UNIXPATH}|%{WINPATH})",
    "URIPROTO": r"[A-Za-z]+(?:\+[A-Za-z+]+)?",
    "URIHOST": r"%{IPORHOST}(?::%{POSINT:port})?",
    "URIPATH": r"(?:/[A-Za-z0-9$.+!*'(){},~:;=@#%&_\-]*)+",
    "URIPARAM": r"\?[A-Za-z0-9$.+!*'|(){},~@#%&/=:;_?\-\[\]<>]*",
    "URIPATHPARAM": r"%{URIPATH}(?:%{URIPARAM})?",
    "URI": r"%{URIPROTO}://(?:%{USER}(?::[^@]*)?@)?(?:%{URIHOST})?(?:%{URIPATHPARAM})?",
    # Dates and times.
    "MONTH": (
        r"\b(?:[Jj]an(?:uary|uar)?|[Ff]eb(?:ruary|ruar)?|[Mm](?:a|ä)?r(?:ch|z)?|[Aa]pr(?:il)?|"
        r"[Mm]a(?:y|i)?|[Jj]un(?:e|i)?|[Jj]ul(?:y|i)?|[Aa]ug(?:ust)?|[Ss]ep(?:tember)?|"
        r"[Oo](?:c|k)?t(?:ober)?|[Nn]ov(?:ember)?|[Dd]e(?:c|z)(?:ember)?)\b"
    ),
    "MONTHNUM": r"(?:0?[1-9]|1[0-2])",
    "MONTHDAY": r"(?:(?:0[1-9])|(?:[12][0-9])|(?:3[01])|[1-9])",
    "DAY": r"(?:Mon(?:day)?|Tue(?:sday)?|Wed(?:nesday)?|Thu(?:rsday)?|Fri(?:day)?|"
    r"Sat(?:urday)?|Sun(?:day)?)",
    "YEAR": r"(?:\d\d){1,2}",
    "HOUR": r"(?:2[0123]|[01]?[0-9])",
    "MINUTE": r"(?:[0-5][0-9])",
    "SECOND": r"(?:(?:[0-5]?[0-9]|60)(?:[:.,][0-9]+)?)",
    "TIME": r"(?<![0-9])%{HOUR}:%{MINUTE}(?::%{SECOND})(?![0-9])",
    "ISO8601_TIMEZONE": r"(?:Z|[+-]%{HOUR}(?::?%{MINUTE}))",
    "ISO8601_SECOND": r"(?:%{SECOND}|60)",
    "TIMESTAMP_ISO8601": (
        r"%{YEAR}-%{MONTHNUM}-%{MONTHDAY}[T ]%{HOUR}:?%{MINUTE}(?::?%{SECOND})?"
        r"%{ISO8601_TIMEZONE}?"
    ),
    "DATE_US": r"%{MONTHNUM}[/-]%{MONTHDAY}[/-]%{YEAR}",
    "DATE_EU": r"%{MONTHDAY}[./-]%{MONTHNUM}[./-]%{YEAR}",
    "DATESTAMP": r"(?:%{DATE_US}|%{DATE_EU})[- ]%{TIME}",
    "HTTPDATE": r"%{MONTHDAY}/%{MONTH}/%{YEAR}:%{TIME} %{INT}",
    # Syslog.
    "SYSLOGTIMESTAMP": r"%{MONTH} +%{MONTHDAY} %{TIME}",
    "PROG": r"[\x21-\x5a\x5c\x5e-\x7e]+",
    "SYSLOGPROG": r"%{PROG:program}(?:\[%{POSINT:pid}\])?",
    "SYSLOGHOST": r"%{IPORHOST}",
    "SYSLOGFACILITY": r"<%{NONNEGINT:facility}.%{NONNEGINT:priority}>",
    "SYSLOGBASE": (
        r"%{SYSLOGTIMESTAMP:timestamp} (?:%{SYSLOGFACILITY} )?%{SYSLOGHOST:logsource} "
        r"%{SYSLOGPROG}:"
    ),
    "COMMONAPACHELOG": (
        r"%{IPORHOST:clientip} %{USER:ident} %{USER:auth} \[%{HTTPDATE:timestamp}\] "
        r"\"(?:%{WORD:verb} %{NOTSPACE:request}(?: HTTP/%{NUMBER:httpversion})?"
        r"|%{DATA:rawrequest})\" "
        r"%{NUMBER:response} (?:%{NUMBER:bytes}|-)"
    ),
    "COMBINEDAPACHELOG": r"%{COMMONAPACHELOG} %{QS:referrer} %{QS:agent}",
}

_REFERENCE = re.compile(r"%\{(\w+)(?::([\w.@\[\]-]+))?(?::\w+)?\}")
_MAX_DEPTH = 32


class GrokError(ValueError):
    """A Grok expression that names an unknown pattern, nests too deeply or is no regex."""


class CompiledGrok:
    """A Grok expression as one regular expression, and the field each of its groups fills."""

    def __init__(self, expression: str, patterns: Mapping[str, str], all_captures: bool) -> None:
        self.fields: dict[str, str] = {}  # group name -> field name
        regex = self._expand(expression, patterns, all_captures, 0)
        try:
            self.regex = go_regex(regex)
        except re.error as error:
            raise GrokError(f"invalid regular expression: {error}") from None

    def _expand(
        self, expression: str, patterns: Mapping[str, str], all_captures: bool, depth: int
    ) -> str:
        if depth > _MAX_DEPTH:
            raise GrokError("patterns nest too deeply (a pattern that refers to itself?)")

        def replace(found: re.Match[str]) -> str:
            name, field = found.group(1), found.group(2)
            body = patterns.get(name)
            if body is None:
                raise GrokError(f"unknown pattern %{{{name}}}")
            inner = self._expand(body, patterns, all_captures, depth + 1)
            label = field or (name if all_captures else None)
            if label is None:
                return f"(?:{inner})"
            group = f"grok{len(self.fields)}"
            self.fields[group] = label
            return f"(?P<{group}>{inner})"

        return _REFERENCE.sub(replace, expression)

    def parse(self, text: str) -> dict[str, str] | None:
        """The fields of the first match in ``text`` (in the expression's order; a field
        named twice keeps the last), or None when it does not match."""
        found = self.regex.search(text)
        if found is None:
            return None
        result: dict[str, str] = {}
        for group, value in found.groupdict().items():
            field = self.fields.get(group, group)  # a (?P<name>) written in the expression
            result[field] = value if value is not None else ""
        return result


_cache: dict[tuple[str, bool], CompiledGrok] = {}


def _extra_patterns(patterns: Any) -> dict[str, str] | None:
    """``patterns`` as a dict: a dict of name to regex, or text / a list of "NAME regex"
    lines (the grok pattern-file format)."""
    if isinstance(patterns, Mapping):
        return {str(k): go_text(v) for k, v in patterns.items()}
    lines = patterns if isinstance(patterns, list | tuple) else go_text(patterns).splitlines()
    result = {}
    for line in lines:
        text = go_text(line).strip()
        if not text or text.startswith("#"):
            continue
        name, _, regex = text.partition(" ")
        if not regex.strip():
            return None
        result[name] = regex.strip()
    return result


def grok(
    scope: Scope, *, grok: Any, data: Any, patterns: Any = None, all_captures: Any = False
) -> Any:
    """A dict of the fields the Grok expression ``grok`` names (``%{PATTERN:field}``, and
    ``(?P<field>...)`` groups) from its first match in ``data``; fields whose part did not take
    part in the match are "". NULL when it does not match, so ``WHERE grok(...)`` keeps lines
    that parse. ``patterns`` adds patterns (a dict of name to regex, or "NAME regex" lines);
    ``all_captures`` also captures unnamed ``%{PATTERN}`` under the pattern's name. An unknown
    pattern or an invalid expression is logged and gives NULL."""
    if data is None:
        return None
    expression = go_text(grok)
    capture_all = bool(all_captures) and all_captures is not None
    try:
        if patterns is None:
            compiled = _cache.get((expression, capture_all))
            if compiled is None:
                compiled = CompiledGrok(expression, BASE_PATTERNS, capture_all)
                if len(_cache) > 256:
                    _cache.clear()
                _cache[(expression, capture_all)] = compiled
        else:
            extra = _extra_patterns(patterns)
            if extra is None:
                scope.error("grok(): patterns must be a dict or 'NAME regex' lines")
                return None
            compiled = CompiledGrok(expression, {**BASE_PATTERNS, **extra}, capture_all)
    except GrokError as error:
        scope.error(f"grok(): {error}")
        return None
    return compiled.parse(go_text(data))

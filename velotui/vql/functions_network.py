"""VQL functions on network addresses: ip() reads an IP address in its textual or integer
forms, url() parses or builds a URL (Velociraptor's names and arguments)."""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Mapping
from typing import Any

from velotui.vql.gofmt import go_text
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope


def register(registry: Registry) -> None:
    """Add the network functions to ``registry``."""
    for fn in (ip, cidr_contains, url):
        registry.function(fn)


def _address_text(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    # Go prints an IPv4 address held in IPv6 (::ffff:a.b.c.d) as the IPv4 address.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _uint32(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip(), 0)
        except ValueError:
            return None
    if not isinstance(value, int):
        return None
    return value & 0xFFFFFFFF


def ip(scope: Scope, *, parse: Any = None, netaddr4_le: Any = None, netaddr4_be: Any = None) -> Any:
    """An IP address as Go prints it ("10.0.0.1", "fe80::1"; IPv4 held in IPv6 as IPv4), from
    text (``parse``) or from a 32-bit integer holding the four bytes in network order read
    little-endian (``netaddr4_le``, as Linux's utmp and /proc store them) or big-endian
    (``netaddr4_be``). Velociraptor gives a net.IP object whose members (``IsPrivate`` ...) this
    engine cannot offer on a plain value, so this gives the address's text. Text that is not
    an address is logged and gives NULL."""
    if parse is not None:
        text = go_text(parse).strip()
        try:
            return _address_text(ipaddress.ip_address(text))
        except ValueError:
            scope.error(f"ip(): not an IP address: {text!r}")
            return None
    for value, order in ((netaddr4_le, "little"), (netaddr4_be, "big")):
        if value is None:
            continue
        number = _uint32(value)
        if number is None:
            scope.error(f"ip(): not a 32-bit address: {go_text(value)!r}")
            return None
        return str(ipaddress.IPv4Address(number.to_bytes(4, order)))  # type: ignore[arg-type]
    return None


def cidr_contains(scope: Scope, *, ip: Any, ranges: Any) -> Any:
    """TRUE when the address ``ip`` lies in any of the CIDR ``ranges`` (one or a list, e.g.
    "192.168.0.0/16"; host bits may be set, as in "127.0.0.1/8"). An address or range that
    cannot be read is logged and gives NULL."""
    if ip is None or ranges is None:
        return None
    try:
        address = ipaddress.ip_address(go_text(ip).strip())
    except ValueError:
        scope.error(f"cidr_contains(): not an IP address: {go_text(ip)!r}")
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for text in ranges if isinstance(ranges, list | tuple) else [ranges]:
        try:
            network = ipaddress.ip_network(go_text(text).strip(), strict=False)
        except ValueError:
            scope.error(f"cidr_contains(): not a CIDR range: {go_text(text)!r}")
            return None
        if address.version == network.version and address in network:
            return True
    return False


# Go's url.URL.String escapes a path and a fragment leaving these characters as they are.
_PATH_SAFE = "$&+,/:;=@"
_FRAGMENT_SAFE = "$&+,/:;=?@!()*"


def _url_string(parts: Mapping[str, Any]) -> str:
    """The URL's text as Go's url.URL.String writes it."""
    text = ""
    scheme, host, path = parts["Scheme"], parts["Host"], parts["Path"]
    if scheme:
        text += scheme + ":"
    if parts["Opaque"]:
        text += parts["Opaque"]
    else:
        if scheme or host or parts["User"]:
            if host or path or parts["User"]:
                text += "//"
            if parts["User"]:
                text += urllib.parse.quote(parts["User"], safe="") + "@"
            text += host
        if path and not path.startswith("/") and host:
            text += "/"
        text += urllib.parse.quote(path, safe=_PATH_SAFE)
    if parts["RawQuery"]:
        text += "?" + parts["RawQuery"]
    if parts["Fragment"]:
        text += "#" + urllib.parse.quote(parts["Fragment"], safe=_FRAGMENT_SAFE)
    return text


def _encode_query(query: Any) -> str:
    """Go's url.Values.Encode: keys sorted, values escaped with + for spaces."""
    if isinstance(query, str):
        return query
    if not isinstance(query, Mapping):
        return ""
    pairs = []
    for key in sorted(query, key=str):
        values = query[key]
        for value in values if isinstance(values, list | tuple) else [values]:
            pairs.append(
                urllib.parse.quote_plus(str(key)) + "=" + urllib.parse.quote_plus(go_text(value))
            )
    return "&".join(pairs)


def url(
    scope: Scope,
    *,
    scheme: Any = None,
    host: Any = None,
    path: Any = None,
    fragment: Any = None,
    query: Any = None,
    parse: Any = None,
) -> Any:
    """A URL as a dict of Go's url.URL fields (Scheme, Opaque, User, Host, Path, RawQuery,
    Fragment) plus ``Query`` (each parameter's list of values) and ``String`` (the URL's
    escaped text), either parsed from ``parse`` (path and fragment unescaped) or built from
    ``scheme``, ``host``, ``path``, ``fragment`` and ``query`` (a dict, or encoded text). Text
    that is not a URL is logged and gives NULL."""
    if parse is not None:
        text = go_text(parse)
        try:
            split = urllib.parse.urlsplit(text)
            port = split.port  # raises on a bad port
        except ValueError as error:
            scope.error(f"url(): cannot parse {text!r}: {error}")
            return None
        del port
        netloc = split.netloc
        user = None
        if "@" in netloc:
            user_text, netloc = netloc.rsplit("@", 1)
            user = urllib.parse.unquote(user_text.split(":", 1)[0])
        opaque = ""
        url_path = urllib.parse.unquote(split.path)
        if split.scheme and not netloc and not text[len(split.scheme) + 1 :].startswith("/"):
            opaque, url_path = split.path, ""
        parts: dict[str, Any] = {
            "Scheme": split.scheme,
            "Opaque": opaque,
            "User": user,
            "Host": netloc,
            "Path": url_path,
            "RawQuery": split.query,
            "Fragment": urllib.parse.unquote(split.fragment),
        }
    else:
        parts = {
            "Scheme": "" if scheme is None else go_text(scheme),
            "Opaque": "",
            "User": None,
            "Host": "" if host is None else go_text(host),
            "Path": "" if path is None else go_text(path),
            "RawQuery": "" if query is None else _encode_query(query),
            "Fragment": "" if fragment is None else go_text(fragment),
        }
    parts["Query"] = urllib.parse.parse_qs(parts["RawQuery"], keep_blank_values=True)
    parts["String"] = _url_string(parts)
    return parts

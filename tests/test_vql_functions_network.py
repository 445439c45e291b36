"""ip() and url(), called through the engine as artifacts call them."""

from __future__ import annotations

from tests.vql_evaluate import evaluate


async def test_ip_from_utmp_style_little_endian_integers() -> None:
    # 127.0.0.1 in network order (7f 00 00 01) read as a little-endian 32-bit integer.
    assert await evaluate("ip(netaddr4_le=16777343)") == ("127.0.0.1", [])
    assert await evaluate("ip(netaddr4_be=3232235777)") == ("192.168.1.1", [])


async def test_ip_parses_text_as_go_prints_it() -> None:
    assert await evaluate("ip(parse='0:0:0:0:0:FFFF:129.144.52.38')") == ("129.144.52.38", [])
    assert await evaluate("ip(parse='FE80:0000:0000:0000:0000:0000:0000:0001')") == ("fe80::1", [])
    assert await evaluate("ip(parse=join(array=['10', '0', '0', '1'], sep='.'))") == (
        "10.0.0.1",
        [],
    )


async def test_ip_of_bad_input_logs_and_gives_null() -> None:
    value, errors = await evaluate("ip(parse='10.0.0.300')")
    assert value is None and "ip()" in errors[0]
    value, errors = await evaluate("ip(netaddr4_le='x')")
    assert value is None and "ip()" in errors[0]
    assert await evaluate("ip()") == (None, [])


async def test_url_parse_gives_go_url_fields() -> None:
    value, errors = await evaluate("url(parse='https://user@example.com:8443/a%20b?x=1&x=2#top')")
    assert errors == []
    assert value["Scheme"] == "https"
    assert value["Host"] == "example.com:8443"
    assert value["User"] == "user"
    assert value["Path"] == "/a b"
    assert value["RawQuery"] == "x=1&x=2"
    assert value["Query"] == {"x": ["1", "2"]}
    assert value["Fragment"] == "top"
    assert value["String"] == "https://user@example.com:8443/a%20b?x=1&x=2#top"


async def test_url_built_from_parts_escapes_each_level() -> None:
    value, _ = await evaluate(
        "url(scheme='file', path='/tmp/my archive.zip', fragment='dir/member #1.txt').String"
    )
    assert value == "file:///tmp/my%20archive.zip#dir/member%20%231.txt"
    value, _ = await evaluate(
        "url(scheme='https', host='example.com', path='api', query=dict(b='x y', a=1)).String"
    )
    assert value == "https://example.com/api?a=1&b=x+y"


async def test_url_with_a_bad_port_logs_and_gives_null() -> None:
    value, errors = await evaluate("url(parse='http://host:notaport/')")
    assert value is None and "url()" in errors[0]


async def test_cidr_contains_checks_every_range() -> None:
    assert await evaluate(
        "cidr_contains(ip='192.168.0.132', ranges=['192.168.0.0/24', '127.0.0.1/8'])"
    ) == (True, [])
    assert await evaluate("cidr_contains(ip='127.9.9.9', ranges='127.0.0.1/8')") == (True, [])
    assert await evaluate("cidr_contains(ip='10.1.1.1', ranges=['192.168.0.0/16'])") == (False, [])
    assert await evaluate("cidr_contains(ip='fe80::1', ranges=['fe80::/10'])") == (True, [])
    value, errors = await evaluate("cidr_contains(ip='10.0.0.1', ranges=['10.0.0.0/99'])")
    assert value is None and "cidr_contains()" in errors[0]

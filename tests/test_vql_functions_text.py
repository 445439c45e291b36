"""VQL's text functions, called through the engine as Velociraptor's artifacts call them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.vql_evaluate import evaluate

# atoi and parse_float ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("42", 42),
        ("-17", -17),
        ("+5", 5),
        ("0x1F", 31),
        ("0b101", 5),
        ("0o17", 15),
        ("017", 15),
        ("1_000", 1000),
        ("12abc", 0),  # Go's ParseInt fails; Velociraptor gives 0
        ("", 0),
        ("99999999999999999999", 0),  # beyond 64 bits
    ],
)
async def test_atoi_reads_text_as_go_parseint_with_base_prefixes(text: str, number: int) -> None:
    assert await evaluate("atoi(string=S)", S=text) == (number, [])


async def test_atoi_passes_numbers_through_and_null_stays_null() -> None:
    assert await evaluate("atoi(string=7)") == (7, [])
    assert await evaluate("atoi(string=7.9)") == (7, [])
    assert await evaluate("atoi(string=NULL)") == (None, [])


async def test_parse_float_reads_text_and_gives_zero_for_words() -> None:
    assert await evaluate("parse_float(string='3.25')") == (3.25, [])
    assert await evaluate("parse_float(string='1e3')") == (1000.0, [])
    assert await evaluate("parse_float(string='abc')") == (0.0, [])
    assert await evaluate("parse_float(string=NULL)") == (None, [])


# substr ------------------------------------------------------------------------------------------


async def test_substr_takes_start_and_end_and_clamps_them() -> None:
    assert await evaluate("substr(str='Hello', start=0, end=1)") == ("H", [])
    assert await evaluate("substr(str='Hello', start=2)") == ("llo", [])
    assert await evaluate("substr(str='Hello', end=4)") == ("Hell", [])
    assert await evaluate("substr(str='Hello', start=3, end=100)") == ("lo", [])
    assert await evaluate("substr(str='Hello', start=4, end=2)") == ("", [])
    assert await evaluate("substr(str=NULL, start=0, end=1)") == (None, [])


async def test_substr_with_bounds_that_are_not_numbers_logs_and_gives_null() -> None:
    value, errors = await evaluate("substr(str='Hello', start='x')")
    assert value is None and errors and "substr()" in errors[0]


# Encodings ---------------------------------------------------------------------------------------


async def test_base64_round_trip_and_bad_input() -> None:
    assert await evaluate("base64encode(string='Hello')") == ("SGVsbG8=", [])
    assert await evaluate("base64decode(string='SGVsbG8=')") == ("Hello", [])
    assert await evaluate("base64decode(string='SGVsbG8')") == ("Hello", [])  # no padding
    value, errors = await evaluate("base64decode(string='not base64!')")
    assert value is None and "base64decode()" in errors[0]
    assert await evaluate("base64encode(string=NULL)") == (None, [])


async def test_unhex_decodes_and_rejects_what_is_not_hex() -> None:
    assert await evaluate("unhex(string='48656c6c6f')") == ("Hello", [])
    # Bytes that are not UTF-8 stay bytes, so base64encode() sees every one of them.
    assert await evaluate("unhex(string='ff00')") == (b"\xff\x00", [])
    assert await evaluate("base64encode(string=unhex(string='ff00'))") == ("/wA=", [])
    value, errors = await evaluate("unhex(string='4x')")
    assert value is None and "unhex()" in errors[0]


async def test_utf16_decodes_little_endian_text() -> None:
    assert await evaluate("utf16(string=S)", S="A\x00B\x00C\x00D\x00") == ("ABCD", [])
    assert await evaluate("utf16(string=S)", S=b"h\x00i\x00\x00\x00") == ("hi", [])


async def test_xor_is_its_own_inverse_and_needs_a_key() -> None:
    assert await evaluate("xor(string=xor(string='secret', key='k'), key='k')") == ("secret", [])
    assert await evaluate("xor(string='A', key=' ')") == ("a", [])
    value, errors = await evaluate("xor(string='A', key='')")
    assert value is None and "xor()" in errors[0]


# Regular expressions -----------------------------------------------------------------------------


async def test_parse_string_with_regex_gathers_named_groups_of_every_regex() -> None:
    line = "Nov 14 22:13:20 host sshd[123]: Accepted password for root from 10.1.2.3"
    value, errors = await evaluate(
        "parse_string_with_regex(string=Line, regex=["
        "'''(?P<Program>\\w+)\\[(?P<Pid>\\d+)\\]''', "
        "'''FOR (?<User>\\S+) from (?P<IP>[\\d.]+)''', "
        "'''(?P<Absent>nomatch)'''])",
        Line=line,
    )
    assert errors == []
    # Case-insensitive (FOR matches for); a regex that never matches adds nothing.
    assert value == {"Program": "sshd", "Pid": "123", "User": "root", "IP": "10.1.2.3"}


async def test_parse_string_with_regex_takes_one_regex_and_gives_members() -> None:
    value, _ = await evaluate(
        "parse_string_with_regex(string='key=value', regex='''(?P<Key>\\w+)=(?P<Value>\\w+)''')"
        ".Value"
    )
    assert value == "value"
    assert await evaluate("parse_string_with_regex(string='x', regex='(?P<A>y)')") == ({}, [])


async def test_parse_string_with_regex_names_unnamed_groups_and_keeps_the_last_match() -> None:
    value, _ = await evaluate(
        "parse_string_with_regex(string='a=1 b=2', regex='''(\\w)=(?P<N>\\d)(x)?''')"
    )
    assert value == {"g1": "b", "N": "2", "g3": ""}


async def test_parse_string_with_regex_with_an_invalid_regex_logs_and_gives_null() -> None:
    value, errors = await evaluate(
        "parse_string_with_regex(string='ab', regex=['(?P<A>a)', '(unclosed'])"
    )
    assert value is None
    assert errors and "parse_string_with_regex()" in errors[0]


async def test_regex_transform_applies_the_map_in_order_with_group_references() -> None:
    value, errors = await evaluate(
        "regex_transform(source='Hello world', map=dict(`^Hello`='Goodbye', "
        "`(w)orld`='${1}ide $1ide space'), key='A')"
    )
    # As in Go, $1ide names a group "1ide" (there is none: empty); ${1} is group 1.
    assert (value, errors) == ("Goodbye wide  space", [])


async def test_regex_transform_is_case_insensitive_and_refuses_a_bad_regex() -> None:
    assert await evaluate("regex_transform(source='HELLO', map=dict(`hello`='bye'))") == (
        "bye",
        [],
    )
    value, errors = await evaluate("regex_transform(source='x', map=dict(`(`='y'))")
    assert value is None and "regex_transform()" in errors[0]


async def test_regex_transform_with_flags_inside_and_a_bad_map() -> None:
    value, _ = await evaluate(
        "regex_transform(source=S, map=dict(`(?m)^\\s+`='', `(?m)\\s+$`=''))", S="  a  \n  b  "
    )
    assert value == "a\nb"
    value, errors = await evaluate("regex_transform(source='x', map='y')")
    assert value is None and "regex_transform()" in errors[0]


# Command lines -----------------------------------------------------------------------------------


async def test_commandline_split_follows_windows_rules_by_default() -> None:
    value, _ = await evaluate(
        "commandline_split(command=C)",
        C='"C:\\Program Files\\Velociraptor\\Velociraptor.exe" service run "a \\"q\\" b" x\\\\y',
    )
    assert value == [
        "C:\\Program Files\\Velociraptor\\Velociraptor.exe",
        "service",
        "run",
        'a "q" b',
        "x\\\\y",
    ]


async def test_commandline_split_reads_doubled_quotes_the_pre_2008_way() -> None:
    value, _ = await evaluate("commandline_split(command=C)", C='"a""b c" d "" e\\')
    # "" inside quotes is a quote and ends the quoting: the space after b separates, and the
    # quote after c opens a quoting that "" ends again after a literal quote.
    assert value == ['a"b', 'c d "', "e\\"]


async def test_commandline_split_with_bash_style_follows_shell_quoting() -> None:
    value, _ = await evaluate(
        "commandline_split(command=\"/usr/bin/ls -l 'file with space.txt'\", bash_style=TRUE)"
    )
    assert value == ["/usr/bin/ls", "-l", "file with space.txt"]
    value, errors = await evaluate('commandline_split(command="a \'open", bash_style=TRUE)')
    assert value == [] and "commandline_split()" in errors[0]


# humanize ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "text"),
    [
        ("bytes=0", "0 B"),
        ("bytes=9", "9 B"),
        ("bytes=1000", "1.0 kB"),
        ("bytes=82854982", "83 MB"),
        ("bytes='2048'", "2.0 kB"),
        ("ibytes=82854982", "79 MiB"),
        ("ibytes=1536", "1.5 KiB"),
        ("comma=1234567", "1,234,567"),
        ("comma=-1230", "-1,230"),
    ],
)
async def test_humanize_formats_like_go_humanize(arguments: str, text: str) -> None:
    assert await evaluate(f"humanize({arguments})") == (text, [])


async def test_humanize_time_is_relative_to_now() -> None:
    three_hours_ago = datetime.now(UTC) - timedelta(hours=3, minutes=5)
    assert await evaluate("humanize(time=T)", T=three_hours_ago) == ("3 hours ago", [])


async def test_humanize_of_text_that_is_no_number_logs_and_gives_null() -> None:
    value, errors = await evaluate("humanize(bytes='lots')")
    assert value is None and "humanize()" in errors[0]


async def test_humanize_of_null_or_nothing_is_zero_bytes_as_in_velociraptor() -> None:
    assert await evaluate("humanize(bytes=NULL)") == ("0 B", [])
    assert await evaluate("humanize()") == ("0 B", [])
    assert await evaluate("humanize(comma=0, bytes=2000)") == ("2.0 kB", [])


async def test_regex_replace_accepts_replace_lambda_and_says_it_is_not_supported() -> None:
    value, errors = await evaluate("regex_replace(source='ab', re='a', replace_lambda='x=>x')")
    assert value is None and "replace_lambda" in errors[0]
    assert await evaluate("regex_replace(source='ab', re='A', replace='c')") == ("cb", [])


# More byte transforms ---------------------------------------------------------------------------


async def test_rot13_base85_and_utf16_encode() -> None:
    assert await evaluate("rot13(string='Hello, World')") == ("Uryyb, Jbeyq", [])
    assert await evaluate("base85decode(string=S)", S='87cURD]i,"Ebo7') == ("Hello World", [])
    value, errors = await evaluate("base85decode(string='~~~~')")
    assert value is None and "base85decode()" in errors[0]
    assert await evaluate("utf16_encode(string='ABCD')") == ("A\x00B\x00C\x00D\x00", [])
    assert await evaluate("utf16(string=utf16_encode(string='héllo ✓'))") == ("héllo ✓", [])


async def test_entropy_in_bits_a_byte() -> None:
    assert await evaluate("entropy(string='aaaa')") == (0.0, [])
    assert await evaluate("entropy(string='abcd')") == (2.0, [])
    assert await evaluate("entropy(string='')") == (0.0, [])


async def test_crypto_rc4_matches_the_published_test_vector_and_inverts() -> None:
    value, _ = await evaluate("format(format='%x', args=crypto_rc4(string='Plaintext', key='Key'))")
    assert value == "bbf316e8d940af0ad3"
    assert await evaluate("crypto_rc4(string=crypto_rc4(string='secret', key='k1'), key='k1')") == (
        "secret",
        [],
    )
    value, errors = await evaluate("crypto_rc4(string='x', key='')")
    assert value is None and "crypto_rc4()" in errors[0]


async def test_gunzip_inflates_and_rejects_what_is_not_gzip() -> None:
    value, _ = await evaluate(
        "gunzip(string=base64decode(string='H4sIAAAAAAACA3N0pC4AAKAb0QxQAAAA'))"
    )
    assert value == "A" * 80
    value, _ = await evaluate(
        "gunzip(string=base64decode(string='H4sIAAAAAAACA3N0pC4AAKAb0QxQAAAA'), max_bytes=5)"
    )
    assert value == "AAAAA"
    value, errors = await evaluate("gunzip(string='plain')")
    assert value is None and "gunzip()" in errors[0]

"""VQL's format(): Go's fmt.Sprintf for VQL values.

Expected texts come from the VQL conformance corpus and from Go's own fmt tests
(src/fmt/fmt_test.go), with Go's ``int`` read as VQL's ``int64``.
"""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from velotui.vql.gofmt import go_format, go_text

NAN = float("nan")
INF = float("inf")


def cases(*rows):
    return pytest.mark.parametrize(
        ("template", "args", "expected"),
        [
            pytest.param(template, args, expected, id=f"{template!r}-{args!r}"[:60])
            for template, args, expected in rows
        ],
    )


@cases(
    # The conformance corpus (format_function, let_cannot_mask_builtin_call).
    ("%v-%v", [1, "x"], "1-x"),
    ("%s", ["one"], "one"),
    ("%d items", [3], "3 items"),
    ("%05.2f", [3.14159], "03.14"),
    ("%x", [255], "ff"),
    ("%v!", [1], "1!"),
    # Everyday formats.
    ("%5d|%-5d|", [42, 42], "   42|42   |"),
    ("%+d", [5], "+5"),
    ("%08.3f", [-3.14159], "-003.142"),
    ("%e", [123456.789], "1.234568e+05"),
    ("%g", [0.00001234], "1.234e-05"),
    ("%t", [True], "true"),
    ("%q", ['a"b'], '"a\\"b"'),
    ("%c", [65], "A"),
    ("100%%", [], "100%"),
    ("%.3s", ["abcdef"], "abc"),
    ("%6.2f%%", [12.345], " 12.35%"),
    ("%v", [[1, "a"]], "[1 a]"),
    ("%v", [None], "<nil>"),
    ("%v", [1e6], "1e+06"),
    ("%x", ["hi"], "6869"),
    ("%X", [255], "FF"),
    ("%o", [8], "10"),
    ("%b", [5], "101"),
    ("%#x", [255], "0xff"),
    ("%*d", [5, 42], "   42"),
    ("%-*d|", [4, 7], "7   |"),
    ("%*d|", [-4, 7], "7   |"),
    ("%.*f", [2, 3.14159], "3.14"),
)
def test_common_formats(template, args, expected):
    assert go_format(template, args) == expected


@cases(
    ("%d %d", [1], "1 %!d(MISSING)"),
    ("%d", [1, 2], "1%!(EXTRA int64=2)"),
    ("", [None], "%!(EXTRA <nil>)"),
    ("no args", ["hello"], "no args%!(EXTRA string=hello)"),
    ("%d", [1, 2.5, True, "x"], "1%!(EXTRA float64=2.5, bool=true, string=x)"),
    ("%", [], "%!(NOVERB)"),
    ("%s %", ["hello"], "hello %!(NOVERB)"),
    ("%s %.2", ["hello"], "hello %!(NOVERB)"),
    ("%.", [3], "%!.(int64=3)"),
    ("%.-3d", [42], "%!-(int64=42)3d"),
    # Extra arguments print without the directive's flags.
    ("%010.2", ["12345"], "%!(NOVERB)%!(EXTRA string=12345)"),
    # Absurd widths swallow the rest of the template, as in Go.
    ("%017091901790959340919092959340919017929593813360", [0], "%!(NOVERB)%!(EXTRA int64=0)"),
    ("%2147483648d", [42], "%!(NOVERB)%!(EXTRA int64=42)"),
    ("%.2147483648d", [42], "%!(NOVERB)%!(EXTRA int64=42)"),
    ("%*d", ["5", 42], "%!(BADWIDTH)42"),
    ("%*d", [2_000_000, 42], "%!(BADWIDTH)42"),
    ("%*d", [], "%!(BADWIDTH)%!d(MISSING)"),
    ("%.*d", [-1, 42], "%!(BADPREC)42"),
    ("%d", ["hello"], "%!d(string=hello)"),
    ("%t", [1], "%!t(int64=1)"),
    ("%d", [None], "%!d(<nil>)"),
    ("%z", [1.5], "%!z(float64=1.5)"),
    ("%p", [27], "%!p(int64=27)"),
    ("%p", [None], "%!p(<nil>)"),
    ("%☠", ["hello"], "%!☠(string=hello)"),
    # The value inside the error form keeps the directive's width, as in Go.
    ("%7d", ["hello"], "%!d(string=  hello)"),
)
def test_go_error_forms(template, args, expected):
    assert go_format(template, args) == expected


@cases(
    ("%[1]d", [1], "1"),
    ("%[2]d", [2, 1], "1"),
    ("%[2]d %[1]d", [1, 2], "2 1"),
    ("%[2]*[1]d", [2, 5], "    2"),
    ("%[3]*.[2]*[1]f", [12.0, 2, 6], " 12.00"),
    ("%[1]*.[2]*[3]f", [6, 2, 12.0], " 12.00"),
    ("%[1]*[3]f", [10, 99, 12.0], " 12.000000"),
    ("%.[1]*[3]f", [6, 99, 12.0], "12.000000"),
    ("%6.f", [12.0], "    12"),
    ("%[1]*.[3]f", [6, 3, 12.0], "    12"),
    ("%d %d %d %#[1]o %#o %#o", [11, 12, 13], "11 12 13 013 014 015"),
    ("%d %d %d %#[1]o %#o %#o %#o", [11, 12, 13], "11 12 13 013 014 015 %!o(MISSING)"),
    ("%[d", [2, 1], "%!d(BADINDEX)"),
    ("%]d", [2, 1], "%!](int64=2)d%!(EXTRA int64=1)"),
    ("%[]d", [2, 1], "%!d(BADINDEX)"),
    ("%[-3]d", [2, 1], "%!d(BADINDEX)"),
    ("%[99]d", [2, 1], "%!d(BADINDEX)"),
    ("%[3]", [2, 1], "%!(NOVERB)"),
    ("%[1].2d", [5, 6], "%!d(BADINDEX)"),
    ("%[1]2d", [2, 1], "%!d(BADINDEX)"),
    ("%3.[2]d", [7], "%!d(BADINDEX)"),
    ("%.[2]d", [7], "%!d(BADINDEX)"),
    ("%[5]d %[2]d %d", [1, 2, 3], "%!d(BADINDEX) 2 3"),
    ("%d %[3]d %d", [1, 2], "1 %!d(BADINDEX) 2"),
    ("%.[]", [], "%!](BADINDEX)"),
)
def test_explicit_argument_indexes(template, args, expected):
    assert go_format(template, args) == expected


@cases(
    ("%d", [12345], "12345"),
    ("%d", [-12345], "-12345"),
    ("%d", [-(1 << 63)], "-9223372036854775808"),
    ("%.d", [0], ""),
    ("%6.0d", [0], "      "),
    ("%06.0d", [0], "      "),
    ("% d", [12345], " 12345"),
    ("%+d", [-12345], "-12345"),
    ("%b", [-6], "-110"),
    ("%#b", [7], "0b111"),
    ("%#b", [-6], "-0b110"),
    ("%o", [0o1234], "1234"),
    ("%#o", [-0o1234], "-01234"),
    ("%#o", [0], "0"),
    ("%O", [-0o1234], "-0o1234"),
    ("%#X", [0], "0X0"),
    ("%x", [0x12ABCDEF], "12abcdef"),
    ("%.20b", [7], "00000000000000000111"),
    ("%10d", [-12345], "    -12345"),
    ("%+10d", [12345], "    +12345"),
    ("%010d", [12345], "0000012345"),
    ("%010d", [-12345], "-000012345"),
    ("%020.8d", [-1234], "           -00001234"),
    ("%-20.8d", [-1234], "-00001234           "),
    ("%-#20.8x", [0x1234ABC], "0x01234abc          "),
    ("%-#20.8X", [0x1234ABC], "0X01234ABC          "),
    ("%-05d|", [42], "42   |"),
    ("%068d", [-1], "-" + "0" * 66 + "1"),
    ("%#.68x", [42], "0x" + "0" * 66 + "2a"),
    ("%+.68d", [42], "+" + "0" * 66 + "42"),
    ("%x", [-255], "-ff"),
    # %+v and %#v are Go-syntax forms; for VQL values they are plain %v.
    ("%+v", [5], "5"),
    ("%#v", [255], "255"),
    ("%.3v", [5], "005"),
)
def test_integers(template, args, expected):
    assert go_format(template, args) == expected


@cases(
    ("%c", [0xE4], "ä"),
    ("%c", [0x672C], "本"),
    ("%.0c", [ord("⌘")], "⌘"),
    ("%3c", [ord("⌘")], "  ⌘"),
    ("%-3c", [ord("⌘")], "⌘  "),
    ("%c", [-1], "\ufffd"),
    ("%c", [0xDC80], "\ufffd"),
    ("%c", [0x110000], "\ufffd"),
    ("%q", [0], "'\\x00'"),
    ("%q", [ord('"')], "'\"'"),
    ("%q", [ord("'")], "'\\''"),
    ("%q", [ord("ÿ")], "'ÿ'"),
    ("%+q", [ord("ÿ")], "'\\u00ff'"),
    ("%q", [ord("\n")], "'\\n'"),
    ("%+q", [ord("☺")], "'\\u263a'"),
    ("%010q", [ord("⌘")], "0000000'⌘'"),
    ("%-010q", [ord("⌘")], "'⌘'       "),
    ("%q", [0x0E00], "'\\u0e00'"),
    ("%q", [0x10FFFF], "'\\U0010ffff'"),
    ("%q", [-1], "'\ufffd'"),
    ("%U", [0], "U+0000"),
    ("%U", [-1], "U+FFFFFFFFFFFFFFFF"),
    ("%#U", [ord("\n")], "U+000A"),
    ("%+U", [ord("x")], "U+0078"),
    ("%# U", [ord("x")], "U+0078 'x'"),
    ("%#.2U", [ord("x")], "U+0078 'x'"),
    ("%#U", [0x1D6C2], "U+1D6C2 '\U0001d6c2'"),
    ("%#14.6U", [ord("⌘")], "  U+002318 '⌘'"),
    ("%#-014.6U", [ord("⌘")], "U+002318 '⌘'  "),
)
def test_characters(template, args, expected):
    assert go_format(template, args) == expected


@cases(
    ("%+.3e", [0.0], "+0.000e+00"),
    ("%+.3f", [-1.0], "-1.000"),
    ("%+.3F", [-1.0], "-1.000"),
    ("%+07.2f", [1.0], "+001.00"),
    ("%-07.2f", [-1.0], "-1.00  "),
    ("%+-07.2f", [1.0], "+1.00  "),
    ("%+10.2f", [-1.0], "     -1.00"),
    ("% .3E", [-1.0], "-1.000E+00"),
    ("% .3e", [1.0], " 1.000e+00"),
    ("%+.3g", [0.0], "+0"),
    ("% .3g", [1.0], " 1"),
    ("% 07.2f", [1.0], " 001.00"),
    ("% +07.2f", [-1.0], "-001.00"),
    ("%07.2f", [1.0], "0001.00"),
    ("%b", [1.0], "4503599627370496p-52"),
    ("%.4b", [-1.0], "-4503599627370496p-52"),
    ("%#b", [1.0], "4503599627370496p-52"),
    ("%e", [1234.5678e3], "1.234568e+06"),
    ("%e", [-1e-9], "-1.000000e-09"),
    ("%f", [1234.5678e-8], "0.000012"),
    ("%f", [-1e-9], "-0.000000"),
    ("%g", [1234.5678e3], "1.2345678e+06"),
    ("%g", [-7.0], "-7"),
    ("%G", [-1e-9], "-1E-09"),
    ("%G", [1234.5678e-8], "1.2345678E-05"),
    ("%20.8e", [1.2345e3], "      1.23450000e+03"),
    ("%20f", [12345678901.23456789], "  12345678901.234568"),
    ("%g", [1.23456789e-3], "0.00123456789"),
    ("%g", [1.23456789e20], "1.23456789e+20"),
    ("%.68f", [-1.0], "-1." + "0" * 68),
    ("%v", [1.2345678], "1.2345678"),
    ("%.2v", [3.14159], "3.1"),
    ("%+v", [1.5], "1.5"),
    # The '#' flag keeps the decimal point and %g's trailing zeros.
    ("%#g", [1e-323], "1.00000e-323"),
    ("%#g", [-1.0], "-1.00000"),
    ("%#g", [123456.0], "123456."),
    ("%#g", [1234567.0], "1.234567e+06"),
    ("%#g", [1230000.0], "1.23000e+06"),
    ("%#.0f", [1.0], "1."),
    ("%#.0e", [123.0], "1.e+02"),
    ("%#.0g", [1100000.0], "1.e+06"),
    ("%#.4g", [0.0], "0.000"),
    ("%#.4g", [0.012], "0.01200"),
    ("%#.4g", [123000.0], "1.230e+05"),
    ("%#9.4g", [1.0], "    1.000"),
    # Infinities and NaN: never zero-padded; NaN shows a sign only when asked.
    ("%f", [INF], "+Inf"),
    ("%.1f", [-INF], "-Inf"),
    ("% f", [NAN], " NaN"),
    ("%20f", [INF], "                +Inf"),
    ("% 20F", [INF], "                 Inf"),
    ("%+-20G", [INF], "+Inf                "),
    ("%20e", [NAN], "                 NaN"),
    ("% +20E", [NAN], "                +NaN"),
    ("%+020e", [INF], "                +Inf"),
    ("%-020E", [NAN], "NaN                 "),
    ("%v", [NAN], "NaN"),
    ("%v", [-INF], "-Inf"),
)
def test_floats(template, args, expected):
    assert go_format(template, args) == expected


@cases(
    ("%x", ["abc"], "616263"),
    ("%x", [b"\xff\xf0\x0f\xff"], "fff00fff"),
    ("%X", [b"\xff\xf0\x0f\xff"], "FFF00FFF"),
    ("%x", [""], ""),
    ("%# x", [""], ""),
    ("% x", ["xyz"], "78 79 7a"),
    ("%#X", ["xyz"], "0X78797A"),
    ("%# x", ["xyz"], "0x78 0x79 0x7a"),
    ("%x", ["é"], "c3a9"),
    ("%.1x", ["日本語"], "e6"),
    ("%.5x", ["abcdefghijklmnopqrstuvwxyz"], "6162636465"),
    ("%2x", [b""], "  "),
    ("% 02x", [b""], "00"),
    ("%-02x", [""], "  "),
    ("%#8x", [b"\xab"], "    0xab"),
    ("%#08x", [b"\xab"], "00000xab"),
    ("% 010x", [b"\xab\xcd"], "00000ab cd"),
    ("%# 010x", [b"\xab\xcd"], "00xab 0xcd"),
    ("%# -010X", [b"\xab\xcd"], "0XAB 0XCD "),
    ("%5s", ["abc"], "  abc"),
    ("%2s", ["\u263a"], " ☺"),
    ("%-5s", [b"abc"], "abc  "),
    ("%05s", ["abc"], "00abc"),
    ("%0-5s", ["abc"], "abc  "),
    ("%5s", ["abcdefghijklmnopqrstuvwxyz"], "abcdefghijklmnopqrstuvwxyz"),
    ("%.0s", ["日本語日本語"], ""),
    ("%.5s", ["日本語日本語"], "日本語日本"),
    ("%.5s", [b"abcdefghijklmnopqrstuvwxyz"], "abcde"),
    ("%20.5s", ["qwertyuiop"], "               qwert"),
    ("%-20.5s", ["qwertyuiop"], "qwert               "),
    ("%.2v", ["abc"], "ab"),
    ("%10v", [None], "     <nil>"),
    ("%-10v", [None], "<nil>     "),
    ("%s", [b"abc"], "abc"),
)
def test_strings_and_bytes(template, args, expected):
    assert go_format(template, args) == expected


@cases(
    ("%q", [""], '""'),
    ("%#q", [""], "``"),
    ("%#q", ['"'], '`"`'),
    ("%q", ["`"], '"`"'),
    ("%#q", ["`"], '"`"'),
    ("%#q", ["\n"], '"\\n"'),
    ("%q", ["\\n"], '"\\\\n"'),
    ("%#q", ["\\n"], "`\\n`"),
    ("%q", ["日本語"], '"日本語"'),
    ("%+q", ["日本語"], '"\\u65e5\\u672c\\u8a9e"'),
    ("%#+q", ["日本語"], "`日本語`"),
    ("%q", ['\a\b\f\n\r\t\v"\\'], '"\\a\\b\\f\\n\\r\\t\\v\\"\\\\"'),
    ("% q", ["☺"], '"☺"'),
    ("%+10q", ["⌘"], '  "\\u2318"'),
    ("%+-10q", ["⌘"], '"\\u2318"  '),
    ("%+010q", ["⌘"], '00"\\u2318"'),
    ("%-010q", ["⌘"], '"⌘"       '),
    ("%#8q", ["\n"], '    "\\n"'),
    ("%#-8q", ["\t"], "`\t`     "),
    ("%q", [b"abc\xffdef"], '"abc\\xffdef"'),
    ("%#q", [b"abc\xffdef"], '"abc\\xffdef"'),
    ("%q", ["\U0010ffff"], '"\\U0010ffff"'),
    ("%#q", ["\U0010ffff"], "`\U0010ffff`"),
    ("%q", ["\x7f\x01"], '"\\x7f\\x01"'),
    ("%.5q", ["abcdefghijklmnopqrstuvwxyz"], '"abcde"'),
    ("%.3q", ["日本語日本語"], '"日本語"'),
    ("%10.1q", [b"\xe6\x97\xa5\xe6\x9c\xac"], '       "日"'),
    ("%08q", ["abc"], '000"abc"'),
    ("%-8q", ["abc"], '"abc"   '),
    # A lone surrogate is what Go sees as invalid UTF-8 bytes.
    ("%q", ["\ud800"], '"\\xed\\xa0\\x80"'),
)
def test_quoting(template, args, expected):
    assert go_format(template, args) == expected


@cases(
    # Go applies the verb and flags to each element of a list.
    ("%v", [[1, "hello", 2.5, None]], "[1 hello 2.5 <nil>]"),
    ("%#x", [[1, 2, 15]], "[0x1 0x2 0xf]"),
    ("%x", [[1, 2, 15]], "[1 2 f]"),
    ("%d", [[1, 2, 15]], "[1 2 15]"),
    ("%q", [["a", "b"]], '["a" "b"]'),
    ("%06v", [[-10.0, 10]], "[-00010 000010]"),
    ("%03.6v", [[1, 2.0, "x"]], "[000001 002 00x]"),
    ("%03.0v", [[0, 2.0, "x"]], "[    002 000]"),
    ("%d", [[1, "a", None]], "[1 %!d(string=a) <nil>]"),
    ("%v", [[]], "[]"),
    ("%v", [[[1, 2], [3]]], "[[1 2] [3]]"),
    # A byte string under a number verb is the list of its bytes, as in Go.
    ("%d", [b"\x01\x02\x0f"], "[1 2 15]"),
    ("%+d", [b"\x01\x0b\x6f"], "[+1 +11 +111]"),
    ("%c", [b"ABC"], "[A B C]"),
    ("%b", [b"ABC"], "[1000001 1000010 1000011]"),
)
def test_lists(template, args, expected):
    assert go_format(template, args) == expected


@cases(
    ("%T", [5], "int64"),
    ("%T", [1.5], "float64"),
    ("%T", ["x"], "string"),
    ("%T", [True], "bool"),
    ("%T", [[1]], "[]interface {}"),
    ("%T", [{"a": 1}], "*ordereddict.Dict"),
    ("%T", [b"x"], "[]uint8"),
    ("%10T", [None], "     <nil>"),
    ("%6T", [5], " int64"),
)
def test_type_names(template, args, expected):
    assert go_format(template, args) == expected


@cases(
    # %s of anything is its %v text, where Go would write %!s(int64=5).
    ("%s", [5], "5"),
    ("%s", [2.5], "2.5"),
    ("%s", [True], "true"),
    ("%s", [None], "<nil>"),
    ("%s", [[1, "a"]], "[1 a]"),
    ("%5s|", [7], "    7|"),
    ("%.2s", [12345], "12"),
    # %d of a whole float is the integer; anything else stays Go's error form.
    ("%d", [3.0], "3"),
    ("%05d", [-3.0], "-0003"),
    ("%d", [3.5], "%!d(float64=3.5)"),
    ("%d", [NAN], "%!d(float64=NaN)"),
    ("%d", [True], "%!d(bool=true)"),
    ("%x", [1.5], "%!x(float64=1.5)"),
    ("%f", [5], "%!f(int64=5)"),
    # Dicts behave like Velociraptor's ordered dicts: their JSON under the string verbs.
    ("%v", [{"a": 1, "b": "x"}], '{"a":1,"b":"x"}'),
    ("%s", [{"a": [1, None]}], '{"a":[1,null]}'),
    ("%x", [{"a": 1}], "7b2261223a317d"),
    ("%d", [{"a": 1}], '%!d(*ordereddict.Dict={"a":1})'),
    ("%v", [datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)], "2023-11-14T22:13:20Z"),
)
def test_vql_values(template, args, expected):
    assert go_format(template, args) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "<nil>"),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (-7, "-7"),
        (1e6, "1e+06"),
        (123456.0, "123456"),
        (1.0, "1"),
        (0.000012, "1.2e-05"),
        (0.0001, "0.0001"),
        (3.14, "3.14"),
        (1e20, "1e+20"),
        (123456789.0, "1.23456789e+08"),
        (1e100, "1e+100"),
        (5e-324, "5e-324"),
        (-0.0, "-0"),
        (0.0, "0"),
        (-2.5, "-2.5"),
        (NAN, "NaN"),
        (INF, "+Inf"),
        (-INF, "-Inf"),
        ("text", "text"),
        (b"caf\xc3\xa9", "café"),
        (b"\xff", "\ufffd"),
        ([1, "a", None, [2.5]], "[1 a <nil> [2.5]]"),
        ((1, 2), "[1 2]"),
        ({"b": 1, "a": [True, None], "é": "ü"}, '{"b":1,"a":[true,null],"é":"ü"}'),
        ({"t": datetime(2020, 1, 1)}, '{"t":"2020-01-01 00:00:00"}'),
        (datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), "2023-11-14T22:13:20Z"),
        (datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC), "2023-11-14T22:13:20.5Z"),
        (datetime(2023, 11, 14, 22, 13, 20, 123456), "2023-11-14T22:13:20.123456Z"),
        (
            datetime(2023, 11, 15, 0, 13, 20, tzinfo=timezone(timedelta(hours=2))),
            "2023-11-14T22:13:20Z",
        ),
    ],
    ids=repr,
)
def test_go_text(value, expected):
    assert go_text(value) == expected


def test_format_accepts_a_tuple_of_arguments():
    assert go_format("%d-%s", (1, "a")) == "1-a"


_TEMPLATE_PIECES = [*"%vsdxXoObfFeEgGqtcUTpw-+# 0123456789.*[]", "abc", "é", "☺", "%%"]

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["\ud800", "a\udc80b", "\ufeff", "\x00\x7f"])
    | st.binary(max_size=8)
    | st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=14))]))
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None)
@given(
    template=st.lists(st.sampled_from(_TEMPLATE_PIECES), max_size=24).map("".join),
    args=st.lists(_VALUES, max_size=4),
)
def test_go_format_never_raises(template, args):
    assert isinstance(go_format(template, args), str)


@given(value=_VALUES)
def test_go_text_never_raises(value):
    assert isinstance(go_text(value), str)

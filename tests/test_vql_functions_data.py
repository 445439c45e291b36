"""VQL's functions on structured values, called through the engine as artifacts call them."""

from __future__ import annotations

from typing import Any

import yaml

from tests.vql_evaluate import evaluate
from velotui.vql import collect


async def rows_of(query: str, **env: Any) -> tuple[list[dict[str, Any]], list[str]]:
    logs: list[tuple[str, str]] = []
    rows = await collect(query, env=env, on_log=lambda level, text: logs.append((level, text)))
    errors = [text for level, text in logs if level == "error"]
    assert not [text for text in errors if text.startswith("Unknown function")]
    return rows, errors


# array -------------------------------------------------------------------------------------------


async def test_array_lists_its_arguments_in_order_without_flattening() -> None:
    assert await evaluate("array(a=1, b=2)") == ([1, 2], [])
    assert await evaluate("array(a=[1, 2])") == ([[1, 2]], [])


async def test_array_of_underscore_takes_a_list_or_a_query() -> None:
    assert await evaluate("array(_=[1, 2])") == ([1, 2], [])
    value, _ = await evaluate("array(_={ SELECT _value AS N FROM range(start=1, end=4) }).N")
    assert value == [1, 2, 3]


# set ---------------------------------------------------------------------------------------------


async def test_set_changes_a_dict_held_in_a_let_for_later_rows() -> None:
    rows, errors = await rows_of(
        """
        LET State <= dict(installed=FALSE)
        SELECT set(item=State, field="installed", value=TRUE) AS Changed FROM scope()
        SELECT State.installed AS Installed FROM scope()
        """
    )
    assert errors == []
    assert rows == [{"Changed": {"installed": True}}, {"Installed": True}]


async def test_set_on_something_that_is_not_a_dict_logs_and_gives_null() -> None:
    value, errors = await evaluate("set(item='text', field='a', value=1)")
    assert value is None and "set()" in errors[0]


# to_dict -----------------------------------------------------------------------------------------


async def test_to_dict_builds_a_dict_from_key_and_value_rows_in_order() -> None:
    value, errors = await evaluate(
        "to_dict(item={ SELECT format(format='k%v', args=_value) AS _key, _value * 10 AS _value "
        "FROM range(start=3, end=0, step=-1) })"
    )
    assert errors == []
    assert list(value.items()) == [("k3", 30), ("k2", 20), ("k1", 10)]


async def test_to_dict_skips_rows_without_a_text_key() -> None:
    rows = [{"_key": "a", "_value": 1}, {"_key": "", "_value": 2}, {"_key": 3, "_value": 3}]
    assert await evaluate("to_dict(item=Rows)", Rows=rows) == ({"a": 1}, [])
    assert await evaluate("to_dict(item=NULL)") == ({}, [])


async def test_to_dict_feeds_on_items_to_filter_a_dict() -> None:
    value, _ = await evaluate(
        "to_dict(item={ SELECT * FROM items(item=dict(a=1, b=2, c=3)) WHERE _value > 1 })"
    )
    assert value == {"b": 2, "c": 3}


# filter ------------------------------------------------------------------------------------------


async def test_filter_keeps_the_items_a_regex_matches() -> None:
    assert await evaluate("filter(list=['AA', 'AB', 'BA', 'BB'], regex='^A')") == (
        ["AA", "AB"],
        [],
    )
    # Linux.Sys.Hosts drops the empty strings split() leaves.
    value, _ = await evaluate("filter(list=split(sep='''\\s+''', string=' a  b '), regex='.+')")
    assert value == ["a", "b"]


async def test_filter_with_a_let_function_as_condition() -> None:
    rows, errors = await rows_of(
        """
        LET big(x) = x > 3
        SELECT filter(list=[1, 2, 3, 4, 5, 6], condition=big) AS Value FROM scope()
        """
    )
    assert (rows, errors) == ([{"Value": [4, 5, 6]}], [])


async def test_filter_with_a_lambda_as_text_says_lambdas_are_not_supported() -> None:
    value, errors = await evaluate("filter(list=[1, 2], condition='x=>x > 1')")
    assert value is None and "lambda" in errors[0]


async def test_filter_with_an_invalid_regex_logs_and_gives_null() -> None:
    value, errors = await evaluate("filter(list=['a'], regex='(')")
    assert value is None and "filter()" in errors[0]


# JSON --------------------------------------------------------------------------------------------


async def test_parse_json_gives_members_and_keeps_key_order() -> None:
    value, errors = await evaluate("parse_json(data=D)", D='{"b": 1, "a": {"c": [1, 2]}}')
    assert errors == [] and list(value) == ["b", "a"]
    assert await evaluate("parse_json(data=D).a.c[1]", D='{"a": {"c": [1, 2]}}') == (2, [])


async def test_parse_json_of_bad_text_logs_and_gives_null() -> None:
    value, errors = await evaluate("parse_json(data='{nope')")
    assert value is None and "parse_json()" in errors[0]
    assert await evaluate("parse_json(data=NULL)") == (None, [])


async def test_parse_json_array_as_fetch_binary_uses_it() -> None:
    assert await evaluate("parse_json_array(data=U || '[]')", U='["http://a", "http://b"]') == (
        ["http://a", "http://b"],
        [],
    )
    assert await evaluate("parse_json_array(data=U || '[]')", U="") == ([], [])
    value, errors = await evaluate("parse_json_array(data='{}')")
    assert value is None and "not an array" in errors[0]


async def test_parse_json_array_rows_can_be_iterated_by_foreach() -> None:
    rows, _ = await rows_of(
        "SELECT * FROM foreach(row=parse_json_array(data=D))", D='[{"a": 1}, {"a": 2}]'
    )
    assert rows == [{"a": 1}, {"a": 2}]


# serialize ---------------------------------------------------------------------------------------


async def test_serialize_defaults_to_compact_json() -> None:
    assert await evaluate("serialize(item=dict(a=1, b=[1, 'x']))") == ('{"a":1,"b":[1,"x"]}', [])


async def test_serialize_as_yaml_reads_back() -> None:
    value, _ = await evaluate(
        "serialize(format='yaml', item=dict(remappings=[dict(type='mount', `from`='/')]))"
    )
    assert yaml.safe_load(value) == {"remappings": [{"type": "mount", "from": "/"}]}


async def test_serialize_as_csv_has_a_header_of_every_column() -> None:
    value, _ = await evaluate("serialize(format='csv', item=[dict(A=1, B='x,y'), dict(A=2, C=3)])")
    assert value == 'A,B,C\n1,"x,y",\n2,,3\n'


async def test_serialize_with_an_unknown_format_logs_and_gives_null() -> None:
    value, errors = await evaluate("serialize(format='xml', item=1)")
    assert value is None and "serialize()" in errors[0]


# items and encode ---------------------------------------------------------------------------------


async def test_items_as_a_function_gives_key_and_value_rows() -> None:
    assert await evaluate("items(item=dict(a=1, b=2))") == (
        [{"_key": "a", "_value": 1}, {"_key": "b", "_value": 2}],
        [],
    )
    assert await evaluate("items(item=5)") == ([{"_value": 5}], [])
    assert await evaluate("to_dict(item=items(item=dict(a=1)))") == ({"a": 1}, [])


async def test_encode_is_serialize_for_json_yaml_and_csv() -> None:
    assert await evaluate("encode(string=dict(a=1), type='json')") == ('{"a":1}', [])
    assert await evaluate("encode(string=[dict(a=1)], type='csv')") == ("a\n1\n", [])
    assert await evaluate("encode(string='hi', type='hex')") == ("6869", [])


# all, any, slice, typeof, lazy_dict, uuid ---------------------------------------------------------


async def test_all_and_any_by_truth_regex_and_let_function() -> None:
    assert await evaluate("all(items=[1, 'a', TRUE])") == (True, [])
    assert await evaluate("all(items=[1, 0])") == (False, [])
    assert await evaluate("any(items=[0, '', 2])") == (True, [])
    assert await evaluate("any(items=[])") == (False, [])
    assert await evaluate("all(items=['ab', 'ac'], regex='^a')") == (True, [])
    assert await evaluate("any(items=['ab', 'cd'], regex=['^x', 'd$'])") == (True, [])
    rows, _ = await rows_of(
        "LET small(x) = x < 3 "
        "SELECT all(items=[0, 1, 2, 3], filter=small) AS A, "
        "any(items=[5, 1], filter=small) AS B FROM scope()"
    )
    assert rows == [{"A": False, "B": True}]
    value, errors = await evaluate("all(items=[1], filter='x=>x')")
    assert value is None and "lambda" in errors[0]


async def test_slice_takes_a_clamped_range_of_a_list() -> None:
    assert await evaluate("slice(list=[1, 2, 3, 4], start=1, end=3)") == ([2, 3], [])
    assert await evaluate("slice(list=[1, 2], start=1, end=10)") == ([2], [])
    value, errors = await evaluate("slice(list=[1, 2], start=-1, end=1)")
    assert value is None and "slice()" in errors[0]


async def test_typeof_names_the_go_type_of_any_argument() -> None:
    value, _ = await evaluate(
        "format(format='%v %v %v %v %v %v', args=[typeof(x=1), typeof(fluffydinosaur='a'), "
        "typeof(x=1.5), typeof(x=[1]), typeof(x=dict(a=1)), typeof(x=NULL)])"
    )
    assert value == "int64 string float64 []interface {} *ordereddict.Dict <nil>"


async def test_lazy_dict_and_uuid() -> None:
    assert await evaluate("lazy_dict(a=1, b=1 + 1)") == ({"a": 1, "b": 2}, [])
    rows, _ = await rows_of("SELECT uuid() AS U FROM range(start=0, end=2)")
    first, second = rows[0]["U"], rows[1]["U"]
    assert first != second and len(first) == 36 and first[14] == "4"


async def test_parse_json_array_as_a_plugin_gives_a_row_per_item() -> None:
    rows, errors = await rows_of(
        "SELECT * FROM parse_json_array(data=Stdout)",
        Stdout='[{"name": "sshd", "pid": "1"}, {"name": "cron", "pid": "2"}, 3]',
    )
    assert errors == []
    assert rows == [{"name": "sshd", "pid": "1"}, {"name": "cron", "pid": "2"}, {"_value": 3}]
    rows, errors = await rows_of("SELECT * FROM parse_json_array(data='oops')")
    assert rows == [] and "parse_json_array()" in errors[0]

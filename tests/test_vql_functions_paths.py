"""VQL's path functions, called through the engine as artifacts call them."""

from __future__ import annotations

from typing import Any

from tests.vql_evaluate import evaluate_with as evaluate
from velotui.vql import default_registry

# basename, dirname, path_join --------------------------------------------------------------------


async def test_basename_takes_the_last_component_of_either_kind_of_path() -> None:
    assert await evaluate("basename(path='/foo/bar')") == ("bar", [])
    assert await evaluate("basename(path='/foo/bar/')") == ("bar", [])
    assert await evaluate("basename(path='C:\\\\Windows\\\\notepad.exe')") == ("notepad.exe", [])
    assert await evaluate("basename(path='/')") == (None, [])
    assert await evaluate("basename(path=NULL)") == (None, [])


async def test_dirname_drops_the_last_component() -> None:
    assert await evaluate("dirname(path='/usr/bin/ls')") == ("/usr/bin", [])
    assert await evaluate("dirname(path='/usr/bin/ls', sep='\\\\')") == ("\\usr\\bin", [])
    assert await evaluate("dirname(path='C:\\\\Windows\\\\x.exe', path_type='windows')") == (
        "C:\\Windows",
        [],
    )
    assert await evaluate("dirname(path='')") == (None, [])


async def test_path_join_joins_components_that_may_hold_separators() -> None:
    assert await evaluate("path_join(components=['/tmp/velo', 'tool.bin'])") == (
        "/tmp/velo/tool.bin",
        [],
    )
    assert await evaluate("path_join(components=['a/', '/b', NULL, 'c'])") == ("/a/b/c", [])
    assert await evaluate("path_join(components=['C:', 'Windows'], path_type='windows')") == (
        "C:\\Windows",
        [],
    )
    assert await evaluate("path_join(components=['x', 'y'], sep='\\\\')") == ("\\x\\y", [])


# pathspec ----------------------------------------------------------------------------------------


async def test_pathspec_of_a_path_offers_its_parts_as_members() -> None:
    value, errors = await evaluate("pathspec(Path='/usr/bin/ls')")
    assert errors == []
    assert value["Path"] == "/usr/bin/ls"
    assert value["Components"] == ["usr", "bin", "ls"]
    assert value["Basename"] == "ls"
    assert value["Dirname"] == "/usr/bin"
    assert value["Type"] == "linux"
    assert await evaluate("pathspec(Path='/usr/bin/ls').Components[1]") == ("bin", [])


async def test_pathspec_with_a_delegate_keeps_it_for_the_accessor() -> None:
    value, _ = await evaluate("pathspec(DelegatePath='/tmp/a.zip', DelegateAccessor='file')")
    assert value["DelegatePath"] == "/tmp/a.zip"
    assert value["DelegateAccessor"] == "file"
    assert value["Components"] == []


async def test_pathspec_parse_reads_windows_paths_and_serialized_pathspecs() -> None:
    value, _ = await evaluate("pathspec(parse='C:\\\\Windows\\\\System32')")
    assert value["Components"] == ["C:", "Windows", "System32"]
    assert value["Path"] == "C:\\Windows\\System32" and value["Type"] == "windows"
    value, _ = await evaluate(
        "pathspec(parse=P)", env={"P": '{"DelegateAccessor":"raw_file","Path":"/x/y"}'}
    )
    assert value["DelegateAccessor"] == "raw_file" and value["Basename"] == "y"


async def test_pathspec_with_bad_json_logs_and_gives_null() -> None:
    value, errors = await evaluate("pathspec(parse='{broken')")
    assert value is None and "pathspec()" in errors[0]


# expand ------------------------------------------------------------------------------------------


async def test_expand_replaces_go_and_windows_style_variables() -> None:
    registry = default_registry()
    registry.set_setting("environment", {"HOME": "/home/alice", "SystemRoot": "C:\\Windows"})
    value, _ = await evaluate(
        "expand(path='$HOME/.cache ${HOME}/x %SYSTEMROOT%\\\\y $$5 $UNSET. %UNSET%')",
        registry=registry,
    )
    assert value == "/home/alice/.cache /home/alice/x C:\\Windows\\y $5 . %UNSET%"


async def test_expand_reads_the_process_environment_by_default(monkeypatch: Any) -> None:
    monkeypatch.setenv("VELOTUI_EXPAND_TEST", "found")
    assert await evaluate("expand(path='/tmp/$VELOTUI_EXPAND_TEST')") == ("/tmp/found", [])
    assert await evaluate("expand(path=NULL)") == (None, [])


async def test_path_split_and_relpath() -> None:
    assert await evaluate("path_split(path='/usr//lib/x.so')") == (["usr", "lib", "x.so"], [])
    assert await evaluate("path_split(path='C:\\\\Windows')") == (["C:", "Windows"], [])
    assert await evaluate("relpath(path='/a/b/c/d', base='/a/b')") == ("c/d", [])
    assert await evaluate("relpath(path='/a/x', base='/a/b/c')") == ("../../x", [])
    assert await evaluate("relpath(path='/a', base='/a')") == (".", [])


async def test_environ_reads_one_variable() -> None:
    registry = default_registry()
    registry.set_setting("environment", {"SHELL": "/bin/zsh"})
    assert await evaluate("environ(var='SHELL')", registry=registry) == ("/bin/zsh", [])
    assert await evaluate("environ(var='NOPE')", registry=registry) == (None, [])

"""unzip() on zip and tar.gz archives the tests build, including hostile member names."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from agent.plugins import client_registry
from velotui.vql import collect


async def query(text: str, **env: Any) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    logs: list[tuple[str, str]] = []
    rows = await collect(text, registry=client_registry(), env=env,
                         on_log=lambda level, message: logs.append((level, message)))
    errors = [message for level, message in logs if level == "error"]
    warnings = [message for level, message in logs if level == "warning"]
    return rows, errors, warnings


def build_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def build_tgz(path: Path, members: dict[str, bytes], *, link: str | None = None) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            archive.addfile(info)


async def test_unzip_extracts_a_zip_with_a_filter(tmp_path: Path) -> None:
    archive = tmp_path / "payload.zip"
    build_zip(archive, {"tool/run.exe": b"MZ" * 10, "tool/readme.txt": b"read me",
                        "tool/": b""})
    output = tmp_path / "out"
    rows, errors, warnings = await query(
        "SELECT * FROM unzip(filename=A, output_directory=O, filename_filter='\\\\.exe$')",
        A=str(archive), O=str(output),
    )
    assert (errors, warnings) == ([], [])
    assert rows == [{"OriginalPath": "tool/run.exe", "NewPath": str(output / "tool" / "run.exe"),
                     "Size": 20}]
    assert (output / "tool" / "run.exe").read_bytes() == b"MZ" * 10
    assert not (output / "tool" / "readme.txt").exists()


async def test_unzip_extracts_a_tar_gz_found_by_its_bytes(tmp_path: Path) -> None:
    archive = tmp_path / "logs.bin"  # no telling extension: the gzip magic decides
    build_tgz(archive, {"var/log/a.log": b"aaa", "b.log": b"bb"})
    rows, errors, _ = await query("SELECT OriginalPath, Size FROM unzip(filename=A,"
                                  " output_directory=O)", A=str(archive), O=str(tmp_path / "o"))
    assert errors == []
    assert rows == [{"OriginalPath": "var/log/a.log", "Size": 3},
                    {"OriginalPath": "b.log", "Size": 2}]
    assert (tmp_path / "o" / "var" / "log" / "a.log").read_bytes() == b"aaa"


async def test_unzip_never_writes_outside_the_output_folder(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    build_tgz(archive, {"../escaped.txt": b"x", "/abs.txt": b"y", "ok.txt": b"z"},
              link="passwd-link")
    output = tmp_path / "out"
    rows, errors, warnings = await query(
        "SELECT OriginalPath FROM unzip(filename=A, output_directory=O)",
        A=str(archive), O=str(output),
    )
    assert errors == []
    assert rows == [{"OriginalPath": "ok.txt"}]
    assert not (tmp_path / "escaped.txt").exists()
    assert sorted(p.name for p in output.iterdir()) == ["ok.txt"]
    assert warnings == [f"unzip(): {archive}: skipped 3 member(s) that are not files or would be"
                        f" written outside {output}, first ../escaped.txt"]


async def test_unzip_of_data_and_of_a_broken_archive(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("inner.txt", b"inner")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(buffer.getvalue()[:30])
    rows, errors, _ = await query(
        "SELECT OriginalPath FROM unzip(filename=B, output_directory=O)",
        B=str(broken), O=str(tmp_path / "o"),
    )
    assert rows == []
    assert len(errors) == 1
    assert errors[0].startswith(f"unzip(): {broken}: not a readable zip archive")
    rows, errors, _ = await query(
        "SELECT OriginalPath FROM unzip(filename='plain text', accessor='data',"
        " output_directory=O)", O=str(tmp_path / "o"),
    )
    assert rows == []
    assert errors == ["unzip(): <data, 10 bytes>: not a zip or tar.gz archive (say which with "
                      "type=)"]
    rows, errors, _ = await query(
        "SELECT * FROM unzip(filename=B, output_directory=O, type='rar')",
        B=str(broken), O=str(tmp_path / "o"),
    )
    assert (rows, errors) == ([], ["unzip(): type must be zip, tgz or tar.gz, not 'rar'"])

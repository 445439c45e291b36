"""timestamp() and now(), called through the engine as artifacts call them."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from tests.vql_evaluate import evaluate
from velotui.vql import collect

MOMENT = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    "arguments",
    [
        "epoch=1700000000",
        "epoch=1700000000000",  # milliseconds
        "epoch=1700000000000000",  # microseconds
        "epoch=1700000000000000000",  # nanoseconds
        "epoch='1700000000'",
        "epoch=1700000000.0",
        "cocoatime=721692800",
        "mactime=3782844800",
        "winfiletime=133444736000000000",
        "string='2023-11-14T22:13:20Z'",
        "string='2023-11-14 22:13:20'",
        "string='2023-11-15T00:13:20+02:00'",
        "string='Tue Nov 14 22:13:20 UTC 2023'",
        "string='Tue, 14 Nov 2023 22:13:20 +0000'",
        "string='2023/11/14 22:13:20'",
        "string='11/14/2023 22:13:20'",
        "string='14/11/2023 22:13', format='02/01/2006 15:04'",
        "string='20231114221320', format='20060102150405'",
        "string='2023-11-14T22:13:20Z', format='RFC3339'",
        "string='Nov 14 2023 10:13:20 PM', format='Jan _2 2006 3:04:05 PM'",
        "string='2023-11-14 17:13:20 -0500', format='2006-01-02 15:04:05 -0700'",
        "epoch='2023-11-14T22:13:20Z'",
    ],
)
async def test_timestamp_reads_every_documented_encoding(arguments: str) -> None:
    value, errors = await evaluate(f"timestamp({arguments})")
    assert errors == []
    expected = MOMENT.replace(second=0) if "15:04'" in arguments else MOMENT
    assert value == expected


async def test_timestamp_keeps_fractions_and_offers_time_members() -> None:
    value, _ = await evaluate("timestamp(string='2023-11-14T22:13:20.250Z')")
    assert value == MOMENT.replace(microsecond=250000)
    assert await evaluate("timestamp(epoch=1700000000).Unix") == (1700000000, [])
    assert await evaluate("timestamp(epoch=1700000000).Year") == (2023, [])


async def test_timestamp_of_a_syslog_date_assumes_the_current_year() -> None:
    value, errors = await evaluate("timestamp(string='Nov 14 22:13:20')")
    assert errors == []
    assert value == MOMENT.replace(year=datetime.now(UTC).year)


async def test_timestamp_of_zero_or_null_is_null_without_complaint() -> None:
    for arguments in ("epoch=0", "winfiletime=0", "epoch=NULL", "string=NULL"):
        assert await evaluate(f"timestamp({arguments})") == (None, [])


async def test_timestamp_of_text_that_is_no_time_logs_and_gives_null() -> None:
    value, errors = await evaluate("timestamp(string='not a time')")
    assert value is None and "timestamp()" in errors[0]
    value, errors = await evaluate("timestamp(string='2023-11-14', format='02/01/2006')")
    assert value is None and "layout" in errors[0]
    value, errors = await evaluate("timestamp(epoch=[1])")
    assert value is None and "timestamp()" in errors[0]


async def test_timestamp_compares_with_now_as_artifacts_do() -> None:
    value, _ = await evaluate("timestamp(epoch=now() - 3600) < timestamp(epoch=now())")
    assert value is True


async def test_now_gives_integer_seconds_or_nanoseconds() -> None:
    before = int(time.time())
    seconds, _ = await evaluate("now()")
    nanoseconds, _ = await evaluate("now(ns=TRUE)")
    assert isinstance(seconds, int) and before <= seconds <= int(time.time())
    assert isinstance(nanoseconds, int) and nanoseconds // 1_000_000_000 >= before


async def test_timestamp_format_writes_go_layouts_in_utc() -> None:
    assert await evaluate("timestamp_format(time=timestamp(epoch=1700000000))") == (
        "2023-11-14T22:13:20Z",
        [],
    )
    assert await evaluate(
        "timestamp_format(time=1700000000.25, format='Mon Jan _2 15:04:05.000 MST 2006')"
    ) == ("Tue Nov 14 22:13:20.250 UTC 2023", [])
    assert await evaluate("timestamp_format(time=T, format='3:04PM 002 -07:00')", T=MOMENT) == (
        "10:13PM 318 +00:00",
        [],
    )
    assert await evaluate("timestamp_format(time=1700000000, format='DateTime')") == (
        "2023-11-14 22:13:20",
        [],
    )


async def test_timestamp_format_round_trips_through_timestamp() -> None:
    value, _ = await evaluate(
        "timestamp(string=timestamp_format(time=T, format='02/01/2006 15:04:05.999'), "
        "format='02/01/2006 15:04:05.999')",
        T=MOMENT.replace(microsecond=125000),
    )
    assert value == MOMENT.replace(microsecond=125000)


async def test_timestamp_format_of_something_that_is_no_time_logs_and_gives_null() -> None:
    value, errors = await evaluate("timestamp_format(time='soon')")
    assert value is None and "timestamp_format()" in errors[0]


async def test_timestamp_guesses_the_documented_examples() -> None:
    assert await evaluate("timestamp(string='March 3 2019')") == (
        datetime(2019, 3, 3, tzinfo=UTC),
        [],
    )
    assert await evaluate("timestamp(string='07/25/2019 5pm')") == (
        datetime(2019, 7, 25, 17, tzinfo=UTC),
        [],
    )
    assert await evaluate("timestamp(string='25/07/2019')") == (
        datetime(2019, 7, 25, tzinfo=UTC),
        [],
    )
    assert await evaluate(
        "timestamp(string='8/30/2021 6:01:28 PM', format='1/2/2006 3:04:05 PM')"
    ) == (datetime(2021, 8, 30, 18, 1, 28, tzinfo=UTC), [])


async def test_parse_tz_places_times_that_name_no_zone() -> None:
    logs: list[tuple[str, str]] = []
    rows = await collect(
        """LET PARSE_TZ <= "Europe/Berlin"
           SELECT timestamp(string="Thu Aug 29 2024 21:03") AS Ambiguous,
                  timestamp(string="Thu Aug 29 2024 21:03 CEST") AS Named,
                  timestamp(string="2024-08-29 21:03:00Z") AS Utc,
                  timestamp(string="29/08/2024 21:03", format="02/01/2006 15:04") AS Layout
           FROM scope()""",
        on_log=lambda level, message: logs.append((level, message)),
    )
    berlin_evening = datetime(2024, 8, 29, 19, 3, tzinfo=UTC)
    assert rows == [
        {
            "Ambiguous": berlin_evening,
            "Named": berlin_evening,
            "Utc": datetime(2024, 8, 29, 21, 3, tzinfo=UTC),
            "Layout": berlin_evening,
        }
    ]
    assert logs == []


async def test_tz_sets_the_zone_timestamp_format_writes_in() -> None:
    rows = await collect(
        """LET TZ = "Asia/Tokyo"
           SELECT timestamp_format(time=1700000000, format="RFC3339") AS Tokyo,
                  timestamp_format(time=1700000000, format="15:04 MST") AS Named
           FROM scope()"""
    )
    assert rows == [{"Tokyo": "2023-11-15T07:13:20+09:00", "Named": "07:13 JST"}]


async def test_an_unknown_zone_is_logged_and_utc_used() -> None:
    logs: list[tuple[str, str]] = []
    rows = await collect(
        "SELECT timestamp(string='2024-08-29 21:03:00') AS T FROM scope()",
        env={"PARSE_TZ": "Mars/Olympus"},
        on_log=lambda level, message: logs.append((level, message)),
    )
    assert rows == [{"T": datetime(2024, 8, 29, 21, 3, tzinfo=UTC)}]
    assert any("Mars/Olympus" in message for _, message in logs)

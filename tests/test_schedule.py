"""When re-sends fall due, and the units that run them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from notify.schedule import as_utc, crontab_line, describe_schedule, due_at, systemd_units

BOUNCED = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_each_step_waits_from_the_last_failure_until_the_schedule_runs_out():
    schedule = (3600.0, 4 * 3600.0)
    assert due_at(BOUNCED, 0, schedule) == BOUNCED + timedelta(hours=1)
    assert due_at(BOUNCED, 1, schedule) == BOUNCED + timedelta(hours=4)
    assert due_at(BOUNCED, 2, schedule) is None


def test_a_timestamp_without_a_zone_is_utc():
    assert as_utc(datetime(2026, 11, 30, 12, 0)) == BOUNCED


def test_the_schedule_reads_as_an_operator_writes_it():
    assert describe_schedule((3600, 14400, 86400)) == "1h, 4h, 1d (3 re-sends over 29h)"


def test_cron_and_systemd_run_resend_for_the_workspace(tmp_path: Path):
    line = crontab_line(tmp_path, "42")
    assert line.startswith("*/10 * * * * ")
    assert f"resend --incident 42 --workspace {tmp_path.resolve()}" in line
    assert line.endswith(f">> {tmp_path.resolve()}/.notify/resend-42.log 2>&1")
    units = systemd_units(tmp_path, "42")
    assert sorted(units) == ["notify-resend-42.service", "notify-resend-42.timer"]
    assert f"WorkingDirectory={tmp_path.resolve()}\n" in units["notify-resend-42.service"]
    assert "Type=oneshot\n" in units["notify-resend-42.service"]

"""Settings: .env under the real environment, one-line errors, and a password kept out of sight."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from notify.errors import SettingsError
from notify.settings import KNOWN_SETTINGS, Settings, load_settings, parse_schedule
from notify.workspace import Workspace
from tests.conftest import WorkspaceFactory

HOUR = 3600.0
NO_ENV_FILE = Workspace(Path("/nonexistent/notify-test-workspace"))


def load(workspace: WorkspaceFactory, **environ: str) -> Settings:
    return load_settings(Workspace.open(workspace.root), environ)


def error(workspace: WorkspaceFactory, **environ: str) -> str:
    with pytest.raises(SettingsError) as caught:
        load(workspace, **environ)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_without_env_file_or_environment(workspace: WorkspaceFactory) -> None:
    settings = load(workspace)
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_security) == (
        None,
        587,
        "starttls",
    )
    assert settings.smtp_user is None and settings.smtp_password is None
    assert settings.rate is None and settings.connections == 4
    assert settings.ledger is None and settings.return_path is None
    assert settings.resend_schedule == (HOUR, 4 * HOUR, 12 * HOUR, 24 * HOUR, 48 * HOUR, 48 * HOUR)
    assert (settings.imap_port, settings.imap_folder) == (993, "INBOX")


def test_values_are_read_from_the_env_file(workspace: WorkspaceFactory) -> None:
    workspace.write(
        ".env",
        "# relay\n"
        "NOTIFY_SMTP_HOST=smtp.acme.example\n"
        "NOTIFY_SMTP_PORT=2525\n"
        "NOTIFY_SMTP_SECURITY=TLS\n"
        "NOTIFY_SMTP_USER=notify\n"
        'NOTIFY_SMTP_PASSWORD="p#ss word"\n'
        "NOTIFY_FROM=Acme <support@acme.example>\n"
        "NOTIFY_LEDGER=postgresql://notify@db/ledger\n"
        "NOTIFY_RATE=2.5\n"
        "NOTIFY_CONNECTIONS=8\n"
        "NOTIFY_RETURN_PATH=bounces@acme.example\n"
        "NOTIFY_RESEND_SCHEDULE=30m, 2h\n"
        "NOTIFY_IMAP_HOST=imap.acme.example\n"
        "NOTIFY_IMAP_FOLDER=Bounces\n",
    )
    settings = load(workspace)
    assert settings.smtp_host == "smtp.acme.example"
    assert (settings.smtp_port, settings.smtp_security) == (2525, "tls")
    assert (settings.smtp_user, settings.smtp_password) == ("notify", "p#ss word")
    assert settings.default_from == "Acme <support@acme.example>"
    assert settings.ledger == "postgresql://notify@db/ledger"
    assert (settings.rate, settings.connections) == (2.5, 8)
    assert settings.return_path == "bounces@acme.example"
    assert settings.resend_schedule == (1800.0, 2 * HOUR)
    assert (settings.imap_host, settings.imap_folder) == ("imap.acme.example", "Bounces")


def test_the_real_environment_wins_over_the_env_file(workspace: WorkspaceFactory) -> None:
    workspace.env(smtp_host="from-dotenv.example", smtp_user="dotenv-user", rate="1")
    settings = load(workspace, NOTIFY_SMTP_HOST="from-environment.example", NOTIFY_RATE="9")
    assert settings.smtp_host == "from-environment.example"
    assert settings.rate == 9.0
    assert settings.smtp_user == "dotenv-user"  # what the environment does not set still counts


def test_a_bad_env_file_value_is_forgiven_when_the_environment_overrides_it(
    workspace: WorkspaceFactory,
) -> None:
    workspace.env(smtp_port="not-a-port")
    assert load(workspace, NOTIFY_SMTP_PORT="25").smtp_port == 25


@pytest.mark.parametrize(("security", "port"), [("starttls", 587), ("tls", 465), ("none", 25)])
def test_the_default_port_follows_the_security(
    workspace: WorkspaceFactory, security: str, port: int
) -> None:
    assert load(workspace, NOTIFY_SMTP_SECURITY=security).smtp_port == port
    assert load(workspace, NOTIFY_SMTP_SECURITY=security, NOTIFY_SMTP_PORT="2525").smtp_port == 2525


def test_blank_values_mean_unset(workspace: WorkspaceFactory) -> None:
    settings = load(workspace, NOTIFY_SMTP_HOST="  ", NOTIFY_SMTP_PORT=" ", NOTIFY_RATE="")
    assert (settings.smtp_host, settings.smtp_port, settings.rate) == (None, 587, None)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "NOTIFY_SMTP_PORT",
            "smtp",
            "NOTIFY_SMTP_PORT='smtp' must be a whole number from 1 to 65535; fix .env",
        ),
        (
            "NOTIFY_SMTP_PORT",
            "0",
            "NOTIFY_SMTP_PORT='0' must be a whole number from 1 to 65535; fix .env",
        ),
        (
            "NOTIFY_SMTP_PORT",
            "65536",
            "NOTIFY_SMTP_PORT='65536' must be a whole number from 1 to 65535; fix .env",
        ),
        (
            "NOTIFY_SMTP_PORT",
            "-25",
            "NOTIFY_SMTP_PORT='-25' must be a whole number from 1 to 65535; fix .env",
        ),
        (
            "NOTIFY_SMTP_PORT",
            "²",
            "NOTIFY_SMTP_PORT='²' must be a whole number from 1 to 65535; fix .env",
        ),
        (
            "NOTIFY_IMAP_PORT",
            "993.0",
            "NOTIFY_IMAP_PORT='993.0' must be a whole number from 1 to 65535; fix .env",
        ),
        (
            "NOTIFY_CONNECTIONS",
            "0",
            "NOTIFY_CONNECTIONS='0' must be a whole number from 1 to 64; fix .env",
        ),
        (
            "NOTIFY_CONNECTIONS",
            "65",
            "NOTIFY_CONNECTIONS='65' must be a whole number from 1 to 64; fix .env",
        ),
        (
            "NOTIFY_SMTP_SECURITY",
            "SSL",
            "NOTIFY_SMTP_SECURITY='ssl' is not one of starttls, tls, none; fix it in .env",
        ),
        (
            "NOTIFY_RATE",
            "fast",
            "NOTIFY_RATE='fast' must be a positive number of messages per second; fix .env",
        ),
        (
            "NOTIFY_RATE",
            "0",
            "NOTIFY_RATE='0' must be a positive number of messages per second; fix .env",
        ),
        (
            "NOTIFY_RATE",
            "-2",
            "NOTIFY_RATE='-2' must be a positive number of messages per second; fix .env",
        ),
        (
            "NOTIFY_RATE",
            "nan",
            "NOTIFY_RATE='nan' must be a positive number of messages per second; fix .env",
        ),
        (
            "NOTIFY_RESEND_SCHEDULE",
            "1h,soon,4h",
            "NOTIFY_RESEND_SCHEDULE: 'soon' is not a duration like 30m, 4h or 2d; fix it in .env",
        ),
        (
            "NOTIFY_RESEND_SCHEDULE",
            "1h,,4h",
            "NOTIFY_RESEND_SCHEDULE: '' is not a duration like 30m, 4h or 2d; fix it in .env",
        ),
    ],
)
def test_an_invalid_setting_is_one_line_naming_the_variable(
    workspace: WorkspaceFactory, name: str, value: str, message: str
) -> None:
    assert error(workspace, **{name: value}) == message


def test_an_invalid_value_in_the_env_file_is_reported_the_same_way(
    workspace: WorkspaceFactory,
) -> None:
    workspace.env(smtp_port="twenty-five")
    assert error(workspace) == (
        "NOTIFY_SMTP_PORT='twenty-five' must be a whole number from 1 to 65535; fix .env"
    )


def test_passwords_are_kept_but_never_shown(workspace: WorkspaceFactory) -> None:
    workspace.env(smtp_password="hunter2-smtp")
    settings = load(workspace, NOTIFY_IMAP_PASSWORD="hunter2-imap")
    assert settings.smtp_password == "hunter2-smtp"
    assert settings.imap_password == "hunter2-imap"
    for shown in (repr(settings), str(settings), f"{settings}"):
        assert "hunter2" not in shown
    assert "smtp_user" in repr(settings)  # the repr still shows the rest


def test_a_password_is_taken_verbatim(workspace: WorkspaceFactory) -> None:
    assert load(workspace, NOTIFY_SMTP_PASSWORD=" pass word ").smtp_password == " pass word "


def test_settings_are_immutable(workspace: WorkspaceFactory) -> None:
    settings = load(workspace)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.smtp_host = "elsewhere"  # type: ignore[misc]


def test_smtp_where_is_host_and_port() -> None:
    assert Settings(smtp_host="relay.example", smtp_port=2525).smtp_where() == "relay.example:2525"


# --- schedule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1h,4h,12h", (HOUR, 4 * HOUR, 12 * HOUR)),
        (" 30m , 2d,15s ", (1800.0, 172800.0, 15.0)),
        ("1.5h", (5400.0,)),
        ("90 m", (5400.0,)),
    ],
)
def test_parse_schedule_turns_steps_into_seconds(value: str, seconds: tuple[float, ...]) -> None:
    assert parse_schedule(value, "NOTIFY_RESEND_SCHEDULE") == seconds


@pytest.mark.parametrize(
    ("value", "part"), [("4", "4"), ("h", "h"), ("2w", "2w"), ("-1h", "-1h"), ("1h;4h", "1h;4h")]
)
def test_parse_schedule_names_the_bad_step(value: str, part: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_schedule(value, "NOTIFY_RESEND_SCHEDULE")
    assert str(caught.value) == (
        f"NOTIFY_RESEND_SCHEDULE: {part!r} is not a duration like 30m, 4h or 2d; fix it in .env"
    )


# --- properties ----------------------------------------------------------------------


@given(st.text())
@example("²")
@example("٥٨٧")
@example("0x19")
def test_any_port_text_is_a_valid_port_or_a_settings_error(value: str) -> None:
    try:
        port = load_settings(NO_ENV_FILE, {"NOTIFY_SMTP_PORT": value}).smtp_port
    except SettingsError as exc:
        assert "NOTIFY_SMTP_PORT" in str(exc)
        return
    assert 1 <= port <= 65535
    assert value.strip() == "" or int(value.strip()) == port


@given(st.text() | st.floats().map(str))
@example("nan")
@example("inf")
def test_any_rate_text_is_a_positive_rate_or_a_settings_error(value: str) -> None:
    try:
        rate = load_settings(NO_ENV_FILE, {"NOTIFY_RATE": value}).rate
    except SettingsError as exc:
        assert str(exc).startswith("NOTIFY_RATE=")
        return
    assert rate is None or (rate > 0 and not math.isnan(rate))


@given(st.text())
def test_any_schedule_text_is_steps_or_a_settings_error(value: str) -> None:
    try:
        steps = parse_schedule(value, "NOTIFY_RESEND_SCHEDULE")
    except SettingsError:
        return
    assert len(steps) == value.count(",") + 1
    assert all(step >= 0 for step in steps)


# --- a strict .env and known names ---------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'NOTIFY_RATE="2',
            '.env line 4: the value of NOTIFY_RATE opens a quote (") that is never closed; '
            "fix the line",
        ),
        (
            "NOTIFY_SMTP_PASSWORD='s3cret",
            ".env line 4: the value of NOTIFY_SMTP_PASSWORD opens a quote (') that is never "
            "closed; fix the line",
        ),
        (
            'NOTIFY_FROM="Acme" <support@acme.example>',
            ".env line 4: the value of NOTIFY_FROM has text after its closing quote; fix the line",
        ),
        ("smtp host = relay", ".env line 4: not a NAME=value line (nor a # comment); fix the line"),
        ("NOTIFY_RATE", ".env line 4: NOTIFY_RATE has no '='; write NOTIFY_RATE=value"),
    ],
)
def test_a_line_that_does_not_parse_is_an_error_naming_file_and_line(
    workspace: WorkspaceFactory, line: str, message: str
) -> None:
    workspace.write(
        ".env", f"# relay\nNOTIFY_SMTP_HOST=smtp.acme.example\n\n{line}\nNOTIFY_CONNECTIONS=2\n"
    )
    assert error(workspace) == message
    assert "s3cret" not in message  # a value is never echoed: it may be a password


def test_a_quoted_value_may_span_lines(workspace: WorkspaceFactory) -> None:
    workspace.write(".env", 'NOTIFY_SMTP_USER="first\nsecond"\nNOTIFY_RATE=2\n')
    settings = load(workspace)
    assert (settings.smtp_user, settings.rate) == ("first\nsecond", 2.0)


def test_an_unknown_name_in_the_env_file_names_the_closest_setting(
    workspace: WorkspaceFactory,
) -> None:
    workspace.write(".env", "NOTIFY_SMTP_HOST=a\nexport NOTIFY_SMTP_HOTS=b\n")
    assert error(workspace) == (
        ".env line 2: NOTIFY_SMTP_HOTS is not a setting (did you mean NOTIFY_SMTP_HOST?); "
        "fix the line"
    )


def test_a_lower_case_notify_name_in_the_env_file_is_caught_too(
    workspace: WorkspaceFactory,
) -> None:
    workspace.write(".env", "notify_rate=2\n")
    assert error(workspace) == (
        ".env line 1: notify_rate is not a setting (did you mean NOTIFY_RATE?); fix the line"
    )


def test_an_unknown_name_in_the_environment_names_the_closest_setting(
    workspace: WorkspaceFactory,
) -> None:
    assert error(workspace, NOTIFY_CONECTIONS="4") == (
        "NOTIFY_CONECTIONS in the environment is not a setting (did you mean "
        "NOTIFY_CONNECTIONS?); unset it or fix the name"
    )
    assert error(workspace, NOTIFY_COLOUR="blue") == (
        "NOTIFY_COLOUR in the environment is not a setting (the settings are listed in "
        "README.md, Settings); unset it or fix the name"
    )


def test_other_names_are_left_alone(workspace: WorkspaceFactory) -> None:
    workspace.write(".env", "CRM_PASSWORD=x\nNOTIFY_RATE=3\n")
    settings = load(workspace, PATH="/usr/bin", notify_something="x", NOTIFYX="y")
    assert settings.rate == 3.0


def test_every_setting_the_readme_lists_is_known() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    listed = set(re.findall(r"`(NOTIFY_[A-Z_]+[A-Z])`", readme))
    assert listed and listed <= set(KNOWN_SETTINGS)
    assert {"NOTIFY_REPLY_IMAP_HOST", "NOTIFY_DKIM_KEY", "NOTIFY_SMTP_TOKEN_COMMAND"} <= set(
        KNOWN_SETTINGS
    )


def test_a_env_file_that_is_not_utf8_names_the_line(workspace: WorkspaceFactory) -> None:
    workspace.write(".env", "NOTIFY_RATE=2\nNOTIFY_FROM=Zoë <z@x.example>\n".encode("cp1252"))
    assert error(workspace) == ".env line 2: not UTF-8 text; save it as UTF-8"

"""Live databases on loopback (PostgreSQL, MariaDB, SQLite) and the dumps their own tools write.

Server tests skip when the server or tool is missing, and fail instead when CI is set.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
import psycopg
import pymysql
import pytest

from notify.errors import SourceError
from notify.models import ROW_COLUMN, SOURCE_COLUMN, SourceSpec
from notify.sources.load import load_sources
from notify.sources.sql import check_read_only

PG = "postgresql://postgres@127.0.0.1:5432/test"
MARIADB = "mysql://root@127.0.0.1:3306/test"
COLUMNS = ["id", "Customer Name", "email", "amount", "ordered", "created", "incident_id", "note"]
ROWS: list[tuple[Any, ...]] = [
    (1, "Zoë Müller", "zoe@x.de", "49.90", "2024-03-01", "2024-03-01 10:30:00", 42, "ok 🎉"),
    (2, "O'Brien; Pat", None, "12.00", None, None, 42, 'say "hi"\\n, C:\\temp'),
    (3, "Other incident", "o@x.com", "1.00", "2024-01-01", None, 7, None),
    (4, "Multi\nLine", "m@x.com", "-3.50", "2024-02-29", "2024-02-29 00:00:00", 42, "a\tb"),
]
EXPECTED = [
    ["1", "Zoë Müller", "zoe@x.de", "49.90", "2024-03-01", "2024-03-01 10:30:00", "42", "ok 🎉"],
    ["2", "O'Brien; Pat", "", "12.00", "", "", "42", 'say "hi"\\n, C:\\temp'],
    ["4", "Multi\nLine", "m@x.com", "-3.50", "2024-02-29", "2024-02-29 00:00:00", "42", "a\tb"],
]
QUERY = (
    "SELECT * FROM {table} WHERE incident_id = :incident AND note LIKE '%' OR id = 2 ORDER BY id"
)


def load(root: Path, **spec: str) -> pd.DataFrame:
    return load_sources([SourceSpec(**spec)], root=root, incident_id="42", environ={})


def refused(root: Path, environ: dict[str, str] | None = None, **spec: str) -> str:
    with pytest.raises(SourceError) as info:
        load_sources([SourceSpec(**spec)], root=root, incident_id="42", environ=environ or {})
    return str(info.value)


def data(frame: pd.DataFrame) -> list[list[str]]:
    return frame.drop(columns=[ROW_COLUMN, SOURCE_COLUMN]).values.tolist()


def unavailable(what: str) -> NoReturn:
    """A workstation may lack a server or tool: skip. CI must have them: fail."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}, and CI is set", pytrace=False)
    pytest.skip(f"{what}; start or install it (with CI set this fails instead)")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed")
    return path


def table_name() -> str:
    return f"notify_test_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pg_table() -> Iterator[str]:
    """A uniquely named PostgreSQL table holding ROWS, dropped afterwards."""
    try:
        connection = psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3, autocommit=True
        )
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL is not reachable on 127.0.0.1:5432 ({exc})")
    table = table_name()
    with connection:
        connection.execute(
            f'CREATE TABLE {table} (id serial PRIMARY KEY, "Customer Name" varchar(100) NOT NULL, '
            "email text, amount numeric(10,2), ordered date, created timestamp, "
            "incident_id integer, note text)"
        )
        with connection.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {table} VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", ROWS)
        try:
            yield table
        finally:
            connection.execute(f"DROP TABLE {table}")


@pytest.fixture
def mariadb_table() -> Iterator[str]:
    """A uniquely named MariaDB table holding ROWS, dropped afterwards."""
    try:
        connection = pymysql.connect(
            host="127.0.0.1", port=3306, user="root", database="test", connect_timeout=3,
            charset="utf8mb4", autocommit=True,
        )  # fmt: skip
    except pymysql.err.OperationalError as exc:
        unavailable(f"MariaDB is not reachable on 127.0.0.1:3306 ({exc})")
    table = table_name()
    with connection, connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {table} (id int AUTO_INCREMENT PRIMARY KEY, "
            "`Customer Name` varchar(100) NOT NULL, email text, amount decimal(10,2), "
            "ordered date, created datetime, incident_id int, note text, KEY by_email (email(20))"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
        cursor.executemany(f"INSERT INTO {table} VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", ROWS)
        try:
            yield table
        finally:
            cursor.execute(f"DROP TABLE {table}")


def dump(tmp_path: Path, name: str, command: list[str]) -> str:
    """Run a dump tool into data/<name> and return that path, relative to the workspace."""
    (tmp_path / "data").mkdir(exist_ok=True)
    with (tmp_path / "data" / name).open("wb") as out:
        subprocess.run(command, stdout=out, check=True)
    return f"data/{name}"


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_rows_come_back_as_text_numbered_from_one(tmp_path: Path, pg_table: str) -> None:
    url = "postgresql://postgres:secret@127.0.0.1:5432/test"  # trust auth takes any password
    frame = load(tmp_path, url=url, query=QUERY.format(table=pg_table))
    assert list(frame.columns) == [*COLUMNS, ROW_COLUMN, SOURCE_COLUMN]
    assert data(frame) == EXPECTED
    assert frame[ROW_COLUMN].tolist() == [1, 2, 3]
    assert set(frame[SOURCE_COLUMN]) == {"postgresql://postgres:***@127.0.0.1:5432/test"}


@pytest.mark.postgres
def test_postgres_url_and_query_file_from_the_workspace(tmp_path: Path, pg_table: str) -> None:
    (tmp_path / "queries").mkdir()
    (tmp_path / "queries" / "affected.sql").write_text(
        f"-- who was charged twice\n{QUERY.format(table=pg_table)};\n"
    )
    frame = load_sources(
        [SourceSpec(url="postgres://postgres:${PG_PASSWORD}@127.0.0.1/${PG_DB}",
                    query_file="queries/affected.sql")],
        root=tmp_path,
        incident_id="42",
        environ={"PG_PASSWORD": "p@ss/w:rd", "PG_DB": "test"},
    )  # fmt: skip
    assert data(frame) == EXPECTED
    assert frame[SOURCE_COLUMN].iloc[0] == "postgres://postgres:***@127.0.0.1/test"


@pytest.mark.postgres
def test_postgres_large_results_are_read_in_batches(tmp_path: Path, pg_table: str) -> None:
    frame = load(tmp_path, url=PG, query="SELECT n, 'u' || n || '@x.com' AS email "
                 "FROM generate_series(1, 25000) AS n ORDER BY n")  # fmt: skip
    assert len(frame) == 25_000
    assert frame.iloc[-1].tolist() == ["25000", "u25000@x.com", 25_000, PG]


@pytest.mark.postgres
def test_postgres_errors_are_one_line_with_the_drivers_words(tmp_path: Path, pg_table: str) -> None:
    assert refused(tmp_path, url=PG, query=f"SELECT * FROMM {pg_table}") == (
        f'{PG}: the query failed: syntax error at or near "FROMM"; fix [source] query '
        "(only :incident can be bound)"
    )
    assert refused(tmp_path, url=PG, query=f"SELECT nope FROM {pg_table}") == (
        f'{PG}: the query failed: column "nope" does not exist; fix [source] query '
        "(only :incident can be bound)"
    )
    assert refused(tmp_path, url=PG, query="SELECT :other") == (
        f"{PG}: the query failed: A value is required for bind parameter 'other'; fix "
        "[source] query (only :incident can be bound)"
    )
    assert refused(tmp_path, url=PG.replace("/test", "/notify_nope"), query="SELECT 1") == (
        "postgresql://postgres@127.0.0.1:5432/notify_nope: cannot connect: connection failed: "
        'connection to server at "127.0.0.1", port 5432 failed: FATAL: database "notify_nope" '
        "does not exist; check the host, port, user, password and database in [source] url"
    )


@pytest.mark.postgres
def test_a_join_giving_two_columns_one_name_is_refused(tmp_path: Path, pg_table: str) -> None:
    query = f"SELECT a.id, a.email, b.email FROM {pg_table} a JOIN {pg_table} b ON a.id = b.id"
    assert refused(tmp_path, url=PG, query=query) == (
        f'{PG}: columns 2 and 3 are both named "email"; give one another name with AS in '
        "[source] query"
    )


@pytest.mark.postgres
def test_postgres_session_is_read_only_even_when_a_select_has_side_effects(
    tmp_path: Path, pg_table: str
) -> None:
    assert refused(tmp_path, url=PG, query=f"SELECT nextval('{pg_table}_id_seq')") == (
        f"{PG}: the query failed: cannot execute nextval() in a read-only transaction; fix "
        "[source] query (only :incident can be bound)"
    )


@pytest.mark.postgres
@pytest.mark.parametrize("options", [["--inserts"], ["--column-inserts"], []])
def test_pg_dump_gives_the_rows_the_live_database_gives(
    tmp_path: Path, pg_table: str, options: list[str]
) -> None:
    query = QUERY.format(table=pg_table)
    live = load(tmp_path, url=PG, query=query)
    command = [tool("pg_dump"), "-h", "127.0.0.1", "-U", "postgres", "-t", pg_table, *options]
    path = dump(tmp_path, "pg.sql", [*command, "test"])
    dumped = load(tmp_path, path=path, query=query)
    assert data(dumped) == data(live) == EXPECTED
    assert dumped[ROW_COLUMN].tolist() == [1, 2, 3]
    assert set(dumped[SOURCE_COLUMN]) == {"data/pg.sql"}


# --- MariaDB / MySQL --------------------------------------------------------------------------


@pytest.mark.mariadb
def test_mariadb_rows_come_back_as_text(tmp_path: Path, mariadb_table: str) -> None:
    frame = load(tmp_path, url=MARIADB, query=QUERY.format(table=mariadb_table))
    assert list(frame.columns) == [*COLUMNS, ROW_COLUMN, SOURCE_COLUMN]
    assert data(frame) == EXPECTED
    assert frame[ROW_COLUMN].tolist() == [1, 2, 3]


@pytest.mark.mariadb
def test_mariadb_errors_are_one_line(tmp_path: Path, mariadb_table: str) -> None:
    assert refused(tmp_path, url="mysql://root:wrong@127.0.0.1:3306/test", query="SELECT 1") == (
        "mysql://root:***@127.0.0.1:3306/test: cannot connect: Access denied for user "
        "'root'@'127.0.0.1' (using password: YES) (error 1045); check the host, port, user, "
        "password and database in [source] url"
    )
    assert refused(tmp_path, url=MARIADB, query=f"SELECT * FROMM {mariadb_table}") == (
        f"{MARIADB}: the query failed: You have an error in your SQL syntax; check the manual "
        "that corresponds to your MariaDB server version for the right syntax to use near "
        f"'FROMM {mariadb_table}' at line 1 (error 1064); fix [source] query "
        "(only :incident can be bound)"
    )


@pytest.mark.mariadb
def test_mysqldump_gives_the_rows_the_live_database_gives(
    tmp_path: Path, mariadb_table: str
) -> None:
    query = QUERY.format(table=mariadb_table)
    live = load(tmp_path, url=MARIADB, query=query)
    command = [tool("mysqldump"), "-h", "127.0.0.1", "-u", "root", "test", mariadb_table]
    dumped = load(tmp_path, path=dump(tmp_path, "my.sql", command), query=query)
    assert data(dumped) == data(live) == EXPECTED


# --- SQLite -----------------------------------------------------------------------------------


@pytest.fixture
def crm_db(tmp_path: Path) -> Path:
    """data/crm.db with ROWS in a table named customers."""
    (tmp_path / "data").mkdir(exist_ok=True)
    path = tmp_path / "data" / "crm.db"
    with sqlite3.connect(path) as connection:
        connection.execute(
            'CREATE TABLE customers (id INTEGER PRIMARY KEY, "Customer Name" TEXT NOT NULL, '
            "email TEXT, amount TEXT, ordered TEXT, created TEXT, incident_id INTEGER, note TEXT)"
        )
        connection.executemany("INSERT INTO customers VALUES (?,?,?,?,?,?,?,?)", ROWS)
    connection.close()
    return path


def test_sqlite_file_by_url_relative_to_the_workspace(tmp_path: Path, crm_db: Path) -> None:
    query = QUERY.format(table="customers")
    frame = load(tmp_path, url="sqlite:///data/crm.db", query=query)
    assert data(frame) == EXPECTED
    assert set(frame[SOURCE_COLUMN]) == {"sqlite:///data/crm.db"}
    assert data(load(tmp_path, path="data/crm.db", query=query)) == EXPECTED


def test_sqlite_dump_gives_the_rows_of_its_database(tmp_path: Path, crm_db: Path) -> None:
    path = dump(tmp_path, "crm.sql", [tool("sqlite3"), str(crm_db), ".dump"])
    assert data(load(tmp_path, path=path, query=QUERY.format(table="customers"))) == EXPECTED


def test_sqlite_errors(tmp_path: Path, crm_db: Path) -> None:
    assert refused(tmp_path, url="sqlite:///data/none.db", query="SELECT 1") == (
        "sqlite:///data/none.db: data/none.db not found; check the path, which is relative to "
        "the workspace"
    )
    assert refused(tmp_path, url="sqlite:///data/crm.db", query="SELECT nope FROM customers") == (
        "sqlite:///data/crm.db: the query failed: no such column: nope; fix [source] query"
    )
    assert refused(tmp_path, url="sqlite:///data/crm.db", query="SELECT 1 WHERE 0") == (
        "sqlite:///data/crm.db: the query returned no rows; check the WHERE clause and the "
        "incident id"
    )
    assert refused(tmp_path, path="data/crm.db") == (
        'data/crm.db is a database; add query = "SELECT ... FROM <table>" to [source] '
        "(tables: customers)"
    )
    assert refused(tmp_path, url="sqlite:///data/crm.db", query_file="q.sql") == (
        "q.sql not found; write the query there or fix [source] query_file"
    )
    assert refused(
        tmp_path, path="data/crm.db", query="SELECT email, id AS Email FROM customers"
    ) == (
        'data/crm.db: columns 1 and 2 are named "email" and "Email", which notify cannot tell '
        "apart; give one another name with AS in [source] query"
    )


# --- no server needed: URLs and the read-only check -------------------------------------------


def test_a_missing_environment_variable_is_named(tmp_path: Path) -> None:
    assert refused(tmp_path, url="postgresql://crm:${CRM_PASSWORD}@db/crm", query="SELECT 1") == (
        "[source] url uses ${CRM_PASSWORD}, which is not set; put CRM_PASSWORD=... in .env or "
        "the environment"
    )


def test_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    message = refused(tmp_path, url="postgresql://crm:secret@127.0.0.1:1/crm", query="SELECT 1")
    assert message.startswith(
        "postgresql://crm:***@127.0.0.1:1/crm: cannot connect: connection failed: connection "
        'to server at "127.0.0.1", port 1 failed: Connection refused'
    )
    assert message.endswith("; check the host, port, user, password and database in [source] url")
    assert "\n" not in message and "secret" not in message
    message = refused(tmp_path, url="mysql://root:secret@127.0.0.1:1/crm", query="SELECT 1")
    assert message == (
        "mysql://root:***@127.0.0.1:1/crm: cannot connect: Can't connect to MySQL server on "
        "'127.0.0.1' ([Errno 111] Connection refused) (error 2003); check the host, port, user, "
        "password and database in [source] url"
    )


def test_a_writing_query_is_refused_before_connecting(tmp_path: Path) -> None:
    """The URL points nowhere: the refusal can only come from the check, before any connect."""
    url = "postgresql://crm:secret@127.0.0.1:1/crm"
    assert refused(tmp_path, url=url, query="DELETE FROM customers") == (
        "[source] query must be a SELECT (or WITH ... SELECT), not DELETE; notify only reads, "
        "so write a SELECT"
    )
    (tmp_path / "broken.sql").write_text("this is not a dump (")
    assert refused(tmp_path, path="broken.sql", query="SELECT 1; DROP TABLE x") == (
        "[source] query holds more than one statement; keep a single SELECT"
    )


def test_unknown_driver_and_bad_url(tmp_path: Path) -> None:
    assert refused(tmp_path, url="oracle://u:pw@db/x", query="SELECT 1").startswith(
        "oracle://u:***@db/x: no database driver for oracle"
    )
    assert refused(tmp_path, url="not a url", query="SELECT 1") == (
        '[source] url "not a url" is not a database URL; write it like '
        "postgresql://user@host/database"
    )


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM t WHERE incident = :incident",
        "select 1;",
        "  -- the affected\n  SELECT 'delete; drop' AS words, \"update\" FROM t;  ",
        "/* drop */ WITH a AS (SELECT 1) SELECT replace(x, 'a', 'b') FROM a",
        "(SELECT 1) UNION (SELECT 2)",
        "SELECT $$ drop table t; $$",
        "SELECT updated_at, created_by FROM t",
    ],
)
def test_read_only_check_accepts_plain_selects(query: str) -> None:
    check_read_only(query, where="[source] query")


@pytest.mark.parametrize(
    "query, found",
    [
        ("UPDATE t SET a = 1", "must be a SELECT (or WITH ... SELECT), not UPDATE"),
        ("WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone", "contains DELETE"),
        ("SELECT * INTO copy FROM t", "contains INTO"),
        ("SELECT * FROM t FOR UPDATE", "contains UPDATE"),
        ("SELECT 1; DROP TABLE t", "holds more than one statement"),
        ("-- nothing\n", "is empty"),
        ("PRAGMA writable_schema = 1", "not PRAGMA"),
    ],
)
def test_read_only_check_refuses_anything_that_writes(query: str, found: str) -> None:
    with pytest.raises(SourceError, match=re.escape(found)):
        check_read_only(query, where="[source] query")


def test_mysql_backslash_escapes_cannot_hide_a_second_statement() -> None:
    check_read_only(r"SELECT 'it\'s; fine' FROM t", where="q", backslash_escapes=True)
    hidden = r"SELECT 'a\'' ; DROP TABLE t; -- '"  # in MySQL, 'a\'' is one string
    check_read_only(hidden, where="q")  # what standard SQL sees: one statement, two strings
    with pytest.raises(SourceError, match="more than one statement"):
        check_read_only(hidden, where="q", backslash_escapes=True)

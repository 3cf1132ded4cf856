"""Read an export straight from a database, strictly read-only, with errors an operator can act on.

The query is checked before anything connects: one SELECT (or WITH ... SELECT), nothing that
writes. The session is then opened read-only as well (PostgreSQL, MySQL/MariaDB, SQLite), so a
side effect the check cannot see is refused by the server itself.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import sqlalchemy
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError, StatementError
from sqlalchemy.pool import NullPool

from notify.errors import SourceError
from notify.sources.cells import cell_text, header_names, text_frame

_BATCH = 10_000
_RENAME = "give one another name with AS in [source] query"
_TIMEOUT = 10  # seconds to wait for a server that does not answer
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
_READ_ONLY_ARGS: dict[str, dict[str, Any]] = {
    "postgresql": {"options": "-c default_transaction_read_only=on"},
    "mysql": {"init_command": "SET SESSION TRANSACTION READ ONLY"},
    "mariadb": {"init_command": "SET SESSION TRANSACTION READ ONLY"},
}
_REFUSED = frozenset(  # words that write, lock or reach outside a plain SELECT
    {"INSERT", "UPDATE", "DELETE", "MERGE", "INTO", "DROP", "ALTER", "CREATE", "TRUNCATE"}
    | {"GRANT", "REVOKE", "COPY", "CALL", "EXEC", "EXECUTE", "LOCK", "ATTACH", "DETACH"}
    | {"PRAGMA", "VACUUM"}
)
_QUOTED = r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|`(?:[^`]|``)*`|\$(?P<tag>\w*)\$.*?\$(?P=tag)\$"""
_QUOTED_BACKSLASH = r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`(?:[^`]|``)*`"""
_TOKENS = r"(?P<skip>{quoted}|--[^\n]*|/\*.*?\*/)|(?P<word>[A-Za-z_][\w$]*)|(?P<mark>[;(])"
_STANDARD_TOKENS = re.compile(_TOKENS.format(quoted=_QUOTED), re.S)
_MYSQL_TOKENS = re.compile(_TOKENS.format(quoted=_QUOTED_BACKSLASH), re.S)


def check_read_only(query: str, *, where: str, backslash_escapes: bool = False) -> None:
    """Refuse anything but a single SELECT before a connection is even tried: notify only reads."""
    pattern = _MYSQL_TOKENS if backslash_escapes else _STANDARD_TOKENS
    tokens = [m["word"] or m["mark"] for m in pattern.finditer(query) if not m["skip"]]
    while tokens and tokens[-1] == ";":
        tokens.pop()
    if not tokens:
        raise SourceError(f"{where} is empty; write the SELECT that lists the affected rows")
    if ";" in tokens:
        raise SourceError(f"{where} holds more than one statement; keep a single SELECT")
    first = next((t for t in tokens if t != "("), "").upper()
    if first not in {"SELECT", "WITH"}:
        raise SourceError(
            f"{where} must be a SELECT (or WITH ... SELECT), not {first}; "
            "notify only reads, so write a SELECT"
        )
    refused = next((t.upper() for t in tokens if t.upper() in _REFUSED), None)
    if refused:
        raise SourceError(
            f"{where} contains {refused}; notify only reads, so write a plain SELECT without it"
        )


def resolve_url(raw: str, environ: Mapping[str, str]) -> str:
    """Fill ${NAME} from `environ` (.env and the environment); a value inside a URL is
    percent-encoded to stay intact."""
    if (whole := _PLACEHOLDER.fullmatch(raw.strip())) is not None:
        return _variable(whole[1], environ)
    return _PLACEHOLDER.sub(lambda m: quote(_variable(m[1], environ), safe=""), raw)


def _variable(name: str, environ: Mapping[str, str]) -> str:
    if name not in environ:
        raise SourceError(
            f"[source] url uses ${{{name}}}, which is not set; put {name}=... in .env "
            "or the environment"
        )
    return environ[name]


def masked(url: str) -> str:
    """The URL as it may be shown: the password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def read_database(
    raw_url: str, query: str, *, root: Path, incident_id: str, environ: Mapping[str, str]
) -> pd.DataFrame:
    """Run the query on a live database and return its rows as text, numbered from 1."""
    text_url = resolve_url(raw_url, environ)
    shown = masked(text_url)
    try:
        url = make_url(text_url)
    except ArgumentError as exc:
        raise SourceError(
            f'[source] url "{shown}" is not a database URL; write it like '
            "postgresql://user@host/database",
            path=shown,
        ) from exc
    backend = url.get_backend_name()
    mysql = backend in {"mysql", "mariadb"}
    check_read_only(query, where="[source] query", backslash_escapes=mysql)
    if backend == "sqlite":
        connection = open_sqlite(_sqlite_path(url, root, shown))
        try:
            return query_sqlite(connection, query, incident_id=incident_id, source=shown)
        finally:
            connection.close()
    engine = _engine(url, shown)
    try:
        return _run(engine, query, incident_id=incident_id, shown=shown)
    finally:
        engine.dispose()


def _sqlite_path(url: URL, root: Path, shown: str) -> Path:
    if not url.database or url.database == ":memory:":
        raise SourceError(
            f"[source] url {shown} names no SQLite file; write it like sqlite:///data/crm.db"
        )
    path = Path(url.database)
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise SourceError(
            f"{shown}: {url.database} not found; check the path, which is relative to the "
            "workspace",
            path=shown,
        )
    return path


def open_sqlite(path: Path) -> sqlite3.Connection:
    """Open a SQLite file so that nothing, not even a query's side effect, can change it."""
    return sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)


def query_sqlite(
    connection: sqlite3.Connection, query: str, *, incident_id: str, source: str
) -> pd.DataFrame:
    """Run a checked query on SQLite (a file or a loaded dump) with :incident bound."""
    try:
        cursor = connection.execute(query, {"incident": incident_id})
        columns = header_names((d[0] for d in cursor.description or ()), where=source, fix=_RENAME)
        rows: list[list[str]] = []
        while batch := cursor.fetchmany(_BATCH):
            rows.extend(_texts(batch))
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB":
            raise SourceError(
                f"{source} is not a SQLite database; check [source] path or url", path=source
            ) from exc
        raise SourceError(
            f"{source}: the query failed: {exc}; fix [source] query", path=source
        ) from exc
    return _result(columns, rows, source)


def _engine(url: URL, shown: str) -> Engine:
    if "+" not in url.drivername:
        url = url.set(drivername=_DRIVERS.get(url.drivername, url.drivername))
    backend = url.get_backend_name()
    connect_args = {**_READ_ONLY_ARGS.get(backend, {}), "connect_timeout": _TIMEOUT}
    try:
        return sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except (ArgumentError, ImportError) as exc:
        raise SourceError(
            f"{shown}: no database driver for {url.drivername} ({exc}); use a postgresql://, "
            "mysql://, mariadb:// or sqlite:/// URL",
            path=shown,
        ) from exc


def _run(engine: Engine, query: str, *, incident_id: str, shown: str) -> pd.DataFrame:
    try:
        connection = engine.connect()
    except DBAPIError as exc:
        raise SourceError(
            f"{shown}: cannot connect: {_driver_message(exc)}; check the host, port, user, "
            "password and database in [source] url",
            path=shown,
        ) from exc
    with connection:
        try:
            result = connection.execution_options(stream_results=True, yield_per=_BATCH).execute(
                sqlalchemy.text(query), {"incident": incident_id}
            )
            columns = header_names(result.keys(), where=shown, fix=_RENAME)
            rows = [row for batch in result.partitions() for row in _texts(batch)]
        except StatementError as exc:
            raise SourceError(
                f"{shown}: the query failed: {_driver_message(exc)}; fix [source] query "
                "(only :incident can be bound)",
                path=shown,
            ) from exc
    return _result(columns, rows, shown)


def _driver_message(exc: StatementError) -> str:
    """The driver's own words, on one line; PostgreSQL's primary message drops its caret art."""
    orig = exc.orig or exc
    primary = getattr(getattr(orig, "diag", None), "message_primary", None)
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    if primary:
        message = str(primary)
    elif len(args) == 2 and isinstance(args[0], int):
        message = f"{args[1]} (error {args[0]})"
    elif isinstance(orig, SQLAlchemyError) and args:
        message = str(args[0])  # without SQLAlchemy's "Background on this error" link
    else:
        message = str(orig)
    return " ".join(message.split())


def _texts(batch: Iterable[Sequence[Any]]) -> Iterable[list[str]]:
    return ([v if v.__class__ is str else cell_text(v) for v in row] for row in batch)


def _result(columns: list[str], rows: list[list[str]], source: str) -> pd.DataFrame:
    if not rows:
        raise SourceError(
            f"{source}: the query returned no rows; check the WHERE clause and the incident id",
            path=source,
        )
    return text_frame(columns, rows, range(1, len(rows) + 1), source)

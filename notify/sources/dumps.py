"""Load a SQL dump into an in-memory SQLite database, so the manifest's query can run on it.

Dumps come from ``sqlite3 .dump`` (run as written), ``pg_dump`` (--inserts, --column-inserts or
the default COPY blocks) and ``mysqldump``/``mariadb-dump``. Only tables and their rows are kept;
everything else a dump carries (SET, ownership, sequences, keys, locks, conditional comments) is
skipped. Column types keep SQLite's comparisons right (integers stay integers), and decimals are
stored as the text the dump wrote, so 49.90 is not turned into 49.9.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from notify.errors import SourceError

# One whole statement, up to its ";", skipping what may hide a ";": quotes and comments.
_SPLIT = {
    "mysql": re.compile(
        r"""(?: '(?:[^'\\]|\\.)*+'          # 'string' with \' escapes
              | "(?:[^"\\]|\\.)*+"          # "string"
              | `[^`]*+`                    # `identifier`
              | --[^\n]*+ | \#[^\n]*+       # line comments
              | /\*.*?\*/                   # block and /*!40101 conditional */ comments
              | [^;'"`/\#-]++ | [/\#-]      # everything else
            )*+ ;""",
        re.S | re.X,
    ),
    "standard": re.compile(
        r"""(?: '(?:[^']|'')*+'             # 'string' with '' escapes
              | "(?:[^"]|"")*+"             # "identifier"
              | --[^\n]*+ | /\*.*?\*/       # comments
              | ^\\[^\n]*+                  # psql command line (\restrict, \connect)
              | \$(?P<tag>\w*)\$.*?\$(?P=tag)\$   # $$ function body $$
              | [^;'"/\\$-]++ | [/\\$-]     # everything else
            )*+ ;""",
        re.S | re.M | re.X,
    ),
}
_LEADING = re.compile(r"(?:\s++|--[^\n]*+|\#[^\n]*+|/\*.*?\*/|^\\[^\n]*+)*+", re.S | re.M)
# The tokens a table or row statement needs rewritten for SQLite.
_TOKEN = {
    "mysql": re.compile(
        r"""(?P<string> '(?:[^'\\]|\\.|'')*+' | "(?:[^"\\]|\\.|"")*+" )
          | (?P<ident> `(?:[^`]|``)*+` )
          | (?P<comment> --[^\n]*+ | \#[^\n]*+ | /\*.*?\*/ )
          | (?P<introducer> \b_(?:binary|utf8mb4|utf8mb3|utf8|latin1)\b )   # _binary 'x'
          | (?P<number> (?<![\w.'])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.']) )""",
        re.S | re.X,
    ),
    "postgres": re.compile(
        r"""(?P<string> '(?:[^']|'')*+' )
          | (?P<ident> "(?:[^"]|"")*+" )
          | (?P<comment> --[^\n]*+ | /\*.*?\*/ )
          | (?P<number> (?<![\w.'"])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.'"]) )""",
        re.S | re.X,
    ),
}
_NAME = r"""(?:"(?:[^"]|"")+"|[\w$]+)(?:\s*\.\s*(?:"(?:[^"]|"")+"|[\w$]+))*"""
_CREATE = re.compile(
    rf"CREATE\s+(?:(?:GLOBAL\s+|LOCAL\s+)?TEMP(?:ORARY)?\s+|UNLOGGED\s+)?TABLE\s+"
    rf"(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>{_NAME})\s*\(",
    re.I,
)
_INSERT = re.compile(
    rf"(?P<verb>INSERT(?:\s+IGNORE)?|REPLACE)\s+INTO\s+(?P<name>{_NAME})"
    r"(?:\s+OVERRIDING\s+(?:SYSTEM|USER)\s+VALUE)?",
    re.I,
)
_COPY = re.compile(rf"COPY\s+(?P<name>{_NAME})\s*(?:\((?P<columns>[^)]*)\))?\s*FROM\s+stdin", re.I)
_COPY_END = re.compile(r"^\\\.\r?$", re.M)
_SQLITE_SKIP = {"BEGIN", "COMMIT", "END", "ROLLBACK", "PRAGMA", "SAVEPOINT", "RELEASE"}
# Table constraints (not columns) start with these words; MySQL's key words are never a bare
# column name in mysqldump (which quotes every name), but "key" is a fine PostgreSQL column.
_CONSTRAINTS = {"CONSTRAINT", "PRIMARY", "UNIQUE", "FOREIGN", "CHECK", "EXCLUDE", "LIKE"}
_NOT_COLUMNS = {
    "postgres": _CONSTRAINTS,
    "mysql": _CONSTRAINTS | {"KEY", "INDEX", "FULLTEXT", "SPATIAL", "PERIOD"},
}
_INTEGER = {"int", "integer", "int2", "int4", "int8", "smallint", "bigint", "tinyint"}
_INTEGER |= {"mediumint", "serial", "bigserial", "smallserial"}
_REAL = {"real", "float", "float4", "float8", "double"}
_BLOB = {"bytea", "blob", "tinyblob", "mediumblob", "longblob", "binary", "varbinary"}
_MYSQL_ESCAPES = {"0": "", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}
_COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_COPY_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.S)


@dataclass(frozen=True)
class _Statement:
    """One statement of the dump, with the line an error should point at."""

    line: int  # where the statement's first word is
    sql: str  # without leading comments
    copy_rows: list[tuple[int, str]] | None = None  # COPY ... FROM stdin: (line, data) each


def load_dump(path: Path, *, name: str) -> sqlite3.Connection:
    """A fresh in-memory SQLite database holding the dump's tables and rows."""
    text = _decode(path.read_bytes(), name)
    flavour = _flavour(text[:16384])
    connection = sqlite3.connect(":memory:", isolation_level=None)
    connection.execute("BEGIN")
    for statement in _statements(text, flavour, name):
        try:
            if statement.copy_rows is not None:
                _copy(connection, statement, name)
            elif (sql := _translate(statement.sql, flavour)) is not None:
                connection.execute(sql)
        except sqlite3.Error as exc:
            connection.close()
            raise _bad(name, statement.line, str(exc)) from exc
    connection.execute("COMMIT")
    return connection


def dump_tables(connection: sqlite3.Connection) -> list[str]:
    """Table names, for telling the operator what a query can read."""
    rows = connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name"
    )
    return [row[0] for row in rows]


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SourceError(
            f"{name}: byte 0x{data[exc.start]:02X} at offset {exc.start} (line {line}) is not "
            "UTF-8; dump the database again with UTF-8 output",
            path=name,
            row=line,
        ) from exc


def _flavour(head: str) -> str:
    if re.search(r"MySQL dump|MariaDB dump|/\*!\d{5}|/\*M!|ENGINE=", head):
        return "mysql"
    if re.search(r"PostgreSQL database dump|pg_catalog\.|standard_conforming_strings", head):
        return "postgres"
    return "sqlite"


def _bad(name: str, line: int, reason: str) -> SourceError:
    return SourceError(
        f"{name} line {line}: {reason}; the dump is damaged or not one notify reads "
        "(sqlite3 .dump, pg_dump, mysqldump); dump it again",
        path=name,
        row=line,
    )


def _statements(text: str, flavour: str, name: str) -> Iterator[_Statement]:
    """Split at semicolons outside quotes and comments, noting the line each statement starts."""
    splitter = _SPLIT["mysql" if flavour == "mysql" else "standard"]
    position, line = 0, 1
    while (match := splitter.match(text, position)) is not None:
        lead = _after_comments(text, position)
        start = line + text.count("\n", position, lead)
        line += text.count("\n", position, match.end())
        position = match.end()
        sql = text[lead:position]
        if not sql.strip(" \t\r\n;") or _transaction_control(sql, flavour):
            continue
        if flavour == "postgres" and _COPY.match(sql):
            rows, position, line = _copy_block(text, position, line, name)
            yield _Statement(start, sql, rows)
        else:
            yield _Statement(start, sql)
    lead = _after_comments(text, position)
    if lead < len(text):
        where = line + text.count("\n", position, lead)
        raise _bad(name, where, "the dump ends inside a statement (is it cut short?)")


def _after_comments(text: str, position: int) -> int:
    match = _LEADING.match(text, position)
    return position if match is None else match.end()


def _transaction_control(sql: str, flavour: str) -> bool:
    """sqlite3 .dump's own BEGIN/COMMIT/PRAGMA: the loader manages its one transaction."""
    return flavour == "sqlite" and sql.split(None, 1)[0].rstrip(";").upper() in _SQLITE_SKIP


def _copy_block(
    text: str, position: int, line: int, name: str
) -> tuple[list[tuple[int, str]], int, int]:
    """The data lines after COPY ... FROM stdin; up to the \\. line, and where reading resumes."""
    end = _COPY_END.search(text, position)
    if end is None:
        raise _bad(name, line, "COPY data never ends with a \\. line")
    data = text[position : end.start()].removeprefix("\r").removeprefix("\n")
    lines = data.removesuffix("\n").split("\n") if data else []
    rows = [(line + 1 + i, row.removesuffix("\r")) for i, row in enumerate(lines)]
    return rows, end.end(), line + text.count("\n", position, end.end())


def _translate(sql: str, flavour: str) -> str | None:
    """The SQLite form of a statement that holds tables or rows; None for everything else."""
    if flavour == "sqlite":
        return sql
    first = sql.split(None, 1)[0].upper()
    if first == "CREATE":
        sql = _normalise(sql, flavour, quote_numbers=False)
        create = _CREATE.match(sql)
        return None if create is None else _create_table(sql, create, flavour)
    if first not in {"INSERT", "REPLACE"}:
        return None
    sql = _normalise(sql, flavour, quote_numbers=True)
    insert = _INSERT.match(sql)
    if insert is None:
        return None
    verb = "INSERT OR IGNORE" if "IGNORE" in insert["verb"].upper() else insert["verb"]
    return f"{verb} INTO {_table(insert['name'])}{sql[insert.end() :]}"


def _normalise(sql: str, flavour: str, *, quote_numbers: bool) -> str:
    """Standard quoting, no comments; numbers as text, so SQLite keeps their exact digits."""

    def replace(match: re.Match[str]) -> str:
        value = match.group()
        kind = match.lastgroup
        if kind == "string":
            return _mysql_string(value) if flavour == "mysql" else value
        if kind == "ident":
            return _identifier(value)
        if kind == "comment":
            return " "
        if kind == "introducer":
            return ""
        return f"'{value}'" if quote_numbers else value

    return _TOKEN[flavour].sub(replace, sql)


def _mysql_string(literal: str) -> str:
    """A MySQL 'string' or "string" with backslash escapes as a standard 'string'."""
    quote, body = literal[0], literal[1:-1]
    if quote == "'" and "\\" not in body:
        return literal
    text = re.sub(
        r"\\(.)|" + quote * 2,
        lambda m: quote if m[1] is None else _MYSQL_ESCAPES.get(m[1], m[1]),
        body,
        flags=re.S,
    )
    return "'" + text.replace("'", "''") + "'"


def _identifier(value: str) -> str:
    """Any quoted or bare name as a double-quoted SQLite identifier."""
    if value.startswith('"'):
        return value
    inner = value[1:-1].replace("``", "`") if value.startswith("`") else value
    return '"' + inner.replace('"', '""') + '"'


def _table(name: str) -> str:
    """The table name without its schema (public.customers is customers)."""
    parts = re.findall(r'"(?:[^"]|"")+"|[\w$]+', name)
    return _identifier(parts[-1])


def _create_table(sql: str, create: re.Match[str], flavour: str) -> str | None:
    parts = _column_parts(sql, create.end())
    columns = [c for part in parts if (c := _column(part, _NOT_COLUMNS[flavour]))]
    if not columns:
        return None
    return f"CREATE TABLE {_table(create['name'])} ({', '.join(columns)})"


def _column_parts(sql: str, start: int) -> list[str]:
    """The comma-separated definitions inside CREATE TABLE's parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for token in re.finditer(r"""'(?:[^']|'')*+'|"(?:[^"]|"")*+"|[(),]|[^'"(),]++""", sql[start:]):
        value = token.group()
        if value == ")" and depth == 0:
            break
        if value == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        depth += {"(": 1, ")": -1}.get(value, 0)
        current.append(value)
    parts.append("".join(current))
    return parts


def _column(definition: str, constraints: set[str]) -> str | None:
    """'"name" TYPE' with a type that gives SQLite the right affinity; None for constraints."""
    match = re.match(r'\s*("(?:[^"]|"")+"|[\w$]+)\s*([\w.]*)', definition)
    if match is None or match[1].upper() in constraints:
        return None
    return f"{_identifier(match[1])} {_affinity(match[2].rsplit('.', 1)[-1].lower())}"


def _affinity(type_word: str) -> str:
    if type_word in {"bool", "boolean"}:
        return "BOOLEAN"  # true and false load as 1 and 0, so WHERE active works
    if type_word in _INTEGER:
        return "INTEGER"
    if type_word in _REAL:
        return "REAL"
    if type_word in _BLOB:
        return "BLOB"
    return "TEXT"  # text, dates, and decimals (stored as the digits the dump wrote)


def _copy(connection: sqlite3.Connection, statement: _Statement, name: str) -> None:
    """Insert the rows of a pg_dump COPY block (tab-separated, \\N for NULL)."""
    copy = _COPY.match(statement.sql)
    assert copy is not None and statement.copy_rows is not None
    table = _table(copy["name"])
    info = connection.execute(f"PRAGMA table_info({table})").fetchall()
    if not info:
        raise _bad(name, statement.line, f"COPY into {table}, which the dump never creates")
    types = {_identifier(row[1]): row[2] for row in info}
    if copy["columns"]:
        columns = [_identifier(c.strip()) for c in copy["columns"].split(",")]
    else:
        columns = list(types)
    flags = [types.get(column) == "BOOLEAN" for column in columns]
    marks = ", ".join("?" * len(columns))
    insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
    rows = []
    for line, data in statement.copy_rows:
        fields = data.split("\t")
        if len(fields) != len(columns):
            raise _bad(name, line, f"expected {len(columns)} values, found {len(fields)}")
        rows.append([_copy_field(f, flag) for f, flag in zip(fields, flags, strict=True)])
    connection.executemany(insert, rows)


def _copy_field(field: str, boolean: bool) -> str | int | None:
    if field == "\\N":
        return None
    if boolean:
        return {"t": 1, "f": 0}.get(field, field)
    if "\\" not in field:
        return field
    return _COPY_ESCAPE.sub(_copy_escape, field)


def _copy_escape(match: re.Match[str]) -> str:
    code = match[1]
    if code[0] == "x" and len(code) > 1:
        return chr(int(code[1:], 16))
    if code.isdigit():
        return chr(int(code, 8))
    return _COPY_ESCAPES.get(code, code)

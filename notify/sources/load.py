"""Read exports into one DataFrame of strings, each row carrying its source and row number.

    [source] path *.csv *.tsv *.txt   notify.sources.delimited: encoding and delimiter detected
    [source] path *.jsonl             notify.sources.sheets: one JSON object per line
    [source] path *.xlsx              notify.sources.sheets: the first sheet, or sheet = "..."
    [source] path *.sql + query       notify.sources.dumps loads the dump, then the query runs on it
    [source] path *.db + query        the query on a SQLite file, read-only
    [source] url + query              notify.sources.sql: a live database, read-only

Every data column holds str ("" for a missing value); ROW_COLUMN is the row number a person
would point at (the line in a text file, the row in a sheet, the result row of a query), and
NOTE_COLUMN, when a source adds it, says why a row needs a look.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from notify.errors import SourceError
from notify.models import NOTE_COLUMN, ORIGIN_COLUMNS, SourceSpec
from notify.sources.delimited import read_delimited
from notify.sources.dumps import dump_tables, load_dump
from notify.sources.sheets import read_jsonl, read_xlsx
from notify.sources.sql import check_read_only, open_sqlite, query_sqlite, read_database

_TEXT = {".csv", ".tsv", ".txt"}
_SQLITE = {".db", ".sqlite", ".sqlite3"}


def load_sources(
    specs: Sequence[SourceSpec],
    *,
    root: Path,
    incident_id: str,
    environ: Mapping[str, str],
) -> pd.DataFrame:
    """Read every source and stack their rows, in order, before cleaning."""
    if not specs:
        raise SourceError('no [source] given; add [source] path = "data/....csv" to the manifest')
    frames = [
        _load_one(spec, root=root, incident_id=incident_id, environ=environ) for spec in specs
    ]
    return frames[0] if len(frames) == 1 else _stack(frames)


def _stack(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Columns that differ only in case are one column; a column a source lacks is ""."""
    spelling: dict[str, str] = {}
    for frame in frames:
        frame.columns = [spelling.setdefault(str(c).lower(), str(c)) for c in frame.columns]
    stacked = pd.concat(frames, ignore_index=True, sort=False)
    data = [c for c in stacked.columns if c not in ORIGIN_COLUMNS]
    origin = [c for c in ORIGIN_COLUMNS if c in stacked.columns]
    stacked[data] = stacked[data].fillna("")
    if NOTE_COLUMN in stacked.columns:  # only some sources noted rows
        stacked[NOTE_COLUMN] = stacked[NOTE_COLUMN].fillna("")
    return stacked[[*data, *origin]]


def _load_one(
    spec: SourceSpec, *, root: Path, incident_id: str, environ: Mapping[str, str]
) -> pd.DataFrame:
    if spec.url:
        query = _query(spec, root)
        if query is None:
            raise SourceError("[source] url needs query or query_file; add the SELECT to run")
        return read_database(spec.url, query, root=root, incident_id=incident_id, environ=environ)
    if not spec.path:
        raise SourceError('[source] needs path = "data/..." or url = "..."')
    path = _existing_file(root, spec.path)
    try:
        return _read_file(path, spec, root=root, incident_id=incident_id)
    except OSError as exc:
        raise SourceError(
            f"{spec.path}: cannot read it ({exc.strerror or exc}); check the file's permissions",
            path=spec.path,
        ) from exc


def _existing_file(root: Path, name: str) -> Path:
    path = root / name
    if path.is_dir():
        raise SourceError(
            f"{name} is a folder; set [source] path to the export file inside it", path=name
        )
    if not path.exists():
        raise SourceError(f"{name} not found; put the export there or fix [source] path", path=name)
    return path


def _read_file(path: Path, spec: SourceSpec, *, root: Path, incident_id: str) -> pd.DataFrame:
    name = str(spec.path)
    suffix = path.suffix.lower()
    if suffix in _TEXT:
        return read_delimited(path, name=name, encoding=spec.encoding, delimiter=spec.delimiter)
    if suffix in {".jsonl", ".ndjson"}:
        return read_jsonl(path, name)
    if suffix in {".xlsx", ".xlsm"}:
        return read_xlsx(path, name, spec.sheet)
    if suffix in _SQLITE or suffix == ".sql":
        return _read_sql_file(path, spec, root=root, incident_id=incident_id)
    if suffix == ".xls":
        raise SourceError(f"{name} is an old .xls workbook; save it as .xlsx or CSV", path=name)
    raise SourceError(
        f"{name}: cannot read {suffix or 'a file without an extension'}; export as .csv, .tsv, "
        ".txt, .xlsx, .jsonl or a .sql dump",
        path=name,
    )


def _query(spec: SourceSpec, root: Path) -> str | None:
    if spec.query:
        return spec.query
    if not spec.query_file:
        return None
    path = root / spec.query_file
    if not path.is_file():
        raise SourceError(
            f"{spec.query_file} not found; write the query there or fix [source] query_file",
            path=spec.query_file,
        )
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{spec.query_file} is not UTF-8 text; save it as UTF-8", path=spec.query_file
        ) from exc


def _read_sql_file(path: Path, spec: SourceSpec, *, root: Path, incident_id: str) -> pd.DataFrame:
    """A dump is loaded into memory first; a SQLite file is opened read-only in place."""
    name = str(spec.path)
    query = _query(spec, root)
    if query is not None:
        check_read_only(query, where="[source] query")
    dump = path.suffix.lower() == ".sql"
    connection = load_dump(path, name=name) if dump else open_sqlite(path)
    try:
        if query is None:
            tables = ", ".join(dump_tables(connection)) or "none"
            raise SourceError(
                f'{name} is a database; add query = "SELECT ... FROM <table>" to [source] '
                f"(tables: {tables})",
                path=name,
            )
        return query_sqlite(connection, query, incident_id=incident_id, source=name)
    except sqlite3.DatabaseError as exc:
        raise SourceError(
            f"{name} is not a SQLite database ({exc}); check [source] path", path=name
        ) from exc
    finally:
        connection.close()

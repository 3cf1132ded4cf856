"""A corpus of bad inputs: each stops with one line that says what, where and what to do.

Exports, manifests, templates, settings and command-line values an operator gets wrong on a
bad night. Every case runs a real command against a workspace whose .env points at the test
relay, and checks the contract: the exit code, exactly one `Error:` line (the exact words),
no traceback, nothing sent to the relay, and the ledger as it was.
"""

from __future__ import annotations

import gzip
import io
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import openpyxl
import pytest

from tests.conftest import DEFAULT_MANIFEST, HEADER

Content = str | bytes | Callable[[], bytes] | None  # None: delete the file

CSV_HEADER = ",".join(HEADER) + "\n"
ROW = "Ann Lee,ann@example.com,+1 555 0001,A-1,49.00\n"
EXPORT = "data/affected.csv"
MANIFEST = "incidents/42.toml"
BODY = "templates/apology/body.txt.j2"
AGAIN = "export the affected customers again"
AS_CSV = "export the affected customers again as CSV and check [source] path"
SEND = ("send", "--incident", "42", "--yes")
CHECK = ("check", "--offline", "--incident", "42")
STOPPED = "1 problem(s) stop the send; nothing was sent. First: "
ANN = "ann@example.com (data/affected.csv row 2): "


@dataclass(frozen=True)
class Case:
    """One bad input: what the workspace holds, the command, and the one line it must print."""

    id: str
    args: tuple[str, ...]
    code: int
    line: str  # the Error line without "Error: "; {root} and {port} are filled in
    files: Mapping[str, Content] = field(default_factory=dict)
    env: Mapping[str, str | None] = field(default_factory=dict)  # .env on top of the relay's
    relay: str = "plain"  # "starttls": a relay offering AUTH only after STARTTLS
    sent: bool = False  # the incident was sent once before the bad input is made


def manifest(*replacements: tuple[str, str]) -> str:
    text = DEFAULT_MANIFEST
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return text


def source(line: str) -> str:
    return manifest(('path = "data/affected.csv"', line))


def export(*rows: str, header: str = CSV_HEADER) -> str:
    return header + "".join(rows)


def workbook(*rows: list[object], sheet: str = "Sheet") -> Callable[[], bytes]:
    def build() -> bytes:
        book = openpyxl.Workbook()
        active = book.active
        assert active is not None
        active.title = sheet
        for row in rows:
            active.append(row)
        out = io.BytesIO()
        book.save(out)
        return out.getvalue()

    return build


def sqlite_file() -> bytes:
    with sqlite3.connect(":memory:") as connection:
        connection.execute("CREATE TABLE customers (email TEXT, name TEXT)")
        connection.execute("INSERT INTO customers VALUES ('ann@example.com', 'Ann')")
        return connection.serialize()


DUMP = (
    'CREATE TABLE customers (Customer TEXT, "Email Address" TEXT, order_id TEXT);\n'
    "INSERT INTO customers VALUES ('Ann Lee', 'ann@example.com', 'A-1');\n"
)


def dump_source(query: str) -> dict[str, Content]:
    return {
        "data/crm.sql": DUMP,
        MANIFEST: manifest(
            ('path = "data/affected.csv"', f'path = "data/crm.sql"\nquery = "{query}"'),
            ('phone = "Phone"\n', ""),
            ('items = ["order_id", "amount"]', 'items = ["order_id"]'),
        ),
    }


EXPORTS = [
    Case("empty file", CHECK, 3, f"data/affected.csv is empty; {AGAIN}", {EXPORT: ""}),
    Case("only blank lines", CHECK, 3, f"data/affected.csv is empty; {AGAIN}",
         {EXPORT: "\n\r\n  \n"}),
    Case("header but no rows", SEND, 3, f"data/affected.csv has a header but no rows; {AGAIN}",
         {EXPORT: CSV_HEADER + "\n,,,,\n"}),
    Case("first line empty", CHECK, 3, "data/affected.csv line 1 is empty; the column names "
         "must be on the first line", {EXPORT: "\n" + CSV_HEADER + ROW}),
    Case("too many fields", SEND, 3, 'data/affected.csv line 3: expected 5 fields, found 6 with '
         'delimiter ","; quote values that contain it, or set delimiter = ";" (or the right one) '
         "in [source]", {EXPORT: export(ROW, "Lee, Ann,ann@example.com,,A-2,1.00\n")}),
    Case("too few fields", CHECK, 3, 'data/affected.csv line 2: expected 5 fields, found 3 with '
         'delimiter ","; quote values that contain it, or set delimiter = ";" (or the right one) '
         "in [source]", {EXPORT: export("Ann,ann@example.com,A-1\n")}),
    Case("unclosed quote", CHECK, 3, "data/affected.csv line 3: a quoted field starts in this "
         'row and is never closed; close the quote, or double a " inside a value (""), or export '
         "the file again", {EXPORT: export(ROW, '"Bob,bob@example.com,,A-2,1\n')}),
    Case("text after a closing quote", CHECK, 3, "data/affected.csv line 2: text follows a "
         'closing quote; double every " inside a quoted value (""), or export the file again',
         {EXPORT: export('"Ann "The Boss" Lee",ann@example.com,,A-1,1\n')}),
    Case("huge cell", CHECK, 3, "data/affected.csv line 2: a field in this row is longer than "
         '131072 characters; a quote is probably never closed; double a " inside a value ("")',
         {EXPORT: export('"' + "x" * 140_000 + '",ann@example.com,,A-1,1\n')}),
    Case("NUL byte", SEND, 3, "data/affected.csv: byte 0x00 at offset 48 (line 2) is never in a "
         f"text export, so the file is binary or damaged; {AS_CSV}",
         {EXPORT: (CSV_HEADER + "Ann\x00,ann@example.com,,A-1,1\n").encode()}),
    Case("neither UTF-8 nor Windows-1252", CHECK, 3, "data/affected.csv: byte 0x81 at offset 47 "
         "(line 2) is not valid UTF-8 or Windows-1252 text; save the export as CSV (UTF-8), or "
         'set encoding = "..." in [source]',
         {EXPORT: CSV_HEADER.encode() + b"Bo\x81,bob@example.com,,A-1,1\n"}),
    Case("an encoding that the file is not", CHECK, 3, "data/affected.csv: byte 0xEB at offset "
         "47 (line 2) is not valid UTF-8 or Windows-1252 text; save the export as CSV (UTF-8), or "
         'set encoding = "..." in [source]',
         {EXPORT: export("Zoë,zoe@example.com,,A-1,1\n").encode("cp1252"),
          MANIFEST: source('path = "data/affected.csv"\nencoding = "utf-8"')}),
    Case("unknown encoding", CHECK, 3, 'data/affected.csv: unknown encoding "klingon"; use e.g. '
         'encoding = "utf-8", "cp1252" or "utf-16" in [source]',
         {MANIFEST: source('path = "data/affected.csv"\nencoding = "klingon"')}),
    Case("delimiter of two characters", CHECK, 3, 'data/affected.csv: delimiter ";;" must be one '
         "character, or tab, comma, semicolon, pipe in [source]",
         {MANIFEST: source('path = "data/affected.csv"\ndelimiter = ";;"')}),
    Case("semicolons read as one column", CHECK, 3, "incidents/42.toml [columns] email = 'Email "
         "Address': the export has no such column; it has: 'Customer;Email Address;Phone;"
         "order_id;amount'; fix the column name in [columns]",
         {EXPORT: export("Ann;ann@example.com;;A-1;1\n", header=CSV_HEADER.replace(",", ";")),
          MANIFEST: source('path = "data/affected.csv"\ndelimiter = ","')}),
    Case("TSV with a short row", CHECK, 3, 'data/x.tsv line 3: expected 5 fields, found 2 with '
         'delimiter "\\t"; quote values that contain it, or set delimiter = ";" (or the right '
         "one) in [source]",
         {"data/x.tsv": CSV_HEADER.replace(",", "\t") + ROW.replace(",", "\t") + "Bob\tb@x.io\n",
          MANIFEST: source('path = "data/x.tsv"')}),
    Case("a PNG named .csv", CHECK, 3, f"data/affected.csv is not a text export: it is a PNG "
         f"image; {AS_CSV}", {EXPORT: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01"}),
    Case("a gzip named .csv", SEND, 3, "data/affected.csv is not a text export: it is "
         "gzip-compressed; unpack it and set [source] path to the file inside",
         {EXPORT: lambda: gzip.compress((CSV_HEADER + ROW).encode())}),
    Case("an old .xls named .csv", CHECK, 3, "data/affected.csv is not a text export: it is an "
         "old Office file (.xls); save it as .xlsx or CSV",
         {EXPORT: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512)}),
    Case("an .xlsx named .csv", CHECK, 3, "data/affected.csv is a zip file, probably an Excel "
         "workbook; rename it to .xlsx", {EXPORT: workbook(HEADER)}),
    Case("control characters, no NUL", CHECK, 3, "data/affected.csv is not a text export: it "
         f"holds control characters such as U+0001; {AS_CSV}",
         {EXPORT: bytes(range(1, 9)) * 30 + b",\x0e\x0f\n" + bytes(range(16, 32)) * 30}),
    Case("two Email Address columns", SEND, 3, 'data/affected.csv: columns 2 and 6 are both '
         'named "Email Address"; rename one in the export',
         {EXPORT: export("Ann,ann@example.com,,A-1,1,ann.lee@example.com\n",
                         header=CSV_HEADER.strip() + ",Email Address\n")}),
    Case("two columns differing in case", CHECK, 3, 'data/affected.csv: columns 1 and 6 are '
         'named "Customer" and "customer", which notify cannot tell apart; rename one in the '
         "export", {EXPORT: export("Ann,ann@example.com,,A-1,1,x\n",
                                   header=CSV_HEADER.strip() + ",customer\n")}),
    Case("email column missing", SEND, 3, "incidents/42.toml [columns] email = 'Email Address': "
         "the export has no such column; closest: 'Email'; fix the column name in [columns]",
         {EXPORT: export(ROW, header=CSV_HEADER.replace("Email Address", "Email"))}),
    Case("group column missing", CHECK, 3, "incidents/42.toml [group] amount = 'amount': the "
         "export has no such column; closest: 'Amount EUR'; fix the column name in [group]",
         {EXPORT: export(ROW, header=CSV_HEADER.replace("amount", "Amount EUR"))}),
    Case("no valid address at all", SEND, 3, f"{STOPPED}no valid recipient in the export; see "
         ".notify/incident-42/rejects.csv for why each was",
         {EXPORT: export("Ann,ann@@example.com,,A-1,1\n", "Bob,,,A-2,1\n",
                         "Eve,=cmd|' /C calc'!A0,,A-3,1\n")}),
    Case("missing export", CHECK, 3, "data/affected.csv not found; put the export there or fix "
         "[source] path", {EXPORT: None}),
    Case("export is a folder", CHECK, 3, "data/x.csv is a folder; set [source] path to the "
         "export file inside it",
         {"data/x.csv/keep.txt": "", MANIFEST: source('path = "data/x.csv"')}),
    Case("unknown extension", CHECK, 3, "data/x.parquet: cannot read .parquet; export as .csv, "
         ".tsv, .txt, .xlsx, .jsonl or a .sql dump",
         {"data/x.parquet": b"PAR1", MANIFEST: source('path = "data/x.parquet"')}),
    Case("an old .xls", CHECK, 3, "data/x.xls is an old .xls workbook; save it as .xlsx or CSV",
         {"data/x.xls": b"\xd0\xcf\x11\xe0", MANIFEST: source('path = "data/x.xls"')}),
    Case("xlsx that is not a workbook", CHECK, 3, "data/x.xlsx is not a readable .xlsx "
         "workbook; open it in Excel and save it again as .xlsx or CSV",
         {"data/x.xlsx": CSV_HEADER + ROW, MANIFEST: source('path = "data/x.xlsx"')}),
    Case("xlsx without the named sheet", CHECK, 3, 'data/x.xlsx has no sheet "Kunden"; its '
         'sheets are "Customers"; set sheet = "..." in [source]',
         {"data/x.xlsx": workbook(HEADER, sheet="Customers"),
          MANIFEST: source('path = "data/x.xlsx"\nsheet = "Kunden"')}),
    Case("xlsx header only", CHECK, 3, "data/x.xlsx sheet 'Sheet' has a header but no rows; "
         f"{AGAIN}", {"data/x.xlsx": workbook(HEADER), MANIFEST: source('path = "data/x.xlsx"')}),
    Case("xlsx empty sheet", CHECK, 3, "data/x.xlsx sheet 'Sheet' is empty; choose another "
         "sheet with sheet = ...",
         {"data/x.xlsx": workbook(), MANIFEST: source('path = "data/x.xlsx"')}),
    Case("xlsx two Email Address columns", SEND, 3, "data/x.xlsx sheet 'Sheet': columns B and F "
         'are both named "Email Address"; rename one in the workbook',
         {"data/x.xlsx": workbook([*HEADER, "Email Address"], ["A", "a@x.io", "", 1, 1, "b@x.io"]),
          MANIFEST: source('path = "data/x.xlsx"')}),
    Case("jsonl not JSON", CHECK, 3, "data/x.jsonl line 2: not valid JSON (Expecting ',' "
         "delimiter at column 28); fix or remove the line",
         {"data/x.jsonl": '{"Email Address": "a@x.io"}\n{"Email Address": "b@x.io" "x": 1}\n',
          MANIFEST: source('path = "data/x.jsonl"')}),
    Case("jsonl array line", CHECK, 3, "data/x.jsonl line 1: expected a JSON object {...}, found "
         "list; write one object per line",
         {"data/x.jsonl": '["a@x.io"]\n', MANIFEST: source('path = "data/x.jsonl"')}),
    Case("jsonl not UTF-8", CHECK, 3, "data/x.jsonl: byte 0xEB at offset 16 (line 1) is not "
         "UTF-8, which JSON Lines must be; export the file again",
         {"data/x.jsonl": '{"Customer": "Zoë"}\n'.encode("cp1252"),
          MANIFEST: source('path = "data/x.jsonl"')}),
    Case("jsonl key twice", SEND, 3, 'data/x.jsonl line 1: key "Email Address" appears twice in '
         "one object; keep one in the export",
         {"data/x.jsonl": '{"Email Address": "a@x.io", "Email Address": "b@x.io"}\n',
          MANIFEST: source('path = "data/x.jsonl"')}),
    Case("jsonl keys in two spellings", CHECK, 3, 'data/x.jsonl: key "Email Address" (line 1) and '
         'key "email address" (line 2) differ only in case or spaces; spell each key one way on '
         "every line of the export",
         {"data/x.jsonl": '{"Email Address": "a@x.io"}\n{"email address": "b@x.io"}\n',
          MANIFEST: source('path = "data/x.jsonl"')}),
    Case("jsonl without rows", CHECK, 3, f"data/x.jsonl has no rows; {AGAIN}",
         {"data/x.jsonl": "\n\n", MANIFEST: source('path = "data/x.jsonl"')}),
    Case("dump without a query", CHECK, 3, 'data/crm.sql is a database; add query = "SELECT ... '
         'FROM <table>" to [source] (tables: customers)',
         {**dump_source("x"), MANIFEST: source('path = "data/crm.sql"')}),
    Case("dump query on a missing table", CHECK, 3, "data/crm.sql: the query failed: no such "
         "table: customer; fix [source] query", dump_source("SELECT * FROM customer")),
    Case("dump query that writes", SEND, 3, "[source] query must be a SELECT (or WITH ... "
         "SELECT), not DELETE; notify only reads, so write a SELECT",
         dump_source("DELETE FROM customers")),
    Case("dump query of two statements", CHECK, 3, "[source] query holds more than one "
         "statement; keep a single SELECT", dump_source("SELECT 1; SELECT 2")),
    Case("dump query giving two columns one name", CHECK, 3, "data/crm.sql: columns 2 and 3 are "
         'both named "Email Address"; give one another name with AS in [source] query',
         dump_source('SELECT Customer, \\"Email Address\\", \\"Email Address\\" FROM customers')),
    Case("dump query without rows", CHECK, 3, "data/crm.sql: the query returned no rows; check "
         "the WHERE clause and the incident id",
         dump_source("SELECT * FROM customers WHERE 0")),
    Case("damaged dump", CHECK, 3, 'data/crm.sql line 2: near "INSRT": syntax error; the dump is '
         "damaged or not one notify reads (sqlite3 .dump, pg_dump, mysqldump); dump it again",
         {**dump_source("SELECT * FROM customers"),
          "data/crm.sql": DUMP.replace("INSERT", "INSRT")}),
    Case("dump not UTF-8", CHECK, 3, "data/crm.sql: byte 0xEB at offset 110 (line 2) is not "
         "UTF-8; dump the database again with UTF-8 output",
         {**dump_source("SELECT * FROM customers"),
          "data/crm.sql": DUMP.replace("Ann Lee", "Zoë").encode("cp1252")}),
    Case("a text file named .db", CHECK, 3, "data/crm.db is not a SQLite database; check [source] "
         "path or url",
         {**dump_source("SELECT * FROM customers"), "data/crm.db": "not a database\n" * 20,
          MANIFEST: dump_source("x")[MANIFEST].replace("crm.sql", "crm.db").replace(
              'query = "x"', 'query = "SELECT * FROM customers"')}),
    Case("sqlite query with a missing column", CHECK, 3, "data/crm.db: the query failed: no such "
         "column: nope; fix [source] query",
         {"data/crm.db": sqlite_file,
          MANIFEST: source('path = "data/crm.db"\nquery = "SELECT nope FROM customers"')}),
    Case("url with an unset variable", CHECK, 3, "[source] url uses ${CRM_URL}, which is not "
         "set; put CRM_URL=... in .env or the environment",
         {MANIFEST: source('url = "${CRM_URL}"\nquery = "SELECT 1"')}),
    Case("url that is not a URL", CHECK, 3, '[source] url "not a url" is not a database URL; '
         "write it like postgresql://user@host/database",
         {MANIFEST: source('url = "not a url"\nquery = "SELECT 1"')}),
    Case("sqlite url to a missing file", CHECK, 3, "sqlite:///data/none.db: data/none.db not "
         "found; check the path, which is relative to the workspace",
         {MANIFEST: source('url = "sqlite:///data/none.db"\nquery = "SELECT 1"')}),
    Case("query file missing", CHECK, 3, "q.sql not found; write the query there or fix [source] "
         "query_file", {MANIFEST: source('url = "sqlite:///data/crm.db"\nquery_file = "q.sql"')}),
]  # fmt: skip

MANIFESTS = [
    Case("manifest missing", ("check", "--incident", "43"), 3, "incidents/43.toml not found; "
         "known incidents: 42; check --incident"),
    Case("TOML syntax error", SEND, 3, "incidents/42.toml: not valid TOML (Expected '=' after a "
         "key in a key/value pair (at line 2, column 8)); fix the file",
         {MANIFEST: 'title = "x"\ntitle2 "y"\n'}),
    Case("TOML not UTF-8", CHECK, 3, "incidents/42.toml: not valid TOML ('utf-8' codec can't "
         "decode byte 0xe9 in position 10: invalid continuation byte); fix the file",
         {MANIFEST: 'title = "Fehler bei der Abbuchung"'.replace("Fehler", "Fé").encode("cp1252")}),
    Case("unknown top-level key", CHECK, 3, "incidents/42.toml: unknown key 'colums'; expected one "
         "of attachments, columns, facts, from, group, reply_to, source, template, title",
         {MANIFEST: manifest(("[columns]", "[colums]"))}),
    Case("title missing", CHECK, 3, 'incidents/42.toml: title is missing; add title = "..." at '
         "the top", {MANIFEST: manifest(('title = "Duplicate charge on March renewals"\n', ""))}),
    Case("title not a string", CHECK, 3, 'incidents/42.toml: title must be a string in quotes, '
         'like title = "..."', {MANIFEST: manifest(('title = "Duplicate charge on March renewals"',
                                                    "title = 42"))}),
    Case("template missing", SEND, 3, 'incidents/42.toml: template is missing; add template = '
         '"..." at the top', {MANIFEST: manifest(('template = "apology"\n', ""))}),
    Case("unknown template", CHECK, 3, "template folder templates/apologie not found; known "
         "templates: apology, or fix template =",
         {MANIFEST: manifest(('template = "apology"', 'template = "apologie"'))}),
    Case("columns without email", CHECK, 3, 'incidents/42.toml: [columns] has no email; add '
         'email = "<column with the address>"',
         {MANIFEST: manifest(('email = "Email Address"\n', ""))}),
    Case("column not a string", CHECK, 3, 'incidents/42.toml: [columns] phone must name a column, '
         'like phone = "..."', {MANIFEST: manifest(('phone = "Phone"', "phone = 3"))}),
    Case("group items not a list", CHECK, 3, 'incidents/42.toml: [group] items must list '
         'columns, like items = ["order_id", "amount"]',
         {MANIFEST: manifest(('items = ["order_id", "amount"]', 'items = "order_id"'))}),
    Case("facts not a table", CHECK, 3, "incidents/42.toml: facts must be a table, written "
         "[facts]", {MANIFEST: 'facts = "5 days"\n'
                     + manifest(('[facts]\nrefund_eta = "5 business days"\n', ""))}),
    Case("source missing", CHECK, 3, 'incidents/42.toml: [source] is missing; add [source] path '
         '= "data/....csv"', {MANIFEST: manifest(('[source]\npath = "data/affected.csv"\n', ""))}),
    Case("source with path and url", CHECK, 3, "incidents/42.toml: [source] needs exactly one of "
         "path or url (with query or query_file)",
         {MANIFEST: source('path = "data/affected.csv"\nurl = "sqlite:///x.db"')}),
    Case("source of an unknown kind", CHECK, 3, "incidents/42.toml: [source] has unknown key "
         "'kind'; expected delimiter, encoding, path, query, query_file, sheet, url",
         {MANIFEST: source('path = "data/affected.csv"\nkind = "ftp"')}),
    Case("source value not a string", CHECK, 3, "incidents/42.toml: every [source] value must be "
         "a string in quotes", {MANIFEST: source('path = "data/affected.csv"\nsheet = 2')}),
    Case("url without a query", CHECK, 3, "incidents/42.toml: [source] url needs query or "
         "query_file", {MANIFEST: source('url = "sqlite:///data/crm.db"')}),
    Case("from not an address", SEND, 3, "incidents/42.toml: from = 'Acme Support' is not a valid "
         'address (An email address must have an @-sign.); write it like "Acme Support '
         '<support@acme.example>"',
         {MANIFEST: manifest(('from = "Acme Support <support@acme.example>"',
                              'from = "Acme Support"'))}),
    Case("no from and no NOTIFY_FROM", CHECK, 3, 'incidents/42.toml: no from = "Name <address>" '
         "and no NOTIFY_FROM in .env",
         {MANIFEST: manifest(('from = "Acme Support <support@acme.example>"\n', ""))}),
]  # fmt: skip

TEMPLATES = [
    Case("template reaching Python internals", CHECK, 3, "3 problem(s) stop the send; nothing "
         "was sent. First: ann@example.com (data/affected.csv row 2): body.txt.j2 line 1: access "
         "to attribute '__init__' of 'type' object is unsafe: templates cannot reach Python "
         "internals; fix the template (and 2 more)",
         {BODY: "{{ cycler.__init__.__globals__.os.popen('id').read() }}\n"}),
    Case("template including a file outside its folder", CHECK, 3, "3 problem(s) stop the "
         "send; nothing was sent. First: ann@example.com (data/affected.csv row 2): body.txt.j2 "
         "line 1: template '../../etc/passwd' not found in templates/apology/; a template may "
         "include only templates of its own folder (and 2 more)",
         {BODY: "{% include '../../etc/passwd' %}\n"}),
    Case("template that runs away", CHECK, 3, "ann@example.com (data/affected.csv row 2): "
         "body.txt.j2 line 1: the template asks range() for 1,000,000,000,000 items; it gives "
         "10,000 at most; fix templates/apology",
         {BODY: "{% for i in range(10**12) %}x{% endfor %}\n"}),
    Case("template syntax error", SEND, 3, "templates/apology/body.txt.j2 line 3: Encountered "
         "unknown tag 'endfor'.; fix the template",
         {BODY: "Dear {{ customer.name }},\n\n{% endfor %}\n"}),
    Case("unclosed block", CHECK, 3, "templates/apology/body.txt.j2 line 2: Unexpected end of "
         "template. Jinja was looking for the following tags: 'endfor' or 'else'. The innermost "
         "block that needs to be closed is 'for'.; fix the template",
         {BODY: "{% for item in items %}\n{{ item.order_id }}\n"}),
    Case("unknown filter", CHECK, 3, "templates/apology/body.txt.j2 line 1: No filter named "
         "'shout'.; fix the template", {BODY: "Dear {{ customer.name | shout }},\n"}),
    Case("field no column maps", SEND, 3, f"{STOPPED}templates/apology/body.txt.j2 line 1: "
         "customer.account is not a field any column maps; mapped fields: email, name, phone; fix "
         "the template or [columns]", {BODY: "Account {{ customer.account }}\n",
                          EXPORT: export(ROW)}),
    Case("incident fact missing", CHECK, 3, f"{STOPPED}{ANN}body.txt.j2 line 2: the incident has "
         "no fact 'refund_etaa'; add it under [facts] in incidents/42.toml, or fix the name in "
         "the template", {BODY: "Hello\nWithin {{ incident.facts.refund_etaa }}.\n",
                          EXPORT: export(ROW)}),
    Case("top-level fact misspelt", CHECK, 3, f"{STOPPED}{ANN}subject.j2 line 1: the incident has "
         "no fact 'titel'; add it under [facts] in incidents/42.toml, or fix the name in the "
         "template", {"templates/apology/subject.j2": "{{ incident.titel }}\n",
                      EXPORT: export(ROW)}),
    Case("subject missing", CHECK, 3, "templates/apology/subject.j2 is missing; every template "
         "needs one", {"templates/apology/subject.j2": None}),
    Case("template not UTF-8", CHECK, 3, "templates/apology/body.txt.j2 line 2: not UTF-8 text; "
         "save it as UTF-8", {BODY: "Hello\nGrüße {{ customer.name }}\n".encode("cp1252")}),
    Case("html template syntax error", CHECK, 3, "templates/apology/body.html.j2 line 1: "
         "unexpected '}'; fix the template",
         {"templates/apology/body.html.j2": "<p>{{ } }}</p>\n"}),
]  # fmt: skip

SETTINGS = [
    Case("setting line with an unclosed quote", SEND, 3, '.env line 5: the value of NOTIFY_RATE '
         'opens a quote (") that is never closed; fix the line', env={"rate": '"2'}),
    Case("misspelt setting name", CHECK, 3, ".env line 5: NOTIFY_SMTP_HOTS is not a setting "
         "(did you mean NOTIFY_SMTP_HOST?); fix the line", env={"smtp_hots": "relay.example.com"}),
    Case("port not a number", SEND, 3, "NOTIFY_SMTP_PORT='abc' must be a whole number from 1 to "
         "65535; fix .env", env={"smtp_port": "abc"}),
    Case("port out of range", CHECK, 3, "NOTIFY_SMTP_PORT='70000' must be a whole number from 1 "
         "to 65535; fix .env", env={"smtp_port": "70000"}),
    Case("unknown security mode", SEND, 3, "NOTIFY_SMTP_SECURITY='ssl' is not one of starttls, "
         "tls, none; fix it in .env", env={"smtp_security": "ssl"}),
    Case("rate not a number", CHECK, 3, "NOTIFY_RATE='fast' must be a positive number of messages "
         "per second; fix .env", env={"rate": "fast"}),
    Case("negative rate", SEND, 3, "NOTIFY_RATE='-5' must be a positive number of messages per "
         "second; fix .env", env={"rate": "-5"}),
    Case("no connections", CHECK, 3, "NOTIFY_CONNECTIONS='0' must be a whole number from 1 to 64; "
         "fix .env", env={"connections": "0"}),
    Case("resend schedule with a word", ("resend", "--incident", "42"), 3,
         "NOTIFY_RESEND_SCHEDULE: 'soon' is not a duration like 30m, 4h or 2d; fix it in .env",
         env={"resend_schedule": "1h,soon"}),
    Case("IMAP port not a number", ("bounces", "--incident", "42", "--imap"), 3,
         "NOTIFY_IMAP_PORT='imaps' must be a whole number from 1 to 65535; fix .env",
         env={"imap_port": "imaps"}),
    Case("no relay host for a send", SEND, 3, "NOTIFY_SMTP_HOST is not set; put "
         "NOTIFY_SMTP_HOST=smtp.example.com in .env", env={"smtp_host": None}),
    Case("ledger URL of an unknown kind", SEND, 3, "NOTIFY_LEDGER=mongodb://127.0.0.1/x: the "
         "ledger lives in SQLite (one machine) or PostgreSQL (several); use a sqlite:// or "
         "postgresql:// URL", env={"ledger": "mongodb://127.0.0.1/x"}),
    Case("relay without AUTH for a user", ("send", "--incident", "42", "--to", "me@example.com"),
         4, "127.0.0.1:{port} does not offer AUTH, and NOTIFY_SMTP_USER is set; check "
         "NOTIFY_SMTP_SECURITY (many relays offer AUTH only after STARTTLS), or unset "
         "NOTIFY_SMTP_USER", env={"smtp_user": "notify", "smtp_password": "s3cret"},
         relay="starttls"),
]  # fmt: skip

COMMAND_LINE = [
    Case("incident id with a slash", ("check", "--incident", "../42"), 3, "incident id '../42' "
         "must be letters, digits, '.', '_' or '-'; name the manifest incidents/<ID>.toml "
         "accordingly"),
    Case("incident id with a space", ("send", "--incident", "4 2", "--yes"), 3, "incident id "
         "'4 2' must be letters, digits, '.', '_' or '-'; name the manifest incidents/<ID>.toml "
         "accordingly"),
    Case("limit of zero", ("send", "--incident", "42", "--limit", "0"), 2, "Invalid value for "
         "'--limit': 0 is not in the range x>=1."),
    Case("limit not a number", ("send", "--incident", "42", "--limit", "ten"), 2, "Invalid value "
         "for '--limit': 'ten' is not a valid integer range."),
    Case("report format unknown", ("report", "--incident", "42", "--format", "pdf"), 2,
         "Invalid value for '--format': 'pdf' is not one of 'csv', 'html'."),
    Case("report into a missing folder", ("report", "--incident", "42", "-o", "out/r.csv"), 3,
         "cannot write out/r.csv: folder out does not exist; create the folder or choose another "
         "path"),
    Case("preview folder under a file", ("send", "--incident", "42", "--dry-run",
                                         "--preview-dir", "{root}/data/affected.csv/p"), 3,
         "cannot write previews to {root}/data/affected.csv/p: it, or a folder above it, is a "
         "file; choose another --preview-dir"),
    Case("ledger copy to a garbage URL", ("ledger", "copy", "--to", "garbage://x"), 3,
         "--to=garbage://x: the ledger lives in SQLite (one machine) or PostgreSQL (several); use "
         "a sqlite:// or postgresql:// URL"),
    Case("resend before any send", ("resend", "--incident", "42"), 3, "nothing has been sent for "
         "incident 42 from this workspace, so there is nothing to re-send; run notify send "
         "--incident 42 first"),
    Case("bounces before any send", ("bounces", "--incident", "42", "--mbox", "{root}/none"), 3,
         "nothing has been sent for incident 42 from this workspace, so no bounce can be "
         "matched; run notify send --incident 42 first"),
    Case("bounces from two places", ("bounces", "--incident", "42", "--imap", "--mbox", "x"), 2,
         "give exactly one of --mbox FILE, --maildir DIR or --imap"),
    Case("status interval of zero", ("status", "--incident", "42", "--interval", "0"), 2,
         "Invalid value for '--interval': 0.0 is not in the range x>=0.2."),
    Case("test send to a non-address", ("send", "--incident", "42", "--to", "me@@example"), 2,
         "Invalid value for '--to': 'me@@example' is not an address (The part after the @-sign "
         "contains invalid characters: '@'); give one, like you@example.com"),
    Case("an option that does not exist", ("send", "--incident", "42", "--yes-please"), 2,
         "No such option '--yes-please'."),
]  # fmt: skip

AFTER_A_SEND = [
    Case("report into a missing folder after a send", ("report", "--incident", "42", "-o",
         "{root}/no/r.html", "--format", "html"), 3, "cannot write {root}/no/r.html: folder "
         "{root}/no does not exist; create the folder or choose another path", sent=True),
    Case("resend with a schedule word after a send", ("resend", "--incident", "42"), 3,
         "NOTIFY_RESEND_SCHEDULE: '2 days' is not a duration like 30m, 4h or 2d; fix it in .env",
         env={"resend_schedule": "2 days"}, sent=True),
    Case("bounces from a mailbox that is not there", ("bounces", "--incident", "42",
         "--maildir", "{root}/no-such-maildir"), 3, "{root}/no-such-maildir: no such Maildir; "
         "check the path given to --maildir", sent=True),
    Case("ledger copy into a folder", ("ledger", "copy", "--to", "{root}/data"), 3,
         "cannot open the ledger at sqlite+pysqlite:///{root}/data (unable to open database "
         "file); check --to", sent=True),
]  # fmt: skip

CASES = EXPORTS + MANIFESTS + TEMPLATES + SETTINGS + COMMAND_LINE + AFTER_A_SEND


def ledger_rows(root: Path) -> dict[str, list[tuple[object, ...]]] | None:
    """Every row of the workspace's ledger, or None when there is none."""
    path = root / ".notify" / "ledger.sqlite3"
    if not path.exists():
        return None
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        tables = [
            r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        rows = {t: sorted(connection.execute(f'SELECT * FROM "{t}"'), key=repr) for t in tables}
    connection.close()
    return rows


def prepare(workspace, relay, case: Case | None = None) -> None:
    """.env pointing at the relay, then the case's settings and files on top."""
    settings = {
        "smtp_host": "127.0.0.1",
        "smtp_port": str(relay.port),
        "smtp_security": "none",
        "retry_delay": "0.05",
        **(case.env if case else {}),
    }
    workspace.env(**{k: v for k, v in settings.items() if v is not None})
    for name, content in (case.files if case else {}).items():
        path = workspace.root / name
        if content is None:
            path.unlink()
        else:
            workspace.write(name, content() if callable(content) else content)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_stops_with_one_line_and_sends_nothing(
    case: Case, workspace, run_cli, smtp_server, smtp_starttls_server
) -> None:
    relay = smtp_starttls_server if case.relay == "starttls" else smtp_server
    if case.sent:
        prepare(workspace, smtp_server)
        assert run_cli(workspace, *SEND).exit_code == 0
        smtp_server.reset()
    prepare(workspace, relay, case)
    root = str(workspace.root)
    args = [arg.replace("{root}", root) for arg in case.args]
    before = ledger_rows(workspace.root)
    result = run_cli(workspace, *args)
    expected = "Error: " + case.line.replace("{root}", root).replace("{port}", str(relay.port))
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert (result.exit_code, errors) == (case.code, [expected]), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    if case.code == 2:  # click's own usage errors say where to read more
        assert "--help" in result.stderr
    assert smtp_server.messages == [] and smtp_starttls_server.messages == []
    assert ledger_rows(workspace.root) == before


def test_the_corpus_covers_every_kind_of_input() -> None:
    sizes = {"exports": len(EXPORTS), "manifests": len(MANIFESTS), "templates": len(TEMPLATES),
             "settings": len(SETTINGS), "command line": len(COMMAND_LINE)}  # fmt: skip
    assert min(sizes.values()) >= 8 and sum(sizes.values()) >= 80, sizes
    assert len({case.id for case in CASES}) == len(CASES)

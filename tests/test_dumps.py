"""SQL dumps written by hand in each tool's dialect: the parts real dumps rarely show, and errors.

Dumps made by the real tools from live databases are in test_sql_sources.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest

from notify.errors import SourceError
from notify.models import ROW_COLUMN, SOURCE_COLUMN, SourceSpec
from notify.sources.load import load_sources

QUERY = "SELECT * FROM customers ORDER BY id"

PG_DUMP = textwrap.dedent(
    """\
    --
    -- PostgreSQL database dump
    --

    \\restrict abc123

    SET standard_conforming_strings = on;
    SELECT pg_catalog.set_config('search_path', '', false);

    CREATE FUNCTION public.audit() RETURNS trigger
        LANGUAGE plpgsql
        AS $$
    BEGIN
      INSERT INTO public.log VALUES (1);
      RETURN NEW;
    END;
    $$;

    CREATE TABLE public.customers (
        id integer NOT NULL,
        name character varying(100) COLLATE pg_catalog."default",
        amount numeric(10,2) DEFAULT 0.00,
        vip boolean,
        "Signed Up" timestamp without time zone,
        CONSTRAINT positive CHECK ((amount >= (0)::numeric))
    );

    ALTER TABLE public.customers OWNER TO crm;
    CREATE SEQUENCE public.customers_id_seq AS integer START WITH 1 NO MINVALUE CACHE 1;

    COPY public.customers (id, name, amount, vip, "Signed Up") FROM stdin;
    1\tZoë\\tTab\t49.90\tt\t2024-03-01 10:30:00
    2\tback\\\\slash\\nnewline\t\\N\tf\t\\N
    \\.

    INSERT INTO public.customers OVERRIDING SYSTEM VALUE VALUES (3, 'It''s', 0.50, true, NULL);

    \\unrestrict abc123
    """
)

MYSQL_DUMP = r"""/*M!999999\- enable the sandbox mode */
-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB
/*!40101 SET NAMES utf8mb4 */;
DROP TABLE IF EXISTS `customers`;
CREATE TABLE `customers` (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `name` varchar(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT 'x;y',
  `amount` decimal(10,2) unsigned DEFAULT NULL COMMENT 'the (refund); amount',
  `kind` enum('a','b') DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `name` (`name`)
) ENGINE=InnoDB AUTO_INCREMENT=3 DEFAULT CHARSET=utf8mb4;
LOCK TABLES `customers` WRITE;
/*!40000 ALTER TABLE `customers` DISABLE KEYS */;
INSERT INTO `customers` VALUES (1,'O\'Brien \"Pat\"',49.90,'a'),
(2,'back\\slash\nnewline\0',-0.50,NULL);
INSERT IGNORE INTO `customers` VALUES (3,_utf8mb4'new',1.00,'b');
INSERT INTO customers (id, name, amount, kind) VALUES (4, "dq ""x"" 12", 2.00, 'a""b');
/*!40000 ALTER TABLE `customers` ENABLE KEYS */;
UNLOCK TABLES;
DELIMITER ;;
/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER t AFTER INSERT
ON customers FOR EACH ROW BEGIN
  INSERT INTO log VALUES (NEW.id);
END */;;
DELIMITER ;
"""


def write(root: Path, relative: str, content: str | bytes) -> str:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return relative


def load(root: Path, **spec: str) -> pd.DataFrame:
    return load_sources([SourceSpec(**spec)], root=root, incident_id="42", environ={})


def refused(root: Path, **spec: str) -> str:
    with pytest.raises(SourceError) as info:
        load(root, **spec)
    return str(info.value)


def test_pg_dump_with_copy_functions_and_psql_commands(tmp_path: Path) -> None:
    frame = load(tmp_path, path=write(tmp_path, "data/pg.sql", PG_DUMP), query=QUERY)
    assert frame.to_dict("records") == [
        {"id": "1", "name": "Zoë\tTab", "amount": "49.90", "vip": "1",
         "Signed Up": "2024-03-01 10:30:00", ROW_COLUMN: 1, SOURCE_COLUMN: "data/pg.sql"},
        {"id": "2", "name": "back\\slash\nnewline", "amount": "", "vip": "0", "Signed Up": "",
         ROW_COLUMN: 2, SOURCE_COLUMN: "data/pg.sql"},
        {"id": "3", "name": "It's", "amount": "0.50", "vip": "1", "Signed Up": "",
         ROW_COLUMN: 3, SOURCE_COLUMN: "data/pg.sql"},
    ]  # fmt: skip


def test_pg_dump_booleans_and_numbers_still_compare_as_the_database_would(tmp_path: Path) -> None:
    path = write(tmp_path, "data/pg.sql", PG_DUMP)
    query = "SELECT id FROM customers WHERE vip AND id = :incident - 41 AND amount > 10"
    assert load(tmp_path, path=path, query=query)["id"].tolist() == ["1"]


def test_mysqldump_escapes_backticks_and_conditional_comments(tmp_path: Path) -> None:
    frame = load(tmp_path, path=write(tmp_path, "data/my.sql", MYSQL_DUMP), query=QUERY)
    assert frame.drop(columns=[ROW_COLUMN, SOURCE_COLUMN]).values.tolist() == [
        ["1", 'O\'Brien "Pat"', "49.90", "a"],
        ["2", "back\\slash\nnewline", "-0.50", ""],
        ["3", "new", "1.00", "b"],
        ["4", 'dq "x" 12', "2.00", 'a""b'],
    ]


def test_a_postgres_column_may_be_named_like_a_mysql_key(tmp_path: Path) -> None:
    dump = (
        "-- PostgreSQL database dump\n"
        "CREATE TABLE public.settings (key text, index integer, PRIMARY KEY (key));\n"
        "INSERT INTO public.settings VALUES ('a', 1);\n"
    )
    path = write(tmp_path, "data/pg.sql", dump)
    frame = load(tmp_path, path=path, query="SELECT * FROM settings")
    assert frame.drop(columns=[ROW_COLUMN, SOURCE_COLUMN]).to_dict("records") == [
        {"key": "a", "index": "1"}
    ]


def test_sqlite_dump_runs_as_written(tmp_path: Path) -> None:
    dump = textwrap.dedent(
        """\
        PRAGMA foreign_keys=OFF;
        BEGIN TRANSACTION;
        CREATE TABLE customers(id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT, amount);
        INSERT INTO customers VALUES(1,'z@x.com',49.9);
        INSERT INTO customers VALUES(2,'semi;colon@x.com',NULL);
        DELETE FROM sqlite_sequence;
        INSERT INTO sqlite_sequence VALUES('customers',2);
        CREATE INDEX by_email ON customers(email);
        COMMIT;
        """
    )
    frame = load(tmp_path, path=write(tmp_path, "data/lite.sql", dump), query=QUERY)
    assert frame.drop(columns=[ROW_COLUMN, SOURCE_COLUMN]).values.tolist() == [
        ["1", "z@x.com", "49.9"],
        ["2", "semi;colon@x.com", ""],
    ]


def test_incident_is_bound_in_the_query(tmp_path: Path) -> None:
    path = write(tmp_path, "data/pg.sql", PG_DUMP)
    frame = load(tmp_path, path=path, query="SELECT name FROM customers WHERE id = :incident - 39")
    assert frame["name"].tolist() == ["It's"]


@pytest.mark.parametrize(
    "dump, message",
    [
        (
            "CREATE TABLE t (a int);\n\nINSERT INTO t VALUES (1);\nINSERT INTO gone VALUES (2);\n",
            "data/bad.sql line 4: no such table: gone",
        ),
        (
            "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\nINSERT INTO t VALUES ('cut\n",
            "data/bad.sql line 3: the dump ends inside a statement (is it cut short?)",
        ),
        (
            "-- PostgreSQL database dump\nCREATE TABLE public.t (a integer, b text);\n"
            "COPY public.t (a, b) FROM stdin;\n1\tx\n2\n\\.\n",
            "data/bad.sql line 5: expected 2 values, found 1",
        ),
        (
            "-- PostgreSQL database dump\nCREATE TABLE public.t (a integer);\n"
            "COPY public.t (a) FROM stdin;\n1\n",
            "data/bad.sql line 3: COPY data never ends with a \\. line",
        ),
    ],
)
def test_a_bad_dump_names_its_line(tmp_path: Path, dump: str, message: str) -> None:
    path = write(tmp_path, "data/bad.sql", dump)
    assert refused(tmp_path, path=path, query="SELECT * FROM t") == (
        f"{message}; the dump is damaged or not one notify reads (sqlite3 .dump, pg_dump, "
        "mysqldump); dump it again"
    )


def test_a_dump_that_is_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "data/bad.sql", b"CREATE TABLE t (a text);\n-- \xff\n")
    assert refused(tmp_path, path=path, query="SELECT * FROM t") == (
        "data/bad.sql: byte 0xFF at offset 28 (line 2) is not UTF-8; dump the database again "
        "with UTF-8 output"
    )


def test_a_dump_without_a_query_lists_its_tables(tmp_path: Path) -> None:
    path = write(tmp_path, "data/pg.sql", PG_DUMP)
    assert refused(tmp_path, path=path) == (
        'data/pg.sql is a database; add query = "SELECT ... FROM <table>" to [source] '
        "(tables: customers)"
    )
    assert refused(tmp_path, path=path, query="SELECT * FROM orders") == (
        "data/pg.sql: the query failed: no such table: orders; fix [source] query"
    )

"""Manifests: the shipped shape loads, and each malformed one gives its own one line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from notify.errors import ManifestError, NotifyError, WorkspaceError
from notify.manifest import Manifest, load_manifest
from notify.models import SourceSpec
from notify.workspace import Workspace
from tests.conftest import WorkspaceFactory

WHERE = "incidents/42.toml"
HEAD = 'title = "Double charge"\ntemplate = "apology"\n'
SOURCE = '[source]\npath = "data/affected.csv"\n'
COLUMNS = '[columns]\nemail = "Email Address"\n'


def load(workspace: WorkspaceFactory, text: str, incident: str = "42") -> Manifest:
    workspace.write(f"incidents/{incident}.toml", textwrap.dedent(text))
    return load_manifest(Workspace.open(workspace.root), incident)


def refused(workspace: WorkspaceFactory, text: str, kind: type[NotifyError] = ManifestError) -> str:
    with pytest.raises(kind) as caught:
        load(workspace, text)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_default_manifest_loads(workspace: WorkspaceFactory) -> None:
    manifest = load_manifest(Workspace.open(workspace.root), "42")
    assert manifest.incident_id == "42"
    assert manifest.path == workspace.root.resolve() / "incidents" / "42.toml"
    assert manifest.title == "Duplicate charge on March renewals"
    assert manifest.template == "apology"
    assert manifest.sender == "Acme Support <support@acme.example>"
    assert manifest.reply_to == "help@acme.example"
    assert manifest.sources == [SourceSpec(path="data/affected.csv")]
    assert manifest.columns == {"email": "Email Address", "name": "Customer", "phone": "Phone"}
    assert manifest.items == {"order_id": "order_id", "amount": "amount"}
    assert manifest.facts == {"refund_eta": "5 business days"}


def test_the_smallest_manifest_has_no_sender_grouping_or_facts(
    workspace: WorkspaceFactory,
) -> None:
    manifest = load(workspace, HEAD + SOURCE + COLUMNS)
    assert (manifest.sender, manifest.reply_to) == (None, None)
    assert (manifest.items, manifest.facts) == ({}, {})


def test_values_are_trimmed(workspace: WorkspaceFactory) -> None:
    manifest = load(
        workspace,
        'title = "  Double charge "\ntemplate = " apology"\nfrom = "  "\n'
        + SOURCE
        + '[columns]\nemail = " Email Address "\n',
    )
    assert (manifest.title, manifest.template) == ("Double charge", "apology")
    assert manifest.sender is None  # blank means absent: NOTIFY_FROM applies
    assert manifest.columns == {"email": "Email Address"}


# --- the file ------------------------------------------------------------------------


def test_a_missing_manifest_lists_the_known_incidents(workspace: WorkspaceFactory) -> None:
    workspace.write("incidents/2024-07.toml", "")
    with pytest.raises(WorkspaceError) as caught:
        load_manifest(Workspace.open(workspace.root), "43")
    assert str(caught.value) == (
        "incidents/43.toml not found; known incidents: 2024-07, 42; check --incident"
    )


def test_a_missing_manifest_with_no_incidents_says_how_to_start(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError) as caught:
        load_manifest(Workspace.open(tmp_path), "42")
    assert str(caught.value) == (
        f"incidents/42.toml not found; create incidents/<ID>.toml in {tmp_path.resolve()} "
        "or pass --workspace"
    )


def test_an_unsafe_incident_id_is_refused(workspace: WorkspaceFactory) -> None:
    with pytest.raises(WorkspaceError) as caught:
        load_manifest(Workspace.open(workspace.root), "../42")
    assert str(caught.value) == (
        "incident id '../42' must be letters, digits, '.', '_' or '-'; "
        "name the manifest incidents/<ID>.toml accordingly"
    )


def test_bad_toml_names_the_file_and_place(workspace: WorkspaceFactory) -> None:
    assert refused(workspace, 'title = "Double charge\ntemplate = "apology"\n') == (
        "incidents/42.toml: not valid TOML (Illegal character '\\n' (at line 1, column 23)); "
        "fix the file"
    )


def test_a_manifest_that_is_not_utf8_is_bad_toml(workspace: WorkspaceFactory) -> None:
    workspace.write("incidents/42.toml", 'title = "Réclamation"\n'.encode("latin-1"))
    with pytest.raises(ManifestError) as caught:
        load_manifest(Workspace.open(workspace.root), "42")
    assert str(caught.value).startswith("incidents/42.toml: not valid TOML (")
    assert str(caught.value).endswith("); fix the file")


# --- top level -----------------------------------------------------------------------


def test_an_unknown_key_is_named_with_the_ones_expected(workspace: WorkspaceFactory) -> None:
    assert refused(workspace, 'titel = "x"\n' + HEAD + SOURCE + COLUMNS) == (
        "incidents/42.toml: unknown key 'titel'; expected one of "
        "attachments, columns, facts, from, group, reply_to, source, template, title"
    )


@pytest.mark.parametrize("key", ["title", "template"])
def test_title_and_template_are_required(workspace: WorkspaceFactory, key: str) -> None:
    head = "\n".join(line for line in HEAD.splitlines() if not line.startswith(key)) + "\n"
    assert refused(workspace, head + SOURCE + COLUMNS) == (
        f'incidents/42.toml: {key} is missing; add {key} = "..." at the top'
    )


@pytest.mark.parametrize("key", ["title", "from", "reply_to"])
def test_a_string_key_must_be_a_string(workspace: WorkspaceFactory, key: str) -> None:
    head = HEAD if key != "title" else 'template = "apology"\n'
    assert refused(workspace, f"{key} = 42\n" + head + SOURCE + COLUMNS) == (
        f'incidents/42.toml: {key} must be a string in quotes, like {key} = "..."'
    )


def test_facts_must_be_a_table(workspace: WorkspaceFactory) -> None:
    assert refused(workspace, HEAD + 'facts = "soon"\n' + SOURCE + COLUMNS) == (
        "incidents/42.toml: facts must be a table, written [facts]"
    )


# --- [columns] -----------------------------------------------------------------------


def test_columns_without_email_is_refused(workspace: WorkspaceFactory) -> None:
    assert refused(workspace, HEAD + SOURCE + '[columns]\nname = "Customer"\n') == (
        'incidents/42.toml: [columns] has no email; add email = "<column with the address>"'
    )


def test_no_columns_table_at_all_is_refused_the_same_way(workspace: WorkspaceFactory) -> None:
    assert refused(workspace, HEAD + SOURCE) == (
        'incidents/42.toml: [columns] has no email; add email = "<column with the address>"'
    )


@pytest.mark.parametrize("value", ["3", '""', '"  "', '["Customer"]'])
def test_a_column_must_be_named_by_a_string(workspace: WorkspaceFactory, value: str) -> None:
    assert refused(workspace, HEAD + SOURCE + COLUMNS + f"name = {value}\n") == (
        'incidents/42.toml: [columns] name must name a column, like name = "..."'
    )


# --- [source] ------------------------------------------------------------------------


def test_a_missing_source_is_refused(workspace: WorkspaceFactory) -> None:
    assert refused(workspace, HEAD + COLUMNS) == (
        'incidents/42.toml: [source] is missing; add [source] path = "data/....csv"'
    )


def test_a_source_with_both_path_and_url_is_refused(workspace: WorkspaceFactory) -> None:
    source = '[source]\npath = "data/a.csv"\nurl = "sqlite:///crm.db"\nquery = "SELECT 1"\n'
    assert refused(workspace, HEAD + source + COLUMNS) == (
        "incidents/42.toml: [source] needs exactly one of path or url (with query or query_file)"
    )


def test_a_source_with_neither_path_nor_url_is_refused(workspace: WorkspaceFactory) -> None:
    assert refused(workspace, HEAD + '[source]\nencoding = "latin-1"\n' + COLUMNS) == (
        "incidents/42.toml: [source] needs exactly one of path or url (with query or query_file)"
    )


def test_a_url_source_needs_a_query(workspace: WorkspaceFactory) -> None:
    assert refused(workspace, HEAD + '[source]\nurl = "sqlite:///crm.db"\n' + COLUMNS) == (
        "incidents/42.toml: [source] url needs query or query_file"
    )


def test_a_url_source_with_a_query_loads(workspace: WorkspaceFactory) -> None:
    source = '[source]\nurl = "postgresql://crm@db/crm"\nquery_file = "queries/affected.sql"\n'
    manifest = load(workspace, HEAD + source + COLUMNS)
    assert manifest.sources == [
        SourceSpec(url="postgresql://crm@db/crm", query_file="queries/affected.sql")
    ]


def test_an_unknown_source_key_is_named(workspace: WorkspaceFactory) -> None:
    assert refused(workspace, HEAD + '[source]\nfile = "data/a.csv"\n' + COLUMNS) == (
        "incidents/42.toml: [source] has unknown key 'file'; "
        "expected delimiter, encoding, path, query, query_file, sheet, url"
    )


def test_source_values_must_be_strings(workspace: WorkspaceFactory) -> None:
    source = '[source]\npath = "data/a.csv"\ndelimiter = 59\n'
    assert refused(workspace, HEAD + source + COLUMNS) == (
        "incidents/42.toml: every [source] value must be a string in quotes"
    )


def test_source_must_be_a_table(workspace: WorkspaceFactory) -> None:
    assert refused(workspace, HEAD + 'source = "data/a.csv"\n' + COLUMNS) == (
        "incidents/42.toml: [source] must be a table"
    )


def test_a_source_list_keeps_its_order_and_options(workspace: WorkspaceFactory) -> None:
    sources = textwrap.dedent(
        """\
        [[source]]
        path = "data/eu.csv"
        encoding = "cp1252"
        delimiter = ";"

        [[source]]
        path = "data/us.xlsx"
        sheet = "Affected"
        """
    )
    manifest = load(workspace, HEAD + COLUMNS + sources)
    assert manifest.sources == [
        SourceSpec(path="data/eu.csv", encoding="cp1252", delimiter=";"),
        SourceSpec(path="data/us.xlsx", sheet="Affected"),
    ]


def test_each_entry_of_a_source_list_is_checked(workspace: WorkspaceFactory) -> None:
    sources = '[[source]]\npath = "data/eu.csv"\n\n[[source]]\nurl = "sqlite:///crm.db"\n'
    assert refused(workspace, HEAD + COLUMNS + sources) == (
        "incidents/42.toml: [source] url needs query or query_file"
    )


def test_an_empty_source_list_is_refused(workspace: WorkspaceFactory) -> None:
    assert refused(workspace, HEAD + "source = []\n" + COLUMNS) == (
        'incidents/42.toml: [[source]] is empty; add [[source]] path = "data/....csv"'
    )


# --- [group] -------------------------------------------------------------------------


def test_items_as_a_list_name_fields_after_their_columns(workspace: WorkspaceFactory) -> None:
    manifest = load(
        workspace, HEAD + SOURCE + COLUMNS + '[group]\nitems = ["order_id", " Amount "]\n'
    )
    assert manifest.items == {"order_id": "order_id", "Amount": "Amount"}


def test_items_as_a_table_map_fields_to_columns(workspace: WorkspaceFactory) -> None:
    group = '[group.items]\norder = "Order No."\ntotal = " Amount (EUR) "\n'
    manifest = load(workspace, HEAD + SOURCE + COLUMNS + group)
    assert manifest.items == {"order": "Order No.", "total": "Amount (EUR)"}


def test_an_empty_items_list_groups_nothing(workspace: WorkspaceFactory) -> None:
    assert load(workspace, HEAD + SOURCE + COLUMNS + "[group]\nitems = []\n").items == {}


@pytest.mark.parametrize("items", ['"order_id"', "[1, 2]", '["order_id", ""]', "42"])
def test_items_of_the_wrong_shape_are_refused(workspace: WorkspaceFactory, items: str) -> None:
    assert refused(workspace, HEAD + SOURCE + COLUMNS + f"[group]\nitems = {items}\n") == (
        'incidents/42.toml: [group] items must list columns, like items = ["order_id", "amount"]'
    )


def test_group_must_be_a_table(workspace: WorkspaceFactory) -> None:
    assert refused(workspace, HEAD + 'group = ["order_id"]\n' + SOURCE + COLUMNS) == (
        "incidents/42.toml: group must be a table, written [group]"
    )

"""Cleaning: trim, validate, merge by address only, and flag look-alikes without merging."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from notify.cleaning.clean import clean, resolve_columns
from notify.cleaning.lookalikes import _one_edit, find_lookalikes
from notify.errors import SourceError
from notify.models import ROW_COLUMN, SOURCE_COLUMN, CleanResult, LookAlike, Recipient, Reject

SOURCE = "data/affected.csv"
HEADER = ("Customer", "Email Address", "Phone", "order_id", "amount")
COLUMNS = {"email": "Email Address", "name": "Customer", "phone": "Phone"}
ITEMS = {"order_id": "order_id", "amount": "amount"}


def export(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> pd.DataFrame:
    """A frame shaped like a source's: strings, plus each row's CSV line and source."""
    frame = pd.DataFrame([list(row) for row in rows], columns=list(header), dtype=str)
    frame[ROW_COLUMN] = range(2, len(frame) + 2)
    frame[SOURCE_COLUMN] = SOURCE
    return frame


def run(rows: Sequence[Sequence[str]], **mapping: dict[str, str]) -> CleanResult:
    return clean(
        export(rows),
        columns=mapping.get("columns", COLUMNS),
        items=mapping.get("items", ITEMS),
        where="incidents/42.toml",
    )


def by_email(recipients: Sequence[Recipient]) -> dict[str, Recipient]:
    return {r.email: r for r in recipients}


# --- merging -------------------------------------------------------------------------


def test_rows_with_the_same_address_merge_whatever_the_case_and_spacing() -> None:
    result = run(
        [
            ["Ann Lee", "ann@example.com", "+1 555 0001", "A-1", "49.00"],
            ["Bob Stone", "bob@example.com", "", "A-2", "19.00"],
            ["Ann Lee", "  ANN@Example.COM ", "+1 555 0001", "A-3", "5.00"],
        ]
    )
    assert [r.key for r in result.recipients] == ["ann@example.com", "bob@example.com"]
    ann = result.recipients[0]
    assert ann.rows == [2, 4]
    assert ann.first_row == 2
    assert ann.source == SOURCE
    assert ann.items == [
        {"order_id": "A-1", "amount": "49.00"},
        {"order_id": "A-3", "amount": "5.00"},
    ]
    assert result.rows_read == 3
    assert result.duplicates_merged == 1
    assert result.rejects == []


def test_items_keep_source_order_and_rows_list_every_merged_row() -> None:
    rows = [
        ["Ann", "ann@example.com", "", "Z-9", "1.00"],
        ["Bob", "bob@example.com", "", "B-1", "2.00"],
        ["Ann", "Ann@example.com", "", "A-1", "3.00"],
        ["Ann", "ann@EXAMPLE.com", "", "M-5", "4.00"],
    ]
    ann = by_email(run(rows).recipients)["ann@example.com"]
    assert [item["order_id"] for item in ann.items] == ["Z-9", "A-1", "M-5"]
    assert ann.rows == [2, 4, 5]


def test_first_non_empty_field_wins_and_empty_values_are_left_out() -> None:
    rows = [
        ["", "ann@example.com", "", "A-1", ""],
        ["Ann Lee", "ann@example.com", "+1 555 0001", "A-2", "5.00"],
        ["Ann L.", "ann@example.com", "+1 555 9999", "A-3", "6.00"],
    ]
    (ann,) = run(rows).recipients
    assert ann.fields == {"name": "Ann Lee", "phone": "+1 555 0001", "email": "ann@example.com"}
    assert ann.items[0] == {"order_id": "A-1"}  # the empty amount is absent, not ""


def test_the_address_to_send_to_is_the_first_rows_with_a_normalised_domain() -> None:
    rows = [
        ["Ann", " Ann.Lee@EXAMPLE.com", "", "A-1", "1"],
        ["Ann", "ann.lee@example.com", "", "A-2", "1"],
    ]
    (ann,) = run(rows).recipients
    assert ann.key == "ann.lee@example.com"
    assert ann.email == "Ann.Lee@example.com"
    assert ann.fields["email"] == ann.email


def test_fields_and_values_are_trimmed_and_invisible_characters_removed() -> None:
    rows = [
        ["\ufeffAnn\u200b Lee\u00a0", "\u200bann@exa\u200cmple.com\u00a0", " 555 ", "A-1", "1"],
        ["Ann Lee", "\u2060ann@example.com", "", "\u00a0A-2\u200d", "2"],
    ]
    result = run(rows)
    assert result.rejects == []
    (ann,) = result.recipients
    assert ann.email == "ann@example.com"
    assert ann.fields["name"] == "Ann Lee"
    assert ann.fields["phone"] == "555"
    assert [item["order_id"] for item in ann.items] == ["A-1", "A-2"]


def test_straße_and_strasse_are_two_recipients() -> None:
    rows = [["A", "straße@example.de", "", "1", "1"], ["B", "strasse@example.de", "", "2", "2"]]
    assert len(run(rows).recipients) == 2


# --- rejects -------------------------------------------------------------------------


def test_invalid_addresses_become_rejects_with_row_column_value_and_reason() -> None:
    rows = [
        ["Ann", "ann@example.com", "", "A-1", "1"],
        ["Bob", " bob@@example.com ", "", "A-2", "1"],
        ["Cy", "", "", "A-3", "1"],
        ["Di", " \u200b\u00a0", "", "A-4", "1"],
        ["Ed", "ed at example.com", "", "A-5", "1"],
    ]
    result = run(rows)
    assert [r.email for r in result.recipients] == ["ann@example.com"]
    bob, cy, di, ed = result.rejects
    assert (bob.source, bob.row, bob.column, bob.value) == (
        SOURCE,
        3,
        "Email Address",
        "bob@@example.com",
    )
    assert bob.reason.startswith("not a valid address: ")
    assert "@" in bob.reason.removeprefix("not a valid address: ")
    assert cy == Reject(SOURCE, 4, "Email Address", "", "no address")
    assert di == Reject(SOURCE, 5, "Email Address", "", "no address")
    assert ed.row == 6 and ed.reason.startswith("not a valid address: ")
    assert result.duplicates_merged == 0


def test_the_reject_column_is_the_exports_real_header() -> None:
    result = run([["A", "nope", "", "1", "1"]], columns={"email": "  email ADDRESS "})
    assert result.rejects[0].column == "Email Address"


def test_an_idn_domain_is_sent_in_its_ascii_form_and_merges_with_it() -> None:
    rows = [
        ["Zoë", "zoe@bücher.example", "", "A-1", "1"],
        ["Zoë", "zoe@xn--bcher-kva.example", "", "A-2", "1"],
        ["Zoë", "ZOE@BÜCHER.example", "", "A-3", "1"],
    ]
    (zoe,) = run(rows).recipients
    assert zoe.email == "zoe@xn--bcher-kva.example"
    assert zoe.fields["email"] == "zoe@xn--bcher-kva.example"
    assert zoe.rows == [2, 3, 4]


def test_a_row_without_group_columns_still_counts_as_one_item() -> None:
    rows = [["Ann", "ann@example.com", "", "A-1", "1"], ["Ann", "ann@example.com", "", "A-2", "1"]]
    (ann,) = run(rows, items={}).recipients
    assert ann.items == [{}, {}]


# --- columns -------------------------------------------------------------------------


def test_resolve_columns_forgives_case_and_spacing() -> None:
    available = ["Customer", "Email  Address", "order_id"]
    wanted = {"email": " email address ", "name": "CUSTOMER", "order": "Order_ID"}
    assert resolve_columns(available, wanted, where="w", section="columns") == {
        "email": "Email  Address",
        "name": "Customer",
        "order": "order_id",
    }


def test_an_exact_column_name_wins_over_a_folded_one() -> None:
    available = ["email ", "Email", "EMAIL"]
    assert resolve_columns(available, {"e": "Email"}, where="w", section="columns") == {
        "e": "Email"
    }
    assert resolve_columns(available, {"e": "email "}, where="w", section="columns") == {
        "e": "email "
    }


def test_a_misspelt_column_names_the_closest_one() -> None:
    with pytest.raises(SourceError) as caught:
        run(
            [["Ann", "ann@example.com", "", "A-1", "1"]],
            columns={"email": "Email Address", "name": "Custmer"},
        )
    assert str(caught.value) == (
        "incidents/42.toml [columns] name = 'Custmer': the export has no such column; "
        "closest: 'Customer'; fix the column name in [columns]"
    )
    assert caught.value.column == "Custmer"


def test_a_misspelt_group_column_names_its_section() -> None:
    with pytest.raises(SourceError) as caught:
        run([["Ann", "ann@example.com", "", "A-1", "1"]], items={"order": "order_no"})
    assert str(caught.value) == (
        "incidents/42.toml [group] order = 'order_no': the export has no such column; "
        "closest: 'order_id'; fix the column name in [group]"
    )


def test_a_column_like_nothing_lists_what_the_export_has() -> None:
    with pytest.raises(SourceError) as caught:
        resolve_columns(
            ["Customer", "Email Address"], {"email": "zzzz"}, where="m", section="columns"
        )
    assert str(caught.value) == (
        "m [columns] email = 'zzzz': the export has no such column; "
        "it has: 'Customer', 'Email Address'; fix the column name in [columns]"
    )


def test_the_bookkeeping_columns_are_not_offered_as_closest() -> None:
    with pytest.raises(SourceError) as caught:
        run([["Ann", "ann@example.com", "", "A-1", "1"]], columns={"email": "__row"})
    assert ROW_COLUMN not in str(caught.value)
    assert SOURCE_COLUMN not in str(caught.value)


# --- look-alikes ---------------------------------------------------------------------


def test_the_same_name_at_two_addresses_is_two_recipients_and_a_lookalike() -> None:
    rows = [
        ["Ann Lee", "ann@example.com", "", "A-1", "1"],
        ["ann  LEE", "lee.ann@work.example", "", "A-2", "1"],
    ]
    result = run(rows)
    assert len(result.recipients) == 2
    assert result.duplicates_merged == 0
    assert result.lookalikes == [
        LookAlike("ann@example.com", "lee.ann@work.example", "same name 'Ann Lee'")
    ]


def test_names_compare_without_accents_or_punctuation() -> None:
    rows = [
        ["Zoë O'Brien", "zoe@example.org", "", "A-1", "1"],
        ["zoe o brien", "zobrien@work.example", "", "A-2", "1"],
    ]
    (lookalike,) = run(rows).lookalikes
    assert lookalike.reason == 'same name "Zoë O\'Brien"'


def test_names_one_edit_apart_are_flagged_never_merged() -> None:
    rows = [
        ["Jon Smith", "jon.smith@example.com", "", "A-1", "1"],
        ["John Smith", "js1970@mail.example", "", "A-2", "1"],
    ]
    result = run(rows)
    assert len(result.recipients) == 2
    assert result.lookalikes == [
        LookAlike(
            "jon.smith@example.com",
            "js1970@mail.example",
            "similar names 'Jon Smith' and 'John Smith'",
        )
    ]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("mary@example.com", "marz@example.com"),  # substitution
        ("mary@example.com", "marry@example.com"),  # insertion
        ("marry@example.com", "mary@example.com"),  # deletion
        ("mary@example.com", "mray@example.com"),  # transposition
        ("mary@example.com", "mary@exampel.com"),  # transposition in the domain
    ],
)
def test_addresses_one_edit_apart_are_flagged_never_merged(first: str, second: str) -> None:
    rows = [["Alice Adams", first, "", "A-1", "1"], ["Bob Brown", second, "", "A-2", "1"]]
    result = run(rows)
    assert [r.email for r in result.recipients] == [first, second]
    assert result.lookalikes == [LookAlike(first, second, "addresses one edit apart")]


def test_different_people_are_not_lookalikes() -> None:
    rows = [
        ["Alice Adams", "mary@example.com", "", "A-1", "1"],
        ["Bob Brown", "mark@example.org", "", "A-2", "1"],  # two edits apart
        ["", "zed@example.net", "", "A-3", "1"],
        ["", "quinn@example.net", "", "A-4", "1"],  # two nameless recipients
    ]
    assert run(rows).lookalikes == []


def test_one_pair_similar_in_name_and_address_is_listed_once() -> None:
    rows = [
        ["Jon Smith", "jon@example.com", "", "A-1", "1"],
        ["John Smith", "john@example.com", "", "A-2", "1"],
    ]
    assert len(run(rows).lookalikes) == 1


# --- properties ----------------------------------------------------------------------

_locals = st.sampled_from(["ann", "Ann", "ANN", "an", "bob", "b.ob", "zoe", "Zoe"])
_domains = st.sampled_from(["example.com", "Example.COM", "example.org"])
_padding = st.sampled_from(["", " ", "  ", "\u200b", "\u00a0", "\ufeff", "\t"])


@st.composite
def _address_cell(draw: st.DrawFn) -> tuple[str, str | None]:
    """(the cell as an export might hold it, the normalised address or None if invalid)."""
    kind = draw(st.sampled_from(["valid", "valid", "valid", "empty", "garbage"]))
    if kind == "empty":
        return draw(_padding), None
    if kind == "garbage":
        return draw(st.sampled_from(["ann@@example.com", "nope", "a@b", "@example.com"])), None
    local, domain = draw(_locals), draw(_domains)
    cell = draw(_padding) + f"{local}@{domain}" + draw(_padding)
    return cell, f"{local}@{domain}".lower()


_rows = st.lists(st.tuples(_address_cell(), st.text(max_size=8), st.text(max_size=4)), max_size=25)


def _clean_generated(rows: list[tuple[tuple[str, str | None], str, str]]) -> CleanResult:
    frame = export(
        [[name, cell, "", order, ""] for (cell, _), name, order in rows],
    )
    return clean(frame, columns=COLUMNS, items=ITEMS)


@settings(max_examples=150, deadline=None)
@given(_rows)
def test_no_row_is_lost_without_a_reason(
    rows: list[tuple[tuple[str, str | None], str, str]],
) -> None:
    result = _clean_generated(rows)
    assert result.rows_read == len(rows)
    assert result.rows_read == len(result.rejects) + sum(len(r.rows) for r in result.recipients)
    accounted = [reject.row for reject in result.rejects]
    accounted += [row for recipient in result.recipients for row in recipient.rows]
    assert sorted(accounted) == list(range(2, len(rows) + 2))
    for reject in result.rejects:
        assert rows[reject.row - 2][0][1] is None
        assert reject.reason


@settings(max_examples=150, deadline=None)
@given(_rows)
def test_rows_share_a_recipient_exactly_when_their_addresses_are_equal(
    rows: list[tuple[tuple[str, str | None], str, str]],
) -> None:
    result = _clean_generated(rows)
    owner = {row: index for index, r in enumerate(result.recipients) for row in r.rows}
    expected = {index + 2: address for index, ((_, address), _, _) in enumerate(rows)}
    for row_a, owner_a in owner.items():
        for row_b, owner_b in owner.items():
            assert (owner_a == owner_b) == (expected[row_a] == expected[row_b])
    assert {r.key for r in result.recipients} == {a for a in expected.values() if a}


def _osa_distance(a: str, b: str) -> int:
    """Damerau-Levenshtein distance, optimal string alignment variant, the textbook way."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def test_the_reference_distance_is_right() -> None:
    assert _osa_distance("", "") == 0
    assert _osa_distance("abc", "abc") == 0
    assert _osa_distance("abc", "abd") == 1
    assert _osa_distance("abc", "acb") == 1
    assert _osa_distance("abc", "ab") == 1
    assert _osa_distance("ca", "abc") == 3  # OSA, not unrestricted Damerau-Levenshtein
    assert _osa_distance("kitten", "sitting") == 3


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="abc", max_size=6), st.text(alphabet="abc", max_size=6))
@example("ab", "ba")
@example("abcd", "acbd")
@example("abc", "ca")
@example("", "a")
def test_one_edit_agrees_with_the_reference_distance(a: str, b: str) -> None:
    assert _one_edit(a, b) == (_osa_distance(a, b) <= 1)
    assert _one_edit(a, b) == _one_edit(b, a)


def _recipient(address: str, name: str = "") -> Recipient:
    fields = {"email": address, **({"name": name} if name else {})}
    return Recipient(address, address, fields, [{}], [2], SOURCE)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ab.", min_size=1, max_size=4), unique=True, max_size=8))
def test_every_pair_of_addresses_one_edit_apart_is_flagged(locals_: list[str]) -> None:
    recipients = [_recipient(f"{local}@x.io") for local in locals_]
    flagged = {frozenset((la.first, la.second)) for la in find_lookalikes(recipients)}
    expected = {
        frozenset((a.key, b.key))
        for i, a in enumerate(recipients)
        for b in recipients[i + 1 :]
        if _osa_distance(a.key, b.key) == 1
    }
    assert flagged == expected


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.text(alphabet="ab ", min_size=1, max_size=5).filter(str.strip), min_size=2, max_size=6
    )
)
def test_every_pair_of_names_at_most_one_edit_apart_is_flagged(names: list[str]) -> None:
    recipients = [
        _recipient(f"person{n:03d}{'q' * n}@far{n}.example", name) for n, name in enumerate(names)
    ]
    # Bounded listing: every recipient with a name at most one edit from another's is
    # in at least one listed pair, and every listed pair really is that close.
    pairs = find_lookalikes(recipients)
    folded = {r.email: " ".join(name.split()) for r, name in zip(recipients, names, strict=True)}
    flagged = {address for la in pairs for address in (la.first, la.second)}
    expected = {
        a.email
        for a in recipients
        for b in recipients
        if a is not b and _osa_distance(folded[a.email], folded[b.email]) <= 1
    }
    assert flagged == expected
    assert all(_osa_distance(folded[la.first], folded[la.second]) <= 1 for la in pairs)


_LOCAL = st.text(alphabet="abcXYZ09.+-_'", min_size=1, max_size=12)
_LABEL = st.text(alphabet="abcxyzXY09-", min_size=1, max_size=10)


@given(
    st.one_of(
        st.builds(
            lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}",
            _LOCAL,
            st.lists(_LABEL, min_size=1, max_size=3),
            st.sampled_from(["com", "ORG", "example", "test", "local", "io", "x1", "c"]),
        ),
        st.text(alphabet="ab@.-x ", max_size=14),
    )
)
def test_the_fast_path_agrees_with_email_validator(raw: str) -> None:
    """plain_address either defers (None) or gives exactly email-validator's answer."""
    from email_validator import EmailNotValidError, validate_email

    from notify.cleaning.addresses import plain_address

    fast = plain_address(raw)
    if fast is None:
        return
    try:
        valid = validate_email(raw, check_deliverability=False)
    except EmailNotValidError as exc:
        raise AssertionError(f"fast path accepted {raw!r}, the validator says {exc}") from exc
    assert fast == (valid.ascii_email or valid.normalized)


def test_the_fast_path_takes_everyday_addresses() -> None:
    from notify.cleaning.addresses import plain_address

    assert plain_address("Maria.Lopez@Example.COM") == "Maria.Lopez@example.com"
    assert plain_address("bob@@example.com") is None
    assert plain_address("x@münchen.de") is None  # IDN: the validator's job
    assert plain_address("a@host.test") is None  # special-use: the validator refuses it


# --- line breaks in header fields ----------------------------------------------------


def test_a_line_break_in_a_header_field_is_listed_for_review_and_kept() -> None:
    result = clean(
        export(
            [
                ["Ann\r\nLee", "ann@example.com", "+1\t555", "A-1", "1.00"],
                ["Bob", "bob@example.com", "555\n0002", "A-2\n", "2.00"],
                ["Cy", "cy@example.com", "", "A\u2028-3", "3.00"],
                ["Di\nNa", "di@example.com", "", "A-4", "4\n.00"],
            ]
        ),
        columns=COLUMNS,
        items=ITEMS,
        header_fields={"name", "phone", "order_id"},
    )
    review = [(r.email, r.kind, r.detail, r.row) for r in result.review]
    tail = ": shown as one space in the header (the body keeps it)"
    assert review == [
        ("ann@example.com", "line break", f"line break or tab in name, phone{tail}", 2),
        ("bob@example.com", "line break", f"line break or tab in phone{tail}", 3),
        ("cy@example.com", "line break", f"line break or tab in order_id{tail}", 4),
        ("di@example.com", "line break", f"line break or tab in name{tail}", 5),
    ]
    assert by_email(result.recipients)["ann@example.com"].fields["name"] == "Ann\r\nLee"


def test_only_the_name_goes_into_a_header_unless_the_subject_reads_more() -> None:
    result = run([["Ann", "ann@example.com", "555\n0001", "A-1", "1.00"]])
    assert result.review == []

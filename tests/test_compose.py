"""Compose: exact headers, stable Message-IDs, a clean multipart body, and no header injection."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from email.message import EmailMessage

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from notify.compose import Composer, Outgoing, header_text, parse_sender, recipient_token
from notify.errors import HeaderError, ManifestError, RenderError
from notify.models import Recipient, Rendered
from notify.rendering import Templates, incident_context, load_templates, render

WHERE = "incidents/42.toml"
WHEN = datetime(2025, 3, 30, 21, 15, tzinfo=UTC)
TEXT = "Dear Zoë,\n\nWe charged you twice.\nRefund: 49.00 €\n"
HTML = "<p>Dear Zoë,</p>\n<p>We charged you <b>twice</b>.</p>\n"
HEADERS = [
    "From",
    "To",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "Auto-Submitted",
    "X-Notify-Incident",
    "MIME-Version",
    "Content-Type",
]


def composer(
    *,
    incident_id: str = "42",
    sender: str = "Acme Support <support@acme.example>",
    reply_to: str | None = "help@acme.example",
    return_path: str | None = None,
) -> Composer:
    return Composer(
        incident_id=incident_id,
        sender=parse_sender(sender, where=WHERE),
        reply_to=parse_sender(reply_to, where=WHERE) if reply_to else None,
        return_path=return_path,
    )


def rendered(
    *,
    name: str | None = "Ann Lee",
    email_address: str = "ann@example.com",
    key: str | None = None,
    subject: str = "Sorry: duplicate charge",
    text: str = TEXT,
    html: str | None = HTML,
    row: int = 7,
) -> Rendered:
    fields = {"email": email_address, **({"name": name} if name is not None else {})}
    recipient = Recipient(
        key or email_address.lower(), email_address, fields, [{}], [row, row + 3], "data/x.csv"
    )
    return Rendered(recipient, subject, text, html)


def parse(outgoing: Outgoing) -> EmailMessage:
    message = email.message_from_bytes(outgoing.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def content(part: EmailMessage) -> str:
    """The decoded text, with the wire's CRLF line ends read back as newlines."""
    return str(part.get_content()).replace("\r\n", "\n")


# --- headers -------------------------------------------------------------------------


def test_the_header_block_is_exactly_the_fixed_set() -> None:
    out = composer().compose(rendered(), when=WHEN)
    message = parse(out)
    assert list(message.keys()) == HEADERS
    assert message["From"] == "Acme Support <support@acme.example>"
    assert message["To"] == "Ann Lee <ann@example.com>"
    assert message["Reply-To"] == "help@acme.example"
    assert message["Subject"] == "Sorry: duplicate charge"
    assert message["Date"].datetime == WHEN
    assert message["Message-ID"] == out.message_id
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Notify-Incident"] == "42"
    assert message["MIME-Version"] == "1.0"


def test_without_reply_to_there_is_no_reply_to_header() -> None:
    message = parse(composer(reply_to=None).compose(rendered(), when=WHEN))
    assert "Reply-To" not in message
    assert list(message.keys()) == [h for h in HEADERS if h != "Reply-To"]


def test_a_recipient_without_a_name_gets_a_bare_address() -> None:
    message = parse(composer().compose(rendered(name=None)))
    assert message["To"] == "ann@example.com"


def test_the_date_defaults_to_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    message = parse(composer().compose(rendered()))
    assert before <= message["Date"].datetime <= datetime.now(UTC) + timedelta(seconds=1)


def test_the_outgoing_envelope_names_the_recipient_and_first_row() -> None:
    out = composer().compose(rendered(email_address="Ann@example.com", row=12))
    assert (out.key, out.to, out.row) == ("ann@example.com", "Ann@example.com", 12)
    assert out.envelope_from == "support@acme.example"


# --- Message-ID and VERP -------------------------------------------------------------


def test_the_message_id_is_on_the_from_domain_and_names_the_incident() -> None:
    out = composer().compose(rendered())
    assert re.fullmatch(r"<[0-9a-f]{24}\.42@acme\.example>", out.message_id)


def test_the_message_id_is_the_same_whenever_the_same_message_is_composed() -> None:
    first = composer().compose(rendered(), when=WHEN)
    again = composer().compose(rendered(name="Ann L.", subject="other"), when=WHEN + timedelta(1))
    assert first.message_id == again.message_id


@pytest.mark.parametrize(
    ("incident_id", "address"),
    [("43", "ann@example.com"), ("42", "bob@example.com")],
    ids=["another incident", "another recipient"],
)
def test_the_message_id_differs_for_another_incident_or_recipient(
    incident_id: str, address: str
) -> None:
    other = composer(incident_id=incident_id).compose(rendered(email_address=address))
    assert other.message_id != composer().compose(rendered()).message_id


def test_a_return_path_becomes_a_per_recipient_verp_address() -> None:
    verp = composer(return_path="bounces@example.com")
    ann = verp.compose(rendered())
    bob = verp.compose(rendered(email_address="bob@example.com"))
    match = re.fullmatch(r"bounces\+([0-9a-f]{24})@example\.com", ann.envelope_from)
    assert match
    assert match[1] == recipient_token("42", "ann@example.com")
    assert ann.message_id.startswith(f"<{match[1]}.")  # a bounce quoting either finds Ann
    assert bob.envelope_from != ann.envelope_from
    assert composer(return_path="bounces@example.com").envelope_from(ann.key) == ann.envelope_from


def test_recipient_tokens_do_not_collide_across_the_separator() -> None:
    assert recipient_token("4", "2x@example.com") != recipient_token("42", "x@example.com")
    assert recipient_token("42", "a@example.com") == recipient_token("42", "a@example.com")


# --- body ----------------------------------------------------------------------------


def test_text_and_html_make_multipart_alternative_text_first() -> None:
    message = parse(composer().compose(rendered()))
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert [p.get_content_charset() for p in parts] == ["utf-8", "utf-8"]
    assert [content(p) for p in parts] == [TEXT, HTML]
    assert message.defects == [] and all(p.defects == [] for p in parts)


def test_text_alone_is_a_single_text_part_with_the_exact_text() -> None:
    message = parse(composer().compose(rendered(html=None)))
    assert message.get_content_type() == "text/plain"
    assert not message.is_multipart()
    assert message.get_content_charset() == "utf-8"
    assert content(message) == TEXT


def test_the_message_is_7bit_with_crlf_lines_within_limits() -> None:
    long_line = "é" * 300 + " tail   \n"
    out = composer().compose(rendered(name="Zoë O'Brien", text=long_line, subject="Zoë " * 40))
    assert out.data.isascii()
    lines = out.data.split(b"\r\n")
    assert all(b"\n" not in line and b"\r" not in line for line in lines)
    assert max(len(line) for line in lines) <= 78
    assert content(next(parse(out).iter_parts())) == long_line


def test_a_body_line_that_mimics_the_boundary_does_not_split_the_message() -> None:
    first = parse(composer().compose(rendered()))
    boundary = first.get_boundary()
    assert boundary
    tricky = f"before\n--{boundary}\nContent-Type: text/html\n\n<script>\n--{boundary}--\nafter\n"
    message = parse(composer().compose(rendered(text=tricky)))  # same recipient: same boundary
    assert [content(p) for p in message.iter_parts()] == [tricky, HTML]


@settings(max_examples=150, deadline=None)
@given(st.text(), st.text())
@example("line\r\nnext\rlast", "<p>=3D</p>")
@example(".\n..\nFrom me\n", "trailing space \n")
def test_any_text_and_html_read_back_exactly(text: str, html: str) -> None:
    message = parse(composer().compose(rendered(text=text, html=html)))
    same_lines = lambda value: value.replace("\r\n", "\n").replace("\r", "\n")  # noqa: E731
    assert [content(p) for p in message.iter_parts()] == [same_lines(text), same_lines(html)]


# --- names and subjects --------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Zoë O'Brien",
        "Smith, John",
        'Ann "Nan" Lee',
        "a\\b",
        "<evil@example.org>",
        "Ann (admin)",
        "José Müller-Lüdenscheidt",
        "山田 太郎",
        "=?utf-8?q?Bob?=",  # a literal encoded word
    ],
)
def test_a_display_name_reads_back_as_itself(name: str) -> None:
    out = composer().compose(rendered(name=name))
    (address,) = parse(out)["To"].addresses
    assert address.display_name == name
    assert address.addr_spec == "ann@example.com"


def test_a_non_ascii_name_is_rfc2047_encoded() -> None:
    out = composer().compose(rendered(name="Zoë O'Brien"))
    to_line = next(line for line in out.data.split(b"\r\n") if line.startswith(b"To: "))
    assert to_line.startswith(b"To: =?utf-8?b?")
    assert to_line.endswith(b"?= <ann@example.com>")


def test_a_long_non_ascii_name_folds_into_words_a_reader_joins() -> None:
    name = "Zoë Ångström-Øre " * 8
    out = composer().compose(rendered(name=name))
    raw = email.message_from_bytes(out.data, policy=email.policy.compat32)
    assert str(make_header(decode_header(raw["To"]))) == f"{name} <ann@example.com>"


def test_a_literal_encoded_word_in_a_name_is_not_decoded_by_readers() -> None:
    name = "=?utf-8?b?QUJDDQpCY2M6IGV2aWxAZXhhbXBsZS5vcmc=?="  # decodes to 'ABC\r\nBcc: ...'
    out = composer().compose(rendered(name=name))
    raw = email.message_from_bytes(out.data, policy=email.policy.compat32)
    assert str(make_header(decode_header(raw["To"]))) == f"{name} <ann@example.com>"
    assert parse(out)["To"].addresses[0].addr_spec == "ann@example.com"


def test_a_literal_encoded_word_in_the_subject_is_not_decoded_by_readers() -> None:
    subject = "Sorry =?utf-8?b?QUJDDQpCY2M6IGV2aWxAZXhhbXBsZS5vcmc=?="
    assert parse(composer().compose(rendered(subject=subject)))["Subject"] == subject


@pytest.mark.parametrize(
    "subject",
    [
        "Entschuldigung für die doppelte Abbuchung — Zoë",
        "A long subject about the duplicate charge on your March renewal, and what we did " * 2,
    ],
)
def test_a_subject_reads_back_as_itself(subject: str) -> None:
    assert parse(composer().compose(rendered(subject=subject.strip())))["Subject"] == (
        subject.strip()
    )


@pytest.mark.parametrize("fold", ["\r", "\n", "\r\n", "\t", "\u2028", "\u2029", " \r\n\t "])
def test_a_line_break_or_tab_in_the_name_becomes_one_space(fold: str) -> None:
    out = composer().compose(rendered(name=f"Ann{fold}Bcc: evil@example.org"))
    (address,) = parse(out)["To"].addresses
    assert address.display_name == "Ann Bcc: evil@example.org"
    assert address.addr_spec == "ann@example.com"
    assert "Bcc" not in parse(out)


@pytest.mark.parametrize("fold", ["\r", "\n", "\r\n", "\t", "\u2028", "\n\n  \t"])
def test_a_line_break_or_tab_in_the_subject_becomes_one_space(fold: str) -> None:
    out = composer().compose(rendered(subject=f"Sorry{fold}Bcc: evil@example.org"))
    assert parse(out)["Subject"] == out.subject == "Sorry Bcc: evil@example.org"
    assert "Bcc" not in parse(out)


def test_the_body_keeps_a_line_break_the_header_folds() -> None:
    out = composer().compose(rendered(name="Ann\nLee", text="Dear Ann\nLee,\n", html=None))
    assert parse(out)["To"].addresses[0].display_name == "Ann Lee"
    assert content(parse(out)) == "Dear Ann\nLee,\n"


@pytest.mark.parametrize("bad", ["\x00", "\x85", "\x1b", "\x7f", "\x0b", "\x0c", "\x9b"])
def test_a_control_char_in_the_name_is_refused(bad: str) -> None:
    with pytest.raises(HeaderError) as caught:
        composer().compose(rendered(name=f"Ann{bad}Bcc: evil@example.org"))
    assert str(caught.value) == (
        "ann@example.com (data/x.csv row 7): the name holds the control character "
        f"U+{ord(bad):04X}; remove it from the export"
    )
    assert isinstance(caught.value, RenderError)


@pytest.mark.parametrize("bad", ["\x00", "\x85", "\x1b"])
def test_a_control_char_in_the_subject_is_refused(bad: str) -> None:
    with pytest.raises(HeaderError) as caught:
        composer().compose(rendered(subject=f"Sorry{bad}Bcc: evil@example.org"))
    assert str(caught.value) == (
        "ann@example.com (data/x.csv row 7): the subject holds the control character "
        f"U+{ord(bad):04X}; remove it from the export or the template"
    )


def header_lines(out: Outgoing) -> list[bytes]:
    return out.data[: out.data.index(b"\r\n\r\n")].split(b"\r\n")


@pytest.mark.parametrize(
    "name",
    [
        "Ann Lee " * 150,  # 1,200 characters of short words
        "A" * 1200,  # one word too long for any line
        "Smith, John " * 100,  # a quoted string, folded inside its quotes
        'Ann "Nan" Lee \\ ' * 80,
        "Zoë " * 300,
        "=?utf-8?q?x?= " * 90,
    ],
)
def test_a_long_name_is_folded_under_78_characters_and_reads_back(name: str) -> None:
    out = composer().compose(rendered(name=name.strip()))
    assert max(len(line) for line in header_lines(out)) <= 78
    (address,) = parse(out)["To"].addresses
    assert address.addr_spec == "ann@example.com"
    assert shown_name(out) == name.strip()


def shown_name(out: Outgoing) -> str:
    """The display name as an RFC 2047 reader shows it. (The stdlib's address parser puts
    a space between adjacent encoded words, which RFC 2047 says a reader must drop.)"""
    raw = email.message_from_bytes(out.data, policy=email.policy.compat32)["To"]
    if "=?" not in raw:
        return str(parse(out)["To"].addresses[0].display_name)
    shown = str(make_header(decode_header(raw)))
    assert shown.endswith(" <ann@example.com>")
    return shown.removesuffix(" <ann@example.com>")


@pytest.mark.parametrize(
    "subject",
    [
        "Sorry about " + "x" * 200,  # a word longer than a line
        "word " * 250,
        "ünïcödé " * 100,
        "a" * 1200,
        "Refund  " * 30 + "end",  # double spaces kept
    ],
)
def test_a_long_subject_is_folded_under_78_characters_and_reads_back(subject: str) -> None:
    out = composer().compose(rendered(subject=subject.strip()))
    assert max(len(line) for line in header_lines(out)) <= 78
    assert parse(out)["Subject"] == subject.strip()


def test_a_long_address_is_a_line_of_its_own_and_under_998_octets() -> None:
    address = "a" * 64 + "@" + ".".join(["b" * 60] * 3) + ".example"
    out = composer().compose(rendered(name="Ann Lee " * 20, email_address=address))
    lines = header_lines(out)
    assert max(len(line) for line in lines) <= 998
    assert f" <{address}>".encode() in lines
    assert parse(out)["To"].addresses[0].addr_spec == address


@settings(max_examples=300, deadline=None)
@given(st.text())
@example("Ann\r\nBcc: evil@example.org")
@example("a, b <evil@example.org>")
@example("=?utf-8?b?QUJDDQpCY2M6IGV2aWxAZXhhbXBsZS5vcmc=?=")
@example('"\\')
def test_no_name_adds_a_header_or_an_address(name: str) -> None:
    try:
        out = composer().compose(rendered(name=name), when=WHEN)
    except HeaderError:
        return
    message = parse(out)
    assert list(message.keys()) == HEADERS
    (address,) = message["To"].addresses
    assert address.addr_spec == "ann@example.com"
    assert message["Subject"] == "Sorry: duplicate charge"


@settings(max_examples=200, deadline=None)
@given(st.text().map(str.strip))
@example("x" * 60 + " =?utf-8?q?a=0D=0Ab?=")
def test_no_subject_adds_a_header_and_each_reads_back(subject: str) -> None:
    try:
        out = composer().compose(rendered(subject=subject), when=WHEN)
    except HeaderError:
        return
    message = parse(out)
    assert list(message.keys()) == HEADERS
    assert message["Subject"].lstrip() == header_text(subject)


# --- senders -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name", "address"),
    [
        ("Acme Support <support@acme.example>", "Acme Support", "support@acme.example"),
        ("support@acme.example", "", "support@acme.example"),
        ('"Acme, Inc." <s@acme.example>', "Acme, Inc.", "s@acme.example"),
        ("Acme <Ann.Lee@ACME.example>", "Acme", "Ann.Lee@acme.example"),
        ("Acme <support@bücher.example>", "Acme", "support@xn--bcher-kva.example"),
    ],
)
def test_parse_sender_accepts_one_address(value: str, name: str, address: str) -> None:
    sender = parse_sender(value, where=WHERE)
    assert (sender.display_name, sender.addr_spec) == (name, address)


def test_an_idn_sender_domain_goes_out_in_ascii() -> None:
    out = composer(sender="Bücher <info@bücher.example>", reply_to=None).compose(rendered())
    assert out.data.isascii()
    assert out.envelope_from == "info@xn--bcher-kva.example"
    assert out.message_id.endswith("@xn--bcher-kva.example>")
    assert parse(out)["From"].addresses[0].display_name == "Bücher"


def test_a_non_ascii_sender_name_is_encoded() -> None:
    out = composer(sender="Zoë's Shop <shop@acme.example>").compose(rendered())
    assert out.data.split(b"\r\n")[0].startswith(b"From: =?utf-8?b?")
    assert parse(out)["From"].addresses[0].display_name == "Zoë's Shop"


def test_parse_sender_refuses_something_that_is_not_an_address() -> None:
    with pytest.raises(ManifestError) as caught:
        parse_sender("nope", where=WHERE)
    assert str(caught.value) == (
        "incidents/42.toml: from = 'nope' is not a valid address "
        "(An email address must have an @-sign.); "
        'write it like "Acme Support <support@acme.example>"'
    )


@pytest.mark.parametrize(
    "value", ["", "<>", "Acme Support support@acme.example", "a@b", "support@acme..example"]
)
def test_parse_sender_refuses_invalid_addresses(value: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_sender(value, where=WHERE)
    assert str(caught.value).startswith(f"incidents/42.toml: from = {value!r} is not a valid")
    assert str(caught.value).endswith('write it like "Acme Support <support@acme.example>"')


@pytest.mark.parametrize(
    "value",
    [
        "Acme <a@acme.example>, Evil <e@evil.example>",
        "Acme, Inc. <s@acme.example>",
        "support@@acme.example",
    ],
)
def test_parse_sender_refuses_more_than_one_address(value: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_sender(value, where=WHERE)
    assert str(caught.value) == (
        f"incidents/42.toml: from = {value!r} is not one address; write it like "
        '"Acme Support <support@acme.example>", with a name holding a comma in quotes'
    )


@pytest.mark.parametrize("bad", ["\r\n", "\n", "\x00", "\u2028"])
def test_parse_sender_refuses_line_breaks(bad: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_sender(f"Acme <a@acme.example>{bad}Bcc: e@evil.example", where=WHERE)
    assert str(caught.value) == (
        "incidents/42.toml: from holds a line break or control character; fix it"
    )


def test_spooled_bytes_become_the_same_message_dated_when_sent():
    first = rendered(email_address="ann@example.com")
    checked_at = datetime(2026, 11, 30, 9, 5, 7, tzinfo=UTC)
    sent_at = checked_at + timedelta(hours=1, seconds=3)
    built = composer().compose(first, when=checked_at)
    again = composer().rebuilt(first.recipient, built.data, when=sent_at)
    assert again is not None
    assert again.data == built.data.replace(
        b"Date: Mon, 30 Nov 2026 09:05:07 +0000", b"Date: Mon, 30 Nov 2026 10:05:10 +0000"
    )
    assert parse(again)["Date"].datetime == sent_at
    assert again == Outgoing(
        key=built.key,
        envelope_from=built.envelope_from,
        to=built.to,
        message_id=built.message_id,
        data=again.data,
        row=built.row,
    )


def test_bytes_built_for_another_recipient_are_never_rebuilt_for_this_one():
    ann = rendered(email_address="ann@example.com")
    bob = rendered(email_address="bob@example.com")
    bobs_message = composer().compose(bob).data
    assert composer().rebuilt(ann.recipient, bobs_message) is None
    body_only = bobs_message.replace(b"Message-ID:", b"X-Other:")
    assert composer().rebuilt(bob.recipient, body_only) is None


# --- any value into headers ----------------------------------------------------------

HEADER_VALUES = st.one_of(
    st.text(),
    st.text(min_size=200, max_size=1500),
    st.text(st.characters(codec="ascii"), min_size=200, max_size=1500),
    st.builds(
        lambda word, count: (word + " ") * count,
        st.text(min_size=1, max_size=120),
        st.integers(min_value=1, max_value=30),
    ),
)


@pytest.fixture(scope="module")
def subject_templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    folder = tmp_path_factory.mktemp("templates") / "apology"
    folder.mkdir()
    (folder / "subject.j2").write_text("Sorry {{ customer.company }}: {{ incident.title }}\n")
    (folder / "body.txt.j2").write_text("Dear {{ customer.name }} of {{ customer.company }}\n")
    (folder / "body.html.j2").write_text("<p>Dear {{ customer.name }}</p>\n")
    return load_templates(folder, label="templates/apology")


@settings(max_examples=300, deadline=None)
@given(name=HEADER_VALUES, company=HEADER_VALUES)
@example(name="Ann\r\nBcc: evil@example.org", company="Acme\n\tCc: x@example.org")
@example(name="A" * 1200, company="x" * 1000)
@example(name="Ann\x00", company="Acme")
@example(name='"\\', company="=?utf-8?b?QUJDDQpCY2M6IGV2aWxAZXhhbXBsZS5vcmc=?=")
def test_any_name_and_subject_field_is_refused_with_its_row_or_makes_valid_headers(
    subject_templates: Templates, name: str, company: str
) -> None:
    fields = {"email": "ann@example.com", "name": name, "company": company}
    recipient = Recipient("ann@example.com", "ann@example.com", fields, [{}], [7], "data/x.csv")
    texts = render(subject_templates, recipient, incident_context("42", "a double charge", {}))
    try:
        out = composer().compose(texts, when=WHEN)
    except HeaderError as exc:
        assert str(exc).startswith("ann@example.com (data/x.csv row 7): the ")
        assert re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", name + company)
        return
    assert max(len(line) for line in header_lines(out)) <= 78  # all foldable: no line > 998
    message = parse(out)
    assert list(message.keys()) == HEADERS
    (address,) = message["To"].addresses
    assert address.addr_spec == "ann@example.com"
    assert message["Subject"].lstrip() == out.subject == header_text(texts.subject)
    assert content(next(message.iter_parts())) == texts.text.replace("\r\n", "\n").replace(
        "\r", "\n"
    )  # the body keeps the values as they were

"""Markdown bodies: the text part as written, styled HTML from it, and fields that stay text."""

from __future__ import annotations

import email
import email.policy
import html
import re
import textwrap
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notify.errors import RenderError, WorkspaceError
from notify.markdown import escape, to_html
from notify.models import Recipient, Rendered
from notify.rendering import incident_context, load_templates, render

LABEL = "templates/apology"
SUBJECT = "Sorry, {{ customer.name }}\n"
BODY = textwrap.dedent(
    """\
    Dear **{{ customer.name }}**,

    We charged you twice:

    | Order | Amount |
    |-------|-------:|
    {% for item in items %}
    | {{ item.order_id }} | {{ item.amount }} |
    {% endfor %}

    [Your account](https://acme.example/account?id={{ customer.account }})
    """
)
HOSTILE = '*Ann* _Lee_ <a href="http://evil">me</a> [x](http://evil) `tick` # 1. \\o/'
INCIDENT = incident_context("42", "Duplicate charge", {})


def shown(text: str) -> str:
    """Text as markdown-it writes it into HTML."""
    return html.escape(text, quote=False).replace('"', "&quot;")


def folder(tmp_path: Path, **files: str) -> Path:
    target = tmp_path / "templates" / "apology"
    target.mkdir(parents=True, exist_ok=True)
    for name, text in {"subject.j2": SUBJECT, "body.md.j2": BODY, **files}.items():
        (target / name).write_text(text, encoding="utf-8")
    return target


def recipient(name: str, **fields: str) -> Recipient:
    items = [{"order_id": "A-1", "amount": "49.00"}, {"order_id": "A_2*", "amount": "5.00"}]
    return Recipient(
        "ann@example.com",
        "ann@example.com",
        {"email": "ann@example.com", "name": name, "account": "AC-7&x=1", **fields},
        items,
        [2, 4],
        "data/affected.csv",
    )


def rendered(tmp_path: Path, name: str = HOSTILE, **files: str) -> Rendered:
    templates = load_templates(folder(tmp_path, **files), label=LABEL)
    return render(templates, recipient(name), INCIDENT)


def test_fields_holding_markdown_and_html_render_as_their_own_text(tmp_path: Path) -> None:
    result = rendered(tmp_path)
    assert result.html is not None
    assert f"<strong>{shown(HOSTILE)}</strong>" in result.html
    assert "http://evil" not in re.findall(r'href="([^"]*)"', result.html)
    for markup in ("<em>", "<code", "<h1", "<ol", '<a href="http://evil'):
        assert markup not in result.html


def test_the_text_part_is_the_markdown_with_fields_as_they_are(tmp_path: Path) -> None:
    result = rendered(tmp_path)
    assert result.text.startswith(f"Dear **{HOSTILE}**,\n")
    assert "| A_2* | 5.00 |" in result.text
    assert "(https://acme.example/account?id=AC-7&x=1)" in result.text


def test_the_templates_own_markdown_becomes_styled_html(tmp_path: Path) -> None:
    result = rendered(tmp_path, name="Ann Lee")
    assert result.html is not None
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in result.html
    assert "<title>Sorry, Ann Lee</title>" in result.html
    assert '<p style="margin:0 0 16px;">Dear <strong>Ann Lee</strong>,</p>' in result.html
    assert '<td style="text-align:left;padding:6px 8px;border-bottom:1px solid #eeeeee;">A_2*' in (
        result.html
    )
    assert 'text-align:right">5.00</td>' in result.html
    assert (
        '<a href="https://acme.example/account?id=AC-7&amp;x=1" '
        'style="color:#0a58ca;text-decoration:underline;">Your account</a>'
    ) in result.html


def test_raw_html_in_the_template_is_shown_not_run(tmp_path: Path) -> None:
    result = rendered(tmp_path, **{"body.md.j2": "<script>alert(1)</script> hi\n"})
    assert result.html is not None
    assert "<script>" not in result.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; hi" in result.html


def test_a_missing_field_names_the_markdown_template_and_line(tmp_path: Path) -> None:
    body = "Hello\n\n{{ customer.phone }}\n"
    with pytest.raises(RenderError) as caught:
        rendered(tmp_path, **{"body.md.j2": body})
    assert str(caught.value) == (
        "ann@example.com (data/affected.csv row 2): body.md.j2 line 3: 'dict object' has no "
        "attribute 'phone'; map the column in [columns] or give the template a | default(...)"
    )


@pytest.mark.parametrize("other", ["body.txt.j2", "body.html.j2"])
def test_markdown_and_a_text_or_html_body_together_are_refused(tmp_path: Path, other) -> None:
    with pytest.raises(WorkspaceError) as caught:
        rendered(tmp_path, **{other: "x\n"})
    assert str(caught.value) == (
        f"templates/apology has both body.md.j2 and {other}; keep one: body.md.j2 makes both "
        "the text and the HTML part"
    )


def test_a_markdown_message_reaches_the_relay_as_text_and_html(workspace, run_cli, smtp_server):
    workspace.smtp(smtp_server)
    (workspace.root / "templates/apology/body.txt.j2").unlink()
    (workspace.root / "templates/apology/body.html.j2").unlink()
    workspace.write("templates/apology/body.md.j2", "Dear *{{ customer.name }}*,\n")
    workspace.rows([["*Bold* <b>Ann</b>", "ann@example.com", "", "A-1", "1.00"]])
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 0, result.output
    [received] = smtp_server.messages
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message.get_body(("plain",)).get_content() == "Dear **Bold* <b>Ann</b>*,\r\n"
    assert (
        "Dear <em>*Bold* &lt;b&gt;Ann&lt;/b&gt;</em>," in message.get_body(("html",)).get_content()
    )


def test_a_markdown_template_is_refused_by_check_next_to_a_text_body(workspace, run_cli):
    workspace.write("templates/apology/body.md.j2", "Hi\n")
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        "Error: templates/apology has both body.md.j2 and body.txt.j2; keep one: body.md.j2 "
        "makes both the text and the HTML part"
    )


_VISIBLE = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Co", "Cn")), min_size=1
)


@given(_VISIBLE)
def test_any_escaped_value_shows_exactly_as_itself(value: str) -> None:
    page = to_html(f"Hi {escape(value)}!\n", title="t")
    paragraph = re.search(r"<p [^>]*>(.*)</p>", page, re.S)
    assert paragraph is not None
    assert html.unescape(paragraph.group(1)) == f"Hi {value}!"
    assert "<" not in paragraph.group(1)

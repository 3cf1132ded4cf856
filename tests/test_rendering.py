"""Rendering: strict variables, autoescaped HTML, and errors that name recipient and template."""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import jinja2
import pytest

from notify import sandbox
from notify.errors import RenderError, RunawayError, WorkspaceError
from notify.models import Recipient
from notify.rendering import (
    Templates,
    incident_context,
    load_templates,
    render,
    render_each,
    summarise_problems,
)

LABEL = "templates/apology"
SUBJECT = "Sorry, {{ customer.name | default('there') }}: {{ incident.title }}\n"
TEXT = textwrap.dedent(
    """\
    Dear {{ customer.name | default("customer") }},

    We charged you twice for:
    {% for item in items %}
    - order {{ item.order_id }}: {{ item.amount }}
    {% endfor %}

    Your refund arrives within {{ incident.facts.refund_eta }} ({{ incident.refund_eta }}).
    """
)
HTML = textwrap.dedent(
    """\
    <p>Dear {{ customer.name | default("customer") }},</p>
    <ul>
    {% for item in items %}
    <li>{{ item.order_id }}</li>
    {% endfor %}
    </ul>
    """
)
INCIDENT = incident_context("42", "Duplicate charge", {"refund_eta": "5 business days"})

MakeTemplates = Callable[..., Templates]


@pytest.fixture
def templates_root(tmp_path: Path) -> Path:
    return tmp_path / "templates"


@pytest.fixture
def make_templates(templates_root: Path) -> MakeTemplates:
    """Write templates/apology/ from the defaults, overridden or removed (None) per file."""

    def make(**files: str | None) -> Templates:
        contents = {"subject": SUBJECT, "text": TEXT, "html": HTML, **files}
        names = {"subject": "subject.j2", "text": "body.txt.j2", "html": "body.html.j2"}
        folder = templates_root / "apology"
        folder.mkdir(parents=True, exist_ok=True)
        for key, content in contents.items():
            if content is not None:
                (folder / names[key]).write_text(content, encoding="utf-8")
        return load_templates(folder, label=LABEL)

    return make


def recipient(*, row: int = 7, **fields: str) -> Recipient:
    fields.setdefault("email", "ann@example.com")
    items = [{"order_id": "A-1", "amount": "49.00"}, {"order_id": "A-3", "amount": "5.00"}]
    return Recipient(fields["email"], fields["email"], fields, items, [row, row + 2], "data/x.csv")


def test_renders_subject_text_and_html_from_customer_items_and_incident(
    make_templates: MakeTemplates,
) -> None:
    rendered = render(make_templates(), recipient(name="Ann Lee"), INCIDENT)
    assert rendered.subject == "Sorry, Ann Lee: Duplicate charge"  # trailing newline stripped
    assert rendered.text == textwrap.dedent(
        """\
        Dear Ann Lee,

        We charged you twice for:
        - order A-1: 49.00
        - order A-3: 5.00

        Your refund arrives within 5 business days (5 business days).
        """
    )
    assert rendered.html == "<p>Dear Ann Lee,</p>\n<ul>\n<li>A-1</li>\n<li>A-3</li>\n</ul>\n"
    assert rendered.recipient.email == "ann@example.com"


def test_html_is_optional(make_templates: MakeTemplates) -> None:
    rendered = render(make_templates(html=None), recipient(name="Ann"), INCIDENT)
    assert rendered.html is None
    assert rendered.text.startswith("Dear Ann,")


def test_default_fills_an_absent_field(make_templates: MakeTemplates) -> None:
    rendered = render(make_templates(), recipient(), INCIDENT)
    assert rendered.subject == "Sorry, there: Duplicate charge"
    assert rendered.text.startswith("Dear customer,\n")
    assert rendered.html is not None and rendered.html.startswith("<p>Dear customer,</p>")


def test_html_is_autoescaped_and_text_is_not(make_templates: MakeTemplates) -> None:
    rendered = render(make_templates(), recipient(name='<b>Ann</b> & "co"'), INCIDENT)
    assert rendered.html is not None
    assert "<p>Dear &lt;b&gt;Ann&lt;/b&gt; &amp; &#34;co&#34;,</p>" in rendered.html
    assert "<b>" not in rendered.html
    assert rendered.text.startswith('Dear <b>Ann</b> & "co",')
    assert rendered.subject == 'Sorry, <b>Ann</b> & "co": Duplicate charge'


def test_a_missing_field_names_recipient_source_row_and_template_line(
    make_templates: MakeTemplates,
) -> None:
    templates = make_templates(text="Dear {{ customer.name }},\n\nCall us: {{ customer.phone }}\n")
    with pytest.raises(RenderError) as caught:
        render(templates, recipient(name="Ann", row=3417), INCIDENT)
    assert str(caught.value) == (
        "ann@example.com (data/x.csv row 3417): body.txt.j2 line 3: "
        "'dict object' has no attribute 'phone'; "
        "map the column in [columns] or give the template a | default(...)"
    )
    assert caught.value.problems == [str(caught.value)]


def test_a_missing_field_in_a_condition_is_an_error_too(make_templates: MakeTemplates) -> None:
    templates = make_templates(html="<p>\n{% if customer.phone %}call{% endif %}</p>\n")
    with pytest.raises(RenderError, match=r"row 7\): body\.html\.j2 line 2: .*'phone'"):
        render(templates, recipient(name="Ann"), INCIDENT)


def test_a_missing_field_in_the_subject_names_the_subject_template(
    make_templates: MakeTemplates,
) -> None:
    templates = make_templates(subject="{{ incident.facts.ticket }}\n")
    with pytest.raises(
        RenderError, match=r"^ann@example\.com \(data/x\.csv row 7\): subject\.j2 line 1: "
    ):
        render(templates, recipient(name="Ann"), INCIDENT)


def test_is_defined_tests_for_an_optional_field(make_templates: MakeTemplates) -> None:
    templates = make_templates(
        text="{% if customer.phone is defined %}call {{ customer.phone }}"
        "{% else %}write{% endif %}\n"
    )
    assert render(templates, recipient(), INCIDENT).text == "write"  # trim_blocks
    assert render(templates, recipient(phone="555"), INCIDENT).text == "call 555"


def test_a_runtime_error_in_a_template_names_recipient_and_line(
    make_templates: MakeTemplates,
) -> None:
    templates = make_templates(text="Hello\n{{ customer.name | round }}\n")
    with pytest.raises(RenderError) as caught:
        render(templates, recipient(name="Ann"), INCIDENT)
    message = str(caught.value)
    assert message.startswith("ann@example.com (data/x.csv row 7): body.txt.j2 line 2: ")
    assert message.endswith("; fix the value in the export or the template")


def test_render_changes_nothing_it_is_given(make_templates: MakeTemplates) -> None:
    someone = recipient(name="Ann")
    fields, items = dict(someone.fields), [dict(i) for i in someone.items]
    facts = dict(INCIDENT)
    render(make_templates(), someone, INCIDENT)
    assert someone.fields == fields and someone.items == items and facts == INCIDENT


def test_render_each_is_lazy_and_keeps_order(make_templates: MakeTemplates) -> None:
    templates = make_templates(subject="{{ customer.name }}\n")
    people = [recipient(name="Ann"), recipient(email="bob@example.com"), recipient(name="Cy")]
    stream = render_each(templates, people, INCIDENT)
    assert next(stream).subject == "Ann"  # the bad second recipient is not rendered yet
    with pytest.raises(RenderError, match="^bob@example.com "):
        next(stream)


def test_incident_context_offers_facts_at_top_level_but_id_and_title_win() -> None:
    context = incident_context("42", "Title", {"refund_eta": "soon", "id": "spoof"})
    assert context["refund_eta"] == "soon"
    assert context["facts"] == {"refund_eta": "soon", "id": "spoof"}
    assert (context["id"], context["title"]) == ("42", "Title")


# --- loading -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "line", "name"),
    [("text", 3, "body.txt.j2"), ("html", 2, "body.html.j2"), ("subject", 1, "subject.j2")],
)
def test_a_syntax_error_names_the_file_and_line(
    make_templates: MakeTemplates, part: str, line: int, name: str
) -> None:
    broken = "\n" * (line - 1) + "{{ customer.name }\n"
    with pytest.raises(RenderError) as caught:
        make_templates(**{part: broken})
    assert str(caught.value) == f"{LABEL}/{name} line {line}: unexpected '}}'; fix the template"


def test_an_unclosed_block_names_the_file(make_templates: MakeTemplates) -> None:
    with pytest.raises(RenderError, match=r"^templates/apology/body\.txt\.j2 line \d+: .*endfor"):
        make_templates(text="{% for item in items %}\n{{ item.order_id }}\n")


def test_a_template_that_is_not_utf8_is_one_line(
    make_templates: MakeTemplates, templates_root: Path
) -> None:
    make_templates()
    latin = "Dear customer,\n\nChère cliente\n".encode("cp1252")
    (templates_root / "apology" / "body.txt.j2").write_bytes(latin)
    with pytest.raises(RenderError) as caught:
        load_templates(templates_root / "apology", label=LABEL)
    assert str(caught.value) == (
        "templates/apology/body.txt.j2 line 3: not UTF-8 text; save it as UTF-8"
    )


def test_a_missing_template_folder_lists_the_known_ones(
    make_templates: MakeTemplates, templates_root: Path
) -> None:
    make_templates()
    (templates_root / "refund").mkdir()
    (templates_root / "notes.txt").write_text("not a template")
    with pytest.raises(WorkspaceError) as caught:
        load_templates(templates_root / "apologie", label="templates/apologie")
    assert str(caught.value) == (
        "template folder templates/apologie not found; known templates: apology, refund, "
        "or fix template ="
    )


def test_a_missing_template_folder_with_none_known_says_create_it(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError) as caught:
        load_templates(tmp_path / "templates" / "apology", label=LABEL)
    assert str(caught.value) == (
        "template folder templates/apology not found; create it, or fix template ="
    )


@pytest.mark.parametrize(
    ("part", "message"),
    [
        ("subject", "templates/apology/subject.j2 is missing; every template needs one"),
        ("text", "templates/apology/body.txt.j2 is missing; write it, or a body.md.j2"),
    ],
)
def test_subject_and_text_templates_are_required(
    make_templates: MakeTemplates, part: str, message: str
) -> None:
    with pytest.raises(WorkspaceError) as caught:
        make_templates(**{part: None})
    assert str(caught.value) == message


def test_summarise_problems_shows_the_first_and_counts_every_other() -> None:
    problems = [f"p{n}" for n in range(12)]
    error = summarise_problems(problems)
    assert str(error) == "12 problem(s) stop the send; nothing was sent. First: p0 (and 11 more)"
    assert error.problems == problems
    assert str(summarise_problems(["only"])) == (
        "1 problem(s) stop the send; nothing was sent. First: only"
    )


def test_field_reads_give_what_plain_jinja_gives(make_templates: MakeTemplates) -> None:
    """The key-first lookup on dicts changes no answer: a dict's own attributes still win."""
    probe = (
        "{{ customer.name }}|{{ customer.items is callable }}|{{ customer.get('name') }}|"
        "{{ items[0].order_id }}|{{ customer.absent is defined }}|{{ incident.facts.refund_eta }}"
        "|{{ customer.name.upper() }}|{{ (items | first).amount }}\n"
    )
    templates = make_templates(text=probe)
    ours = render(templates, recipient(name="Ann", items="a field named items"), INCIDENT).text
    plain = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    variables = recipient(name="Ann", items="a field named items")
    expected = plain.from_string(probe).render(
        customer=variables.fields, items=variables.items, incident=INCIDENT
    )
    assert ours == expected == "Ann|True|Ann|A-1|False|5 business days|ANN|49.00\n"


def test_a_missing_key_reads_as_plain_jinja_says_it(make_templates: MakeTemplates) -> None:
    templates = make_templates(text="{{ items[0].colour }}\n")
    with pytest.raises(RenderError, match=r"'dict object' has no attribute 'colour'"):
        render(templates, recipient(name="Ann"), INCIDENT)


# --- the sandbox ---------------------------------------------------------------------


@pytest.fixture
def short_time_limit(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(sandbox, "TIME_LIMIT", 0.3)
    return 0.3


def render_error(templates: Templates) -> RenderError:
    with pytest.raises(RenderError) as caught:
        render(templates, recipient(name="Ann"), INCIDENT)
    assert "\n" not in str(caught.value)
    return caught.value


def test_a_template_cannot_run_a_command(make_templates: MakeTemplates, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    templates = make_templates(
        text=f"Hi\n{{{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}}}\n"
    )
    assert str(render_error(templates)) == (
        "ann@example.com (data/x.csv row 7): body.txt.j2 line 2: access to attribute "
        "'__init__' of 'type' object is unsafe: templates cannot reach Python internals; "
        "fix the template"
    )
    assert not marker.exists()


@pytest.mark.parametrize(
    "expression",
    [
        "os.environ",
        "self._TemplateReference__context.environment",
        "range.__globals__",
        "''.__class__.__mro__",
        "joiner.__init__.__globals__",
        "'x'|attr('__class__')",
        "lipsum.__globals__",
        "config",
    ],
)
def test_a_template_cannot_read_the_environment(
    make_templates: MakeTemplates, monkeypatch: pytest.MonkeyPatch, expression: str
) -> None:
    monkeypatch.setenv("NOTIFY_SMTP_PASSWORD", "hunter2")
    error = render_error(make_templates(text=f"{{{{ {expression} }}}}\n"))
    assert "hunter2" not in str(error)
    assert str(error).startswith("ann@example.com (data/x.csv row 7): body.txt.j2 line 1: ")


def test_reading_os_says_it_is_not_there(make_templates: MakeTemplates) -> None:
    assert str(render_error(make_templates(text="{{ os.environ }}\n"))) == (
        "ann@example.com (data/x.csv row 7): body.txt.j2 line 1: 'os' is undefined; "
        "map the column in [columns] or give the template a | default(...)"
    )


def test_a_template_cannot_change_what_it_is_given(make_templates: MakeTemplates) -> None:
    someone = recipient(name="Ann")
    templates = make_templates(text="{{ customer.update({'email': 'eve@example.org'}) }}\n")
    with pytest.raises(RenderError, match="access to attribute 'update' of 'dict' object"):
        render(templates, someone, INCIDENT)
    assert someone.fields["email"] == "ann@example.com"


def test_a_huge_range_is_refused_with_its_line(make_templates: MakeTemplates) -> None:
    templates = make_templates(text="Hi\n{% for i in range(10**12) %}x{% endfor %}\n")
    error = render_error(templates)
    assert isinstance(error, RunawayError)
    assert str(error) == (
        "ann@example.com (data/x.csv row 7): body.txt.j2 line 2: the template asks range() "
        "for 1,000,000,000,000 items; it gives 10,000 at most; fix templates/apology"
    )


@pytest.mark.parametrize(
    "loops",
    [
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
        # No range and no call: loops over a short string, nested.
        "{% set s = 'x' * 100 %}{% for a in s %}{% for b in s %}{% for c in s %}"
        "{% for d in s %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}",
        "{% macro m(n) %}{% for i in range(100) %}{{ m(n - 1) if n else '' }}{% endfor %}"
        "{% endmacro %}{{ m(30) }}",
        "{% for x in [40, 40] recursive %}{{ loop([x - 1, x - 1]) if x else '' }}{% endfor %}",
        "{% for i in (range(10000)|list) * 100 %}{% for j in range(100) %}{% endfor %}{% endfor %}",
    ],
)
def test_a_loop_that_runs_away_is_stopped_within_the_time_limit(
    make_templates: MakeTemplates, short_time_limit: float, loops: str
) -> None:
    templates = make_templates(html=None, text=f"Hi\n\n{loops}\n")
    started = time.monotonic()
    error = render_error(templates)
    assert time.monotonic() - started < short_time_limit + 2.0  # a busy machine is slow
    assert isinstance(error, RunawayError)
    assert str(error) == (
        "ann@example.com (data/x.csv row 7): body.txt.j2 line 3: the template ran past its "
        "limit of 0.3 s for one message (a loop that never ends?); fix templates/apology"
    )


def test_the_time_limit_is_per_message(
    make_templates: MakeTemplates, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "TIME_LIMIT", 0.5)
    templates = make_templates(text="{% for i in range(10000) %}{{ i }}{% endfor %}\n")
    started, rendered = time.monotonic(), 0
    while time.monotonic() - started < 1.0:  # twice the limit, over many messages
        assert render(templates, recipient(name="Ann"), INCIDENT).text.startswith("0123")
        rendered += 1
    assert rendered > 1


@pytest.mark.parametrize(
    "expression",
    [
        "{{ 'x' * 10**10 }}",
        "{{ 'x' | center(10**10) }}",
        "{{ 'x'.rjust(10**10) }}",
        "{{ '%9999999999d' % 1 }}",
        "{{ '{:9999999999}'.format(1) }}",
        "{{ '{0:{1}}'.format(1, 10**10) }}",
        "{{ '%*d' | format(10**10, 1) }}",
        "{{ 'abc' | replace('', 'x' * 1000000) }}",
        "{{ 'x' | indent(10**10) }}",
        "{{ 2 ** (10**10) }}",
        "{{ ('x' * 1000) | list | join('y' * 1000000) }}",
        "{{ 'xy'.join(range(10000) | map('string')) * 100 }}",
        "{{ range(3) | slice(10**9) | list }}",
        "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}",
        "{% set a = 'x' * 600000 %}{% set b = a ~ a %}{{ b }}",
        "{% set a = 'x' * 600000 %}{{ a + a }}",
        "{% for i in range(10000) %}{{ 'y' * 900000 }}{% endfor %}",
        "{{ range(10000) | map('center', 900000) | list | length }}",
        "{% for i in range(2000) %}{{ 'y' * 1000 }}{% endfor %}",
    ],
)
def test_a_value_or_message_too_large_is_refused_before_it_fills_memory(
    make_templates: MakeTemplates, expression: str
) -> None:
    templates = make_templates(text=f"Hi\n{expression}\n")
    started = time.monotonic()
    error = render_error(templates)
    assert time.monotonic() - started < 3.0  # long before memory fills (and on a busy machine)
    assert isinstance(error, RunawayError)
    assert re.fullmatch(
        r"ann@example\.com \(data/x\.csv row 7\): body\.txt\.j2 line 2: the template (would "
        r"build [\d,]+ characters, more than the 1,000,000 a message may hold|built values of "
        r"[\d,]+ characters for one message); fix templates/apology",
        str(error),
    ), str(error)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "../other/body.txt.j2"])
def test_a_template_includes_only_templates_of_its_own_folder(
    make_templates: MakeTemplates, templates_root: Path, name: str
) -> None:
    (templates_root / "other").mkdir(parents=True)
    (templates_root / "other" / "body.txt.j2").write_text("another incident's text\n")
    templates = make_templates(text=f"Hi\n{{% include '{name}' %}}\n")
    error = render_error(templates)
    assert not isinstance(error, RunawayError)
    assert str(error) == (
        f"ann@example.com (data/x.csv row 7): body.txt.j2 line 2: template '{name}' not found "
        "in templates/apology/; a template may include only templates of its own folder"
    )


def test_a_link_out_of_the_template_folder_is_not_followed(
    make_templates: MakeTemplates, templates_root: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the relay password\n")
    templates = make_templates(text="{% include 'footer.txt' %}\n")
    (templates_root / "apology" / "footer.txt").symlink_to(secret)
    error = render_error(templates)
    assert "the relay password" not in str(error)
    assert "template 'footer.txt' not found in templates/apology/" in str(error)


def test_a_template_that_includes_itself_is_one_line(make_templates: MakeTemplates) -> None:
    templates = make_templates(text="Hi\n{% include 'body.txt.j2' %}\n")
    assert str(render_error(templates)) == (
        "ann@example.com (data/x.csv row 7): body.txt.j2 line 2: the template includes or "
        "calls itself without end; fix it"
    )


LEGITIMATE = textwrap.dedent(
    """\
    {% import 'macros.j2' as m %}
    {% set ns = namespace(total=0) %}
    {{ m.greet(customer.name) | center(40) }}
    {% for item in items | sort(attribute='order_id') %}
    {{ loop.index }}/{{ loop.length }} {{ '%-6s' | format(item.order_id) }} {{ item.amount }}
    {%- set ns.total = ns.total + item.amount | float %}
    {% endfor %}
    Total: {{ '%.2f' | format(ns.total) }} ({{ items | map(attribute='amount') | join(' + ') }})
    Orders: {{ items | map(attribute='order_id') | join(', ') | replace('A-', '#') }}
    {{ ('=' * 20) ~ ' ' ~ incident.title | upper }}
    {{ "{:>8}|{:<5}".format(customer.name[:8], 'ok') }} {{ range(3) | list | sum }}
    {% for row in range(7) | batch(3) %}{{ row | join('') }};{% endfor %}
    {{ customer.name | wordwrap(4) | indent(2) }}
    {% for k, v in {'b': 2, 'a': 1} | dictsort %}{{ k }}={{ v }}{{ loop.cycle(',', ';') }}
    {%- endfor %}
    {{ items | selectattr('amount', 'equalto', '5.00') | list | length }}
    {{ cycler('a', 'b').next() }}
    """
)


def test_a_legitimate_template_renders_as_plain_jinja_renders_it(
    make_templates: MakeTemplates, templates_root: Path
) -> None:
    macros = "{% macro greet(name) %}Dear {{ name }}{% endmacro %}\n"
    templates = make_templates(text=LEGITIMATE)
    (templates_root / "apology" / "macros.j2").write_text(macros)
    someone = recipient(name="Ann Lee-Marlowe")
    ours = render(templates, someone, INCIDENT).text
    plain = jinja2.Environment(
        loader=jinja2.DictLoader({"macros.j2": macros}),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    expected = plain.from_string(LEGITIMATE).render(
        customer=someone.fields, items=someone.items, incident=INCIDENT
    )
    assert ours == expected
    assert "Total: 54.00 (49.00 + 5.00)" in ours


def test_header_fields_are_the_name_and_what_the_subject_reads(
    make_templates: MakeTemplates,
) -> None:
    templates = make_templates(
        subject="{{ customer.company }} {{ customer['ref'] }} {{ items | map(attribute="
        "'order_id') | join }} {{ incident.title }}\n",
        text="{{ customer.phone }}\n",
    )
    assert {"name", "company", "ref", "order_id"} <= templates.header_fields
    assert "phone" not in templates.header_fields

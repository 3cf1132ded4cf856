"""Render each recipient's subject and bodies from the incident's Jinja templates.

StrictUndefined makes a field a recipient lacks an error instead of an empty hole, and
every error names the recipient and its source row, so a bad row is found before sending.
Templates run in the sandbox (sandbox.py): a template that reaches for Python internals,
a file outside its folder, or runs away, is an error with its line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from types import GeneratorType, TracebackType
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import new_context

from notify import locales, markdown, sandbox
from notify.errors import RenderError, RunawayError, WorkspaceError
from notify.models import Recipient, Rendered

SUBJECT, TEXT, HTML = "subject.j2", "body.txt.j2", "body.html.j2"


@dataclass(frozen=True)
class Templates:
    """The compiled templates of one folder; HTML is optional."""

    folder: Path
    subject: jinja2.Template
    text: jinja2.Template
    html: jinja2.Template | None
    markdown: jinja2.Template | None = None  # body.md.j2, fields escaped: the HTML's source
    by_language: Callable[[Recipient], Templates] | None = None  # see locales.localised
    label: str = ""  # the folder as the operator knows it: templates/apology
    # Fields whose values go into a header: the name (To) and what the subject reads.
    header_fields: frozenset[str] = frozenset({"name"})
    # Each template's globals as one flat dict: Template.render copies them from a
    # ChainMap on every call, a third of the cost of a short message.
    flat_globals: dict[jinja2.Template, dict[str, Any]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def render(self, template: jinja2.Template, variables: dict[str, Any]) -> str:
        """What template.render(variables) returns, errors and their template lines included."""
        environment = template.environment
        flat = self.flat_globals.get(template)
        if flat is None:
            flat = self.flat_globals[template] = dict(template.globals)
        context = new_context(
            environment, template.name, template.blocks, variables, False, flat, None
        )
        output = cast(GeneratorType, template.root_render_func(context))
        try:
            # environment.concat (sandbox.bounded_concat) inlined: a call less per part.
            text = "".join(islice(output, sandbox.CHUNKS))
            if output.gi_frame is not None:  # more to come: a long output, counted as it goes
                return sandbox.concat_rest(text, output)
            if len(text) > sandbox.MAX_CHARS:
                raise sandbox.Runaway(sandbox.too_large(len(text)))
            return text
        except sandbox.Runaway as exc:
            if output.gi_frame is not None:  # stopped while writing: where it was
                line = template.get_corresponding_lineno(output.gi_frame.f_lineno)
                exc.place = f"{template.name} line {line}: "
            environment.handle_exception()
        except Exception:
            environment.handle_exception()


def load_templates(folder: Path, *, label: str, locale: str | None = None) -> Templates:
    """Compile the folder's templates now, so a syntax error stops the run at once; their
    money, date and number filters format for `locale`."""
    if not folder.is_dir():
        known = sorted(p.name for p in folder.parent.glob("*") if p.is_dir())
        hint = f"known templates: {', '.join(known)}" if known else "create it"
        raise WorkspaceError(f"template folder {label} not found; {hint}, or fix template =")
    environment = sandbox.SandboxEnvironment(
        loader=sandbox.FolderLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=_autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(locales.filters(locale))
    if not (folder / SUBJECT).is_file():
        raise WorkspaceError(f"{label}/{SUBJECT} is missing; every template needs one")
    if (folder / markdown.MARKDOWN).is_file():
        return _markdown_templates(environment, folder, label)
    if not (folder / TEXT).is_file():
        raise WorkspaceError(f"{label}/{TEXT} is missing; write it, or a {markdown.MARKDOWN}")
    html = _compile(environment, HTML, label) if (folder / HTML).is_file() else None
    subject, text = _compile(environment, SUBJECT, label), _compile(environment, TEXT, label)
    header_fields = _fields_read(environment, (folder / SUBJECT).read_text(encoding="utf-8"))
    return Templates(
        folder, subject, text, html, label=label, header_fields=header_fields | {"name"}
    )


def _fields_read(environment: jinja2.Environment, source: str) -> frozenset[str]:
    """Every name a template reads as a field (customer.x, item.x, x['y'],
    map(attribute='y')): more than the fields, never fewer."""
    tree = environment.parse(source)
    names = {node.attr for node in tree.find_all(nodes.Getattr)}
    keys = [node.arg for node in tree.find_all(nodes.Getitem)]
    keys += [k.value for k in tree.find_all(nodes.Keyword) if k.key == "attribute"]
    names.update(k.value for k in keys if isinstance(k, nodes.Const) and isinstance(k.value, str))
    return frozenset(names)


@functools.cache
def _autoescape(name: str | None) -> bool:
    """HTML templates are escaped. Asked at every render: cached, a tenth of a short one."""
    return name is not None and name.lower().endswith((".html.j2", ".html"))


def _markdown_templates(environment: jinja2.Environment, folder: Path, label: str) -> Templates:
    """body.md.j2 as it is (the text part), and with fields escaped (the HTML's source)."""
    for other in (TEXT, HTML):
        if (folder / other).is_file():
            raise WorkspaceError(
                f"{label} has both {markdown.MARKDOWN} and {other}; keep one: "
                f"{markdown.MARKDOWN} makes both the text and the HTML part"
            )
    escaping = environment.overlay(finalize=markdown.escape, cache_size=0)
    return Templates(
        folder,
        _compile(environment, SUBJECT, label),
        _compile(environment, markdown.MARKDOWN, label),
        None,
        label=label,
        header_fields=_fields_read(environment, (folder / SUBJECT).read_text(encoding="utf-8"))
        | {"name"},
        markdown=_compile(escaping, markdown.MARKDOWN, label),
    )


def _compile(environment: jinja2.Environment, name: str, label: str) -> jinja2.Template:
    try:
        return environment.get_template(name)
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(
            f"{label}/{exc.name} line {exc.lineno}: {exc.message}; fix the template"
        ) from exc
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise RenderError(f"{label}/{name} line {line}: not UTF-8 text; save it as UTF-8") from exc


def incident_context(incident_id: str, title: str, facts: dict[str, Any]) -> dict[str, Any]:
    """What templates see as `incident`: id, title, the facts, and the facts at top level."""
    return _Facts({**facts, "id": incident_id, "title": title, "facts": _Facts(facts)})


class _MissingFact(jinja2.UndefinedError):
    """A template used an incident value the manifest's [facts] lacks."""


class _Facts(dict[str, Any]):
    """The incident's values: a missing one is an error that points at [facts], not [columns]."""

    def __missing__(self, key: str) -> jinja2.Undefined:
        hint = f"the incident has no fact {key!r}"
        return jinja2.StrictUndefined(hint=hint, obj=self, name=key, exc=_MissingFact)


def render(templates: Templates, recipient: Recipient, incident: dict[str, Any]) -> Rendered:
    """One recipient's texts; raises RenderError naming the recipient and source row."""
    if templates.by_language is not None:
        templates = templates.by_language(recipient)
    context = {"customer": recipient.fields, "items": recipient.items, "incident": incident}
    sandbox.start_message()
    try:
        subject = templates.render(templates.subject, context)
        text = templates.render(templates.text, context)
        html = templates.render(templates.html, context) if templates.html else None
        if templates.markdown is not None:
            source = templates.render(templates.markdown, context)
            html = markdown.to_html(source, title=subject.strip())
    except _MissingFact as exc:
        raise RenderError(
            f"{recipient.where()}: {_template_place(exc.__traceback__)}{exc.message}; add it "
            f"under [facts] in incidents/{incident['id']}.toml, or fix the name in the template"
        ) from exc
    except Exception as exc:
        raise _render_error(templates, recipient, exc) from exc
    return Rendered(recipient, subject.strip(), text, html)


def _render_error(templates: Templates, recipient: Recipient, exc: Exception) -> RenderError:
    """One line for whatever stopped a template: where, what, and what to fix."""
    place = _template_place(exc.__traceback__)
    if isinstance(exc, sandbox.Runaway):
        where = f"{recipient.where()}: {place or exc.place}"
        return RunawayError(f"{where}the template {exc}; fix {templates.label}")
    where = f"{recipient.where()}: {place}"
    if isinstance(exc, jinja2.UndefinedError):
        return RenderError(
            f"{where}{exc.message}; map the column in [columns] or give the template a "
            "| default(...)"
        )
    if isinstance(exc, SecurityError):
        return RenderError(
            f"{where}{str(exc).rstrip('.')}: templates cannot reach Python internals; "
            "fix the template"
        )
    if isinstance(exc, jinja2.TemplateNotFound):
        return RenderError(
            f"{where}template {exc.name!r} not found in {templates.label}/; a template may "
            "include only templates of its own folder"
        )
    if isinstance(exc, RecursionError):
        return RenderError(f"{where}the template includes or calls itself without end; fix it")
    # any other runtime error (a filter on a bad value, ...)
    return RenderError(f"{where}{exc}; fix the value in the export or the template")


def render_each(
    templates: Templates, recipients: Iterable[Recipient], incident: dict[str, Any]
) -> Iterator[Rendered]:
    """Render lazily, for a send that streams instead of holding every message."""
    for recipient in recipients:
        yield render(templates, recipient, incident)


def summarise_problems(problems: list[str]) -> RenderError:
    """One error that lists the first problems and counts the rest."""
    more = len(problems) - 1
    head = f"{len(problems)} problem(s) stop the send; nothing was sent. First: {problems[0]}"
    return RenderError(head + (f" (and {more} more)" if more else ""), problems=problems)


def _template_place(traceback: TracebackType | None) -> str:
    """'body.txt.j2 line 7: ' from the traceback frames Jinja maps to template lines."""
    place = ""
    while traceback is not None:
        filename = traceback.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            place = f"{Path(filename).name} line {traceback.tb_lineno}: "
        traceback = traceback.tb_next
    return place

"""Render each recipient's subject and bodies from the incident's Jinja templates.

StrictUndefined makes a field a recipient lacks an error instead of an empty hole, and
every error names the recipient and its source row, so a bad row is found before sending.
Templates run in the sandbox (sandbox.py): a template that reaches for Python internals,
a file outside its folder, or runs away, is an error with its line.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from types import GeneratorType, TracebackType
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import new_context

from notify import sandbox
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


def load_templates(folder: Path, *, label: str) -> Templates:
    """Compile the folder's templates now, so a syntax error stops the run at once."""
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
    for required in (SUBJECT, TEXT):
        if not (folder / required).is_file():
            raise WorkspaceError(f"{label}/{required} is missing; every template needs one")
    html = _compile(environment, HTML, label) if (folder / HTML).is_file() else None
    subject, text = _compile(environment, SUBJECT, label), _compile(environment, TEXT, label)
    header_fields = _fields_read(environment, (folder / SUBJECT).read_text(encoding="utf-8"))
    return Templates(folder, subject, text, html, label, header_fields | {"name"})


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
    return {**facts, "id": incident_id, "title": title, "facts": facts}


def render(templates: Templates, recipient: Recipient, incident: dict[str, Any]) -> Rendered:
    """One recipient's texts; raises RenderError naming the recipient and source row."""
    context = {"customer": recipient.fields, "items": recipient.items, "incident": incident}
    sandbox.start_message()
    try:
        subject = templates.render(templates.subject, context)
        text = templates.render(templates.text, context)
        html = templates.render(templates.html, context) if templates.html else None
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

"""The pages an operator opens in a browser: the preview's review page, one page per
previewed message, and the HTML report.

Each page is a Jinja2 template shipped in this package, autoescaped, with one shared
stylesheet inlined: a page is one self-contained file that needs no network.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import IO, Any

import jinja2
from markupsafe import Markup


@cache
def environment() -> jinja2.Environment:
    """One environment for every page, autoescaping everything the data puts in."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("notify", "pages"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, /, **context: Any) -> str:
    """A whole page (or a fragment such as one table row) as text."""
    return environment().get_template(template).render(**context)


def stream(template: str, out: IO[str], /, **context: Any) -> None:
    """A page written piece by piece, so rows given as an iterator never sit in memory."""
    for chunk in environment().get_template(template).generate(**context):
        out.write(chunk)


def fragments(lines: Iterable[str]) -> Iterable[Markup]:
    """Rows already rendered (and escaped) by a template, to stream into a page."""
    return (Markup(line) for line in lines)

"""Markdown bodies: body.md.j2 gives the text part as written and the HTML part from it.

Fields are escaped before Markdown sees them: the Markdown source is rendered with every
`{{ ... }}` output's ASCII punctuation backslash-escaped, so a customer's name holding
`*`, `_`, `<a href>` or `[x](http://evil)` reads as itself, never as emphasis, markup or
a link. The text part is the same template rendered without escaping: plain text needs
none. The HTML is CommonMark (raw HTML off, tables on) with inline styles in a narrow,
centred column that mail clients on phones and desktops show alike.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.rules_core import StateCore
    from markdown_it.token import Token

MARKDOWN = "body.md.j2"
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character
_STYLES = {
    "p": "margin:0 0 16px;",
    "h1": "font-size:24px;line-height:1.25;margin:0 0 16px;",
    "h2": "font-size:20px;line-height:1.3;margin:24px 0 12px;",
    "h3": "font-size:17px;line-height:1.3;margin:20px 0 8px;",
    "h4": "font-size:16px;margin:16px 0 8px;",
    "a": "color:#0a58ca;text-decoration:underline;",
    "ul": "margin:0 0 16px;padding-left:24px;",
    "ol": "margin:0 0 16px;padding-left:24px;",
    "li": "margin:0 0 4px;",
    "blockquote": "margin:0 0 16px;padding:0 0 0 12px;border-left:3px solid #dddddd;color:#555555;",
    "code": "font-family:Menlo,Consolas,monospace;font-size:14px;background:#f4f4f4;",
    "pre": "margin:0 0 16px;padding:12px;background:#f4f4f4;overflow-x:auto;",
    "table": "border-collapse:collapse;width:100%;margin:0 0 16px;",
    "th": "text-align:left;padding:6px 8px;border-bottom:2px solid #dddddd;",
    "td": "text-align:left;padding:6px 8px;border-bottom:1px solid #eeeeee;",
    "hr": "border:0;border-top:1px solid #dddddd;margin:24px 0;",
    "img": "max-width:100%;height:auto;",
}
_PAGE = """\
<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
</head>
<body style="margin:0; padding:0; background:#f4f4f4;">
<div style="max-width:600px; margin:0 auto; padding:16px 12px;">
<div style="padding:24px; background:#ffffff; border-radius:6px; font-family:Arial, \
Helvetica, sans-serif; font-size:16px; line-height:1.5; color:#222222;">
{body}</div>
</div>
</body>
</html>
"""


def escape(value: Any) -> str:
    """A template value as Markdown that shows exactly its text (Jinja's finalize hook)."""
    return _PUNCTUATION.sub(r"\\\1", str(value))


def to_html(source: str, *, title: str) -> str:
    """The Markdown as a whole HTML document, every element styled inline."""
    return _PAGE.format(title=html.escape(title), body=_converter().render(source))


@functools.cache
def _converter() -> MarkdownIt:
    """Made on first use: a plain-text incident never imports markdown-it."""
    from markdown_it import MarkdownIt

    converter = MarkdownIt("commonmark", {"html": False}).enable("table")
    converter.core.ruler.push("inline_styles", _style)
    return converter


def _style(state: StateCore) -> None:
    """Give each element its inline style, ahead of any alignment a table cell has."""
    _style_tokens(state.tokens)


def _style_tokens(tokens: Sequence[Token]) -> None:
    for token in tokens:
        style = _STYLES.get(token.tag)
        if style and token.nesting >= 0:
            token.attrSet("style", style + str(token.attrGet("style") or ""))
        if token.children:
            _style_tokens(token.children)

"""The fields templates read from `customer` and from each item, checked against the manifest.

A typo such as `customer.nmae | default("customer")` renders for every recipient without
an error and greets all of them wrongly; only reading the templates themselves finds it.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator
from pathlib import Path

import jinja2
from jinja2 import nodes

_DICT_ATTRIBUTES = frozenset(dir(dict))  # `customer.get(...)` and the like are no fields


def unmapped_fields(
    folder: Path,
    *,
    label: str,
    customer: Collection[str],
    items: Collection[str],
) -> list[str]:
    """One problem line per template reference to a field no column maps, with the closest."""
    environment = jinja2.Environment()
    problems: list[str] = []
    for path in sorted(folder.rglob("*.j2")):
        name = path.relative_to(folder).as_posix()
        try:
            tree = environment.parse(path.read_text(encoding="utf-8"))
        except (jinja2.TemplateSyntaxError, UnicodeDecodeError, OSError):
            continue  # compiling the templates reports these with their line
        for line, kind, field in _references(tree, checks_items=bool(items)):
            known = customer if kind == "customer" else items
            if field in known:
                continue
            problems.append(f"{label}/{name} line {line}: {_unmapped(kind, field, known)}")
    return problems


def _unmapped(kind: str, field: str, known: Collection[str]) -> str:
    """What is wrong with one reference, and the closest mapped field to use instead."""
    section = "[columns]" if kind == "customer" else "[group] items"
    closest = difflib.get_close_matches(field, sorted(known), n=1)
    if closest:
        hint = f"closest mapped field: {kind}.{closest[0]}; "
    else:
        hint = f"mapped fields: {', '.join(sorted(known)) or 'none'}; "
    return f"{kind}.{field} is not a field any column maps; {hint}fix the template or {section}"


def _references(tree: nodes.Template, *, checks_items: bool) -> Iterator[tuple[int, str, str]]:
    """(line, "customer" or "item", field) for each field read off a customer or an item."""
    loop_names = _item_loop_names(tree) if checks_items else set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            base, field = node.node, node.attr
            if field in _DICT_ATTRIBUTES:
                continue
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            base, field = node.node, node.arg.value
        else:
            continue
        if not isinstance(base, nodes.Name) or not isinstance(field, str):
            continue
        if base.name == "customer":
            yield node.lineno, "customer", field
        elif base.name in loop_names:
            yield node.lineno, "item", field


def _item_loop_names(tree: nodes.Template) -> set[str]:
    """The loop variables that walk `items` (also through a filter, like `items | sort`)."""
    names: set[str] = set()
    for loop in tree.find_all(nodes.For):
        walks_items = (isinstance(loop.iter, nodes.Name) and loop.iter.name == "items") or any(
            name.name == "items" for name in loop.iter.find_all(nodes.Name)
        )
        if walks_items and isinstance(loop.target, nodes.Name):
            names.add(loop.target.name)
    return names

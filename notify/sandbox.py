"""The sandbox templates render in: what they may reach, and how long and large they may run.

A template is code. Jinja's immutable sandbox keeps it away from Python internals (no
`__globals__`, so no `os`, no environment, no password) and from changing what it is given;
the loader keeps it inside its own folder. What the sandbox does not bound, this module
does, without signals (render workers are threads or forked processes): the clock is read
in every loop, call, operator and filter that can grow a value; range() counts to
MAX_RANGE; and no value a template
builds, nor the message it writes, may pass MAX_CHARS. A single step that would pass it
(a huge width, repetition, join or replace) is refused before it runs, since no clock can
interrupt one long step inside C.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import re
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sized
from itertools import islice
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

MAX_RANGE = 10_000  # items one range() may give: a message never needs to count further
MAX_CHARS = 1_000_000  # characters (or items) of one part of a message, or of one value
MAX_BUILT = 10 * MAX_CHARS  # characters all the values one message builds may add up to
TIME_LIMIT = 2.0  # seconds one message's templates may run: thousands of times the usual
_CLOCK_EVERY = 64  # loop items between looks at the clock (a look costs a loop step)
_SHORT_LOOP = 1_000  # a list, tuple, string or range this short is walked unwatched
_LOOP_GUARD, _SIZE_GUARD = "loop_guard", "size_guard"  # filters the sandbox adds itself
CHUNKS = 256  # output pieces joined at a time while counting a part's size
_SIZED = (str, list, tuple, dict)
_PLAIN = frozenset({list, tuple, str, range, dict})
# Widths in a %-format or a str.format spec, and widths taken from the arguments.
_PRINTF_WIDTHS = re.compile(r"%[-#0 +]*(\d*|\*)(?:\.(\d*|\*))?")
_FORMAT_SPECS = re.compile(r"\{[^{}]*?:([^{}]*)\}")
_VARIABLE_WIDTH = re.compile(r"%[-#0 +]*\*|%[-#0 +]*\d*\.\*|\{[^{}]*\{")


class Runaway(Exception):
    """A template went past a limit; `place` is set when the traceback cannot tell the line."""

    place = ""


class _Budget(threading.local):
    """This thread's deadline, and what values it built, for the message it renders now."""

    deadline = math.inf
    built = 0


_budget = _Budget()


def start_message() -> None:
    """Give the message about to be rendered its own TIME_LIMIT and MAX_BUILT."""
    _budget.deadline = time.monotonic() + TIME_LIMIT
    _budget.built = 0


def check_clock() -> None:
    """Stop the message that ran past its TIME_LIMIT."""
    if time.monotonic() > _budget.deadline:
        raise Runaway(
            f"ran past its limit of {TIME_LIMIT:g} s for one message (a loop that never ends?)"
        )


def check_size(value: Any) -> Any:
    """The value, unless it is too large for a message, or one too many of its size (a
    list of large values is made one at a time)."""
    if isinstance(value, _SIZED):
        size = len(value)
        if size > MAX_CHARS:
            raise Runaway(too_large(size))
        _budget.built += size
        if _budget.built > MAX_BUILT:
            raise Runaway(f"built values of {_budget.built:,} characters for one message")
    return value


def too_large(size: int) -> str:
    """What a Runaway says when a value or a message would pass MAX_CHARS."""
    return f"would build {size:,} characters, more than the {MAX_CHARS:,} a message may hold"


def bounded_concat(chunks: Iterable[str]) -> str:
    """''.join(chunks), stopping output that runs past MAX_CHARS before it fills memory."""
    if type(chunks) is list:  # a macro's or a block's output, all made already
        text = "".join(chunks)
    else:
        text = "".join(islice(chunks, CHUNKS))
        if getattr(chunks, "gi_frame", None) is not None:  # a generator with more to come
            return concat_rest(text, chunks)
    if len(text) > MAX_CHARS:
        raise Runaway(too_large(len(text)))
    return text


def concat_rest(text: str, chunks: Iterable[str]) -> str:
    """`text` and the rest of a long output (a loop's), counted every CHUNKS pieces."""
    parts, size = [text], len(text)
    while size <= MAX_CHARS and (block := list(islice(chunks, CHUNKS))):
        size += sum(map(len, block))
        parts.append("".join(block))
    if size > MAX_CHARS:
        raise Runaway(too_large(size))
    return "".join(parts)


def guarded_range(*args: int) -> range:
    """range(), counting to MAX_RANGE at most."""
    numbers_ = range(*args)
    if len(numbers_) > MAX_RANGE:
        raise Runaway(f"asks range() for {len(numbers_):,} items; it gives {MAX_RANGE:,} at most")
    return numbers_


def _loop_guard(iterable: Iterable[Any]) -> Iterable[Any]:
    """Every {% for %} starts here: loops are where templates run away. A short list is
    walked as it is (a loop inside it looks at the clock as it starts); anything else
    through _watched."""
    check_clock()
    if type(iterable) in _PLAIN and len(iterable) <= _SHORT_LOOP:  # type: ignore[arg-type]
        return iterable
    return _watched(iterable)


def _watched(iterable: Iterable[Any]) -> Iterator[Any]:
    deadline, clock = _budget.deadline, time.monotonic
    for count, item in enumerate(iterable):
        if not count % _CLOCK_EVERY and clock() > deadline:
            check_clock()
        yield item


class _GuardedNamespace(Namespace):
    """namespace(): the one place a template keeps a value across loop turns."""

    def __setitem__(self, name: str, value: Any) -> None:
        check_clock()
        super().__setitem__(name, check_size(value))


class _Guards(NodeTransformer):
    """Wraps every loop's items in the loop guard and every `~` in the size guard."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _LOOP_GUARD, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(node, _SIZE_GUARD, [], [], None, None, lineno=node.lineno)


class FolderLoader(jinja2.FileSystemLoader):
    """Templates from one folder only: '..' and absolute names are refused by Jinja, and
    a link inside the folder that leads out of it is refused here."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.folder = folder.resolve()

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        if not Path(filename).resolve().is_relative_to(self.folder):
            raise jinja2.TemplateNotFound(template)
        return source, filename, uptodate


class SandboxEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with limits, and `customer.name` on a dict read as a key
    at once.

    Jinja tries the attribute first and the key second, so every field read raised and
    caught an AttributeError: a quarter of rendering. A dict's own attributes (`items`,
    `keys`...) still win, exactly as in Jinja, and still pass the sandbox's checks."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.concat = bounded_concat  # type: ignore[method-assign]
        del self.globals["lipsum"]  # pages of filler text from one call: nothing to say
        self.globals.update(range=guarded_range, namespace=_GuardedNamespace)
        for name, estimate in _FILTER_SIZES.items():  # the others cannot grow a value much
            self.filters[name] = _guarded_filter(self.filters[name], estimate)
        self.filters[_LOOP_GUARD] = _loop_guard
        self.filters[_SIZE_GUARD] = check_size

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        _Guards().visit(tree)
        return tree

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except (TypeError, LookupError):
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        check_clock()
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        if isinstance(target, types.BuiltinMethodType) and isinstance(target.__self__, str):
            args = _check_str_method(target.__self__, target.__name__, args, kwargs)
        return check_size(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        check_clock()
        _check_binop(operator, left, right)
        return check_size(super().call_binop(context, operator, left, right))


_DICT_ATTRIBUTES = frozenset(dir(dict))


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `*`, `**`, `%` or `+` whose result could not fit in a message."""
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, _SIZED) and isinstance(times, int):
                _refuse_over(len(sequence) * times)
    elif operator == "**" and isinstance(left, int) and isinstance(right, int):
        _refuse_over(abs(left).bit_length() * right // 8)  # a huge power takes long to make
    elif operator == "%" and isinstance(left, str):
        values = right if isinstance(right, tuple) else (right,)
        _refuse_over(len(left) + _format_width(left, values))
    elif operator == "+" and isinstance(left, _SIZED) and isinstance(right, _SIZED):
        _refuse_over(len(left) + len(right))


def _check_str_method(text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The call's arguments (an iterable to join made a list), once its result fits."""
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        _refuse_over(args[0])
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        _refuse_over(len(text) + text.count("\t") * (size if isinstance(size, int) else 0))
    elif name == "replace" and len(args) >= 2:
        _refuse_over(_replaced_size(text, args[0], args[1]))
    elif name == "join" and args:
        items = list(args[0])
        _refuse_over(_joined_size(items, text))
        args = (items, *args[1:])
    elif name in ("format", "format_map"):
        values = [*args, *kwargs.values()]
        if name == "format_map" and args and isinstance(args[0], dict):
            values = list(args[0].values())
        _refuse_over(len(text) + _format_width(text, values))
    return args


def _guarded_filter(
    function: Callable[..., Any], estimate: Callable[[dict[str, Any]], int]
) -> Callable[..., Any]:
    """The filter, refusing what would not fit before it runs, and counting what it made."""
    signature = inspect.signature(function)
    # Jinja passes a filter marked for it its context first; a few filters take it only
    # to drop it, and their signature does not show it.
    shown = next(iter(signature.parameters), "")
    skip = int(hasattr(function, "jinja_pass_arg") and shown not in _PASSED)

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        check_clock()
        bound = signature.bind(*args[skip:], **kwargs)
        _refuse_over(estimate(bound.arguments))
        return check_size(function(*args[:skip], *bound.args, **bound.kwargs))

    return guarded


_PASSED = frozenset({"context", "eval_ctx", "environment", "env"})


def _listed(arguments: dict[str, Any], name: str) -> list[Any]:
    """The argument as a list, put back so the filter gets the same items."""
    items = arguments[name] = list(arguments[name])
    return items


def _indent_size(a: dict[str, Any]) -> int:
    width = a.get("width", 4)
    text = str(a["s"])
    return len(text) + (text.count("\n") + 1) * (width if isinstance(width, int) else len(width))


def _wordwrap_size(a: dict[str, Any]) -> int:
    text, width = str(a["s"]), a.get("width", 79)
    lines = len(text) // max(width, 1) + 1 if isinstance(width, int) else 1
    return len(text) + lines * len(a.get("wrapstring") or "\n")


def _sum_size(a: dict[str, Any]) -> int:
    """Summing lists copies each partial sum: quadratic in the items."""
    items = _listed(a, "iterable")
    return 0 if isinstance(a.get("start", 0), numbers.Number) else len(items) ** 2


_FILTER_SIZES: dict[str, Callable[[dict[str, Any]], int]] = {
    "center": lambda a: a.get("width", 80) if isinstance(a.get("width", 80), int) else 0,
    "indent": _indent_size,
    "format": lambda a: (
        len(str(a["value"]))
        + _format_width(str(a["value"]), [*a.get("args", ()), *a.get("kwargs", {}).values()])
    ),
    "join": lambda a: _joined_size(_listed(a, "value"), str(a.get("d", ""))),
    "replace": lambda a: _replaced_size(str(a["s"]), a["old"], a["new"]),
    "wordwrap": _wordwrap_size,
    "slice": lambda a: a["slices"] if isinstance(a["slices"], int) else 0,
    "sum": _sum_size,
}


def _replaced_size(text: str, old: Any, new: Any) -> int:
    if not isinstance(old, str) or not isinstance(new, str):
        return len(text)
    found = text.count(old) if old else len(text) + 1
    return len(text) + found * max(len(new) - len(old), 0)


def _joined_size(items: list[Any], separator: str) -> int:
    sizes = sum(len(item) if isinstance(item, Sized) else 20 for item in items)
    return sizes + len(separator) * max(len(items) - 1, 0)


def _format_width(fmt: str, values: Iterable[Any]) -> int:
    """The widest field a %-format or str.format spec asks for (widths written in the
    format, or taken from the values when the format says so)."""
    widths = [int(w) for m in _PRINTF_WIDTHS.finditer(fmt) for w in m.groups() if w and w.isdigit()]
    for spec in _FORMAT_SPECS.finditer(fmt):
        widths.extend(int(w) for w in re.findall(r"\d+", spec[1]))
    if _VARIABLE_WIDTH.search(fmt):
        widths.extend(v for v in values if isinstance(v, int))
    return max(widths, default=0)


def _refuse_over(size: int) -> None:
    if size > MAX_CHARS:
        raise Runaway(too_large(size))

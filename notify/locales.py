"""The customer's language: the templates that speak it, and numbers, amounts and dates as
they are written where the customer lives.

With `[columns] language = "Lang"`, a customer whose cell says `de` (or `de-DE`, `de_DE`)
gets the templates in `templates/NAME/de_DE/` or `templates/NAME/de/`, and without such a
folder those of `templates/NAME/` (a fallback the check counts and lists; templates/NAME/
itself is taken to be English, so for `en` it is no fallback). Templates are compiled
once per language and locale, never per customer. The filters `money`, `date` and
`number` format in the customer's locale (Babel), or in English without a language
column; a value they cannot format is a render problem naming the recipient and row.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from notify.models import Recipient

if TYPE_CHECKING:
    from babel import Locale

    from notify.rendering import Templates

FIELD = "language"  # [columns] language = "<column with each customer's language>"
DEFAULT_LOCALE = "en"  # the language of templates/NAME/ itself, and of customers without one
_DATE_FORMATS = ("short", "medium", "long", "full")


class FormatError(ValueError):
    """A value a filter cannot format; rendering reports it with the recipient and row."""


@dataclass(frozen=True)
class Languages:
    """Which templates each language value of the export gets."""

    base: Templates  # templates/NAME/, for customers without a language
    by_value: dict[str, Templates]  # the export's value -> its templates
    fallbacks: dict[str, int]  # a language without a folder -> customers given templates/NAME/

    def pick(self, recipient: Recipient) -> Templates:
        """The templates for this customer's language."""
        return self.by_value.get(recipient.fields.get(FIELD, ""), self.base)


def localised(
    base: Templates,
    recipients: Sequence[Recipient],
    *,
    label: str,
    load: Callable[..., Templates],
) -> tuple[Templates, Languages]:
    """The base templates made to pick each customer's language, and what was picked.

    `load(folder, label=..., locale=...)` compiles one folder for one locale."""
    counts = Counter(r.fields[FIELD] for r in recipients if r.fields.get(FIELD))
    compiled: dict[tuple[Path, str], Templates] = {}
    by_value: dict[str, Templates] = {}
    fallbacks: dict[str, int] = {}
    for value, count in sorted(counts.items()):
        locale = _parse(value)
        if locale is None:
            fallbacks[f"{value} (not a language)"] = count
            continue
        folder, name = _folder(base.folder, locale)
        if folder is None and locale.language != DEFAULT_LOCALE:
            fallbacks[value] = count
        where = (folder or base.folder, str(locale))
        if where not in compiled:
            compiled[where] = load(
                where[0], label=f"{label}/{name}" if name else label, locale=where[1]
            )
        by_value[value] = compiled[where]
    languages = Languages(base, by_value, fallbacks)
    return replace(base, by_language=languages.pick), languages


def filters(locale: str | None) -> dict[str, Callable[..., str]]:
    """`money`, `date` and `number`, formatting in `locale` (default: English)."""
    tag = locale or DEFAULT_LOCALE
    return {
        "money": functools.partial(money, locale=tag),
        "date": functools.partial(date, locale=tag),
        "number": functools.partial(number, locale=tag),
    }


def money(value: Any, currency: Any = None, *, locale: str) -> str:
    """`{{ item.amount | money(item.currency) }}`: 1.234,50 € for de, €1,234.50 for en."""
    from babel.numbers import format_currency, is_currency

    amount = _decimal(value, "money")
    code = str(currency or "").strip().upper()
    if not is_currency(code):
        raise FormatError(f"{currency!r} is not a currency code (ISO 4217, like EUR) for money")
    return str(format_currency(amount, code, locale=_locale(locale)))


def date(value: Any, format: str = "long", *, locale: str) -> str:
    """`{{ item.charged_on | date }}`: 1. März 2026 for de; format short, medium, long or
    full, or a Babel pattern like 'd MMM y'."""
    from babel.dates import format_date

    day = _day(value)
    try:
        return str(format_date(day, format=format, locale=_locale(locale)))
    except (ValueError, KeyError) as exc:
        raise FormatError(
            f"date format {format!r} is not one of {', '.join(_DATE_FORMATS)} or a pattern"
        ) from exc


def number(value: Any, *, locale: str) -> str:
    """`{{ n | number }}`: 1.234.567,5 for de, 1,234,567.5 for en."""
    from babel.numbers import format_decimal

    return str(format_decimal(_decimal(value, "number"), locale=_locale(locale)))


def _decimal(value: Any, filter_name: str) -> Decimal:
    """An exact number from a cell (text like 1234.50) or a number."""
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        parsed = Decimal(value)
    else:
        try:
            parsed = Decimal(str(value).strip())
        except InvalidOperation:
            parsed = Decimal("NaN")
    if not parsed.is_finite():
        raise FormatError(f"cannot format {value!r} with {filter_name}: not a number like 1234.50")
    return parsed


def _day(value: Any) -> dt.date:
    """A date from a date, a datetime or ISO text like 2026-03-01 (a time is dropped)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    for parse in (dt.date.fromisoformat, dt.datetime.fromisoformat):
        try:
            parsed = parse(text)
        except ValueError:
            continue
        return parsed.date() if isinstance(parsed, dt.datetime) else parsed
    raise FormatError(f"cannot format {value!r} with date: not a date like 2026-03-01")


@functools.cache
def _locale(tag: str) -> Locale:
    from babel import Locale

    return Locale.parse(tag)


def _parse(value: str) -> Locale | None:
    """The locale a cell names ('de', 'DE', 'de-DE', 'pt_BR'), or None."""
    from babel import Locale, UnknownLocaleError

    try:
        return Locale.parse(value.strip().replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def _folder(root: Path, locale: Locale) -> tuple[Path | None, str]:
    """The most specific language folder there is: de_DE/, de-DE/, then de/."""
    tag = str(locale)
    for name in dict.fromkeys([tag, tag.replace("_", "-"), locale.language]):
        if (root / name).is_dir():
            return root / name, name
    return None, ""

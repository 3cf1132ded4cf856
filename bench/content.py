#!/usr/bin/env python3
"""What each content feature costs per message: render and build N messages, in-process.

    python bench/content.py [--messages N] [--repeat R] [VARIANT ...]

A variant is plain (text and HTML, no feature) or features joined by '+': attachment (a
shared 200 KB file), invoices (a 20 KB file per customer), markdown (body.md.j2),
languages (three languages, money and date filters), dkim-rsa (RSA-2048), dkim-ed25519;
e.g. `attachment+dkim-rsa`. Each builds a workspace in a temporary folder, loads the
incident as `notify` does, then times rendering alone, and rendering plus building every
message (one process, no pool; each message is let go as the spool does), and prints the
best of R runs in CPU microseconds per message. Nothing touches the network.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from notify import pipeline
from notify.rendering import render
from notify.workspace import Workspace

SUBJECT = "Sorry, {{ customer.name | default('there') }}: {{ incident.title }}\n"
TEXT = """\
Dear {{ customer.name | default("customer") }},

We charged you twice for:
{% for item in items %}
- order {{ item.order_id }}: {{ item.amount }}
{% endfor %}

Your refund arrives within {{ incident.facts.refund_eta }}.
"""
HTML = """\
<p>Dear {{ customer.name | default("customer") }},</p>
<ul>
{% for item in items %}
<li>order {{ item.order_id }}: {{ item.amount }}</li>
{% endfor %}
</ul>
"""
MARKDOWN = """\
Dear **{{ customer.name | default("customer") }}**,

We charged you twice for:

{% for item in items %}
- order {{ item.order_id }}: {{ item.amount }}
{% endfor %}

Your refund arrives within *{{ incident.facts.refund_eta }}*.
"""
LOCALISED = """\
{{ customer.name | default("customer") }},
{% for item in items %}
- {{ item.order_id }}: {{ item.amount | money("EUR") }} ({{ item.charged_on | date }})
{% endfor %}
"""
MANIFEST = """\
title = "Duplicate charge on March renewals"
template = "apology"
from = "Acme Support <support@acme.example>"
{extra_top}
[source]
path = "data/affected.csv"

[columns]
email = "Email Address"
name = "Customer"
{extra_columns}
[group]
items = ["order_id", "amount", "charged_on"]

[facts]
refund_eta = "5 business days"
"""
LANGUAGES = ("en", "de", "fr")


def workspace(root: Path, variant: str, messages: int) -> dict[str, str]:
    """Write the variant's workspace; return the environment it needs."""
    features = set(variant.split("+"))
    templates = root / "templates" / "apology"
    templates.mkdir(parents=True)
    (root / "incidents").mkdir()
    (root / "data").mkdir()
    bodies = {"body.txt.j2": TEXT, "body.html.j2": HTML}
    if "markdown" in features:
        bodies = {"body.md.j2": MARKDOWN}
    if "languages" in features:
        bodies = {"body.txt.j2": LOCALISED}
        for language in LANGUAGES[1:]:
            (templates / language).mkdir()
            for name, text in {"subject.j2": SUBJECT, **bodies}.items():
                (templates / language / name).write_text(text, encoding="utf-8")
    for name, text in {"subject.j2": SUBJECT, **bodies}.items():
        (templates / name).write_text(text, encoding="utf-8")
    extra_top = extra_columns = ""
    header = "Customer,Email Address,order_id,amount,charged_on,Lang,Invoice"
    lines = [header]
    for n in range(messages):
        invoice = f"data/invoice-{n}.pdf" if "invoices" in features else ""
        cells = [f"Customer {n}", f"customer{n}@example.com", f"A-{n}", f"{n % 90 + 10}.50"]
        lines.append(",".join([*cells, "2026-03-01", LANGUAGES[n % 3], invoice]))
        if invoice:
            (root / invoice).write_bytes(os.urandom(20_000))
    (root / "data" / "affected.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if "attachment" in features:
        (root / "data" / "faq.pdf").write_bytes(b"%PDF-1.4\n" + os.urandom(200_000))
        extra_top = 'attachments = ["data/faq.pdf"]\n'
    if "invoices" in features:
        extra_columns += 'attachment = "Invoice"\n'
    if "languages" in features:
        extra_columns += 'language = "Lang"\n'
    (root / "incidents" / "42.toml").write_text(
        MANIFEST.format(extra_top=extra_top, extra_columns=extra_columns), encoding="utf-8"
    )
    for kind in ("dkim-rsa", "dkim-ed25519"):
        if kind in features:
            return {"NOTIFY_DKIM_SELECTOR": "bench", "NOTIFY_DKIM_KEY": str(_key(root, kind))}
    return {}


def _key(root: Path, kind: str) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "dkim-rsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    path = root / "dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def best(repeat: int, work: Callable[[], object]) -> float:
    """The fastest of `repeat` runs, in CPU seconds: steadier than wall time on a machine
    others share."""
    times = []
    for _ in range(repeat):
        started = time.process_time()
        work()
        times.append(time.process_time() - started)
    return min(times)


def _consume(messages: Iterable[object]) -> None:
    """Take each message and let it go, as the spool and the preview writer do."""
    for _ in messages:
        pass


def measure(variant: str, messages: int, repeat: int) -> tuple[float, float]:
    """Microseconds per message: rendering alone, and rendering plus building."""
    with tempfile.TemporaryDirectory(prefix="notify-content-") as folder:
        root = Path(folder)
        environ = workspace(root, variant, messages)
        incident = pipeline.load_incident(Workspace.open(root), "42", environ)
        recipients = incident.cleaned.recipients
        assert len(recipients) == messages, len(recipients)
        rendering = best(
            repeat, lambda: [render(incident.templates, r, incident.context) for r in recipients]
        )
        building = best(repeat, lambda: _consume(incident.outgoing(recipients)))
    return rendering / messages * 1e6, building / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="*", default=["plain"])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'variant':<24} {'render µs':>10} {'render+build µs':>16} {'build µs':>9}")
    for variant in args.variants:
        rendering, building = measure(variant, args.messages, args.repeat)
        print(f"{variant:<24} {rendering:>10.1f} {building:>16.1f} {building - rendering:>9.1f}")


if __name__ == "__main__":
    main()

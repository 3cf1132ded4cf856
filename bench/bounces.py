#!/usr/bin/env python3
"""The bounce parser on a labelled corpus of real bounces: how often it is right, and how.

    python bench/bounces.py CORPUS_DIR LABELS [--verbose] [--json FILE]

CORPUS_DIR holds the messages; LABELS is a JSON Lines file with one label per file (the
fields of ``../shared/bounce-corpus/README.md``). Each file's bytes go to
``notify.bounces.parse._parse`` (the parser without ``parse_bounce``'s last-resort guard,
so an exception is seen and counted; the guard's answer is then scored). The figures:

- **detected**: of the files labelled ``bounce: true``, those for which the parser returns
  a bounce that is not an auto-reply. Files of class ``none`` should give None and
  ``auto-reply`` files an auto-reply: both are printed, on their own line.
- **recipient**: of the ``bounce: true`` files with facts, those whose reported addresses
  are exactly right: each fact is matched by its recipient, alias or an original
  address, and no other address is reported (lower-cased; empty addresses ignored).
- **class**: of the files of class hard, soft, sender or delayed, those whose overall
  kind is that class (UNKNOWN never agrees). ``excluded`` and ``feedback`` never count.
- **wrong-hard**: of the same files, those the parser calls hard when they are soft,
  sender or delayed: an address given up on for nothing.
- **status**: of the facts whose class is hard, soft, sender, delayed or excluded and
  whose status is not one of Sisimai's ``d.d.9dd`` pseudo-codes, those whose paired
  reported recipient has exactly that status. Facts take, in order, the first untaken
  reported recipient with one of their addresses; one fact and one recipient always pair.
- **exceptions**: files on which the parser raised (must be 0).

Bounded: every file is read once, at most ``--max-bytes`` of it, and parsed with a
per-file alarm of ``--timeout`` seconds (a timeout counts as an exception).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from notify.bounces.parse import Bounce, _parse, parse_bounce  # noqa: E402
from notify.models import BounceKind  # noqa: E402

BOUNCE_CLASSES = ("hard", "soft", "sender", "delayed")
STATUS_CLASSES = (*BOUNCE_CLASSES, "excluded")
PSEUDO_STATUS = re.compile(r"^\d\.\d\.9\d\d$")
TARGETS = {  # measure -> (target, at least (True) or at most (False))
    "detected": (0.99, True),
    "recipient": (0.97, True),
    "class": (0.95, True),
    "wrong-hard": (0.005, False),
    "status": (0.98, True),
}


@dataclass
class Score:
    """Counts for one measure, with the files that missed it."""

    hits: int = 0
    total: int = 0
    misses: list[str] = field(default_factory=list)

    def add(self, hit: bool, name: str, why: str = "") -> None:
        """Count one case; a miss keeps the file's name and what went wrong."""
        self.total += 1
        self.hits += hit
        if not hit:
            self.misses.append(f"{name}: {why}" if why else name)

    @property
    def ratio(self) -> float:
        return self.hits / self.total if self.total else 1.0


class Timeout(Exception):
    """One file took longer than --timeout seconds."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Timeout


def read_labels(path: Path) -> Iterator[dict[str, Any]]:
    """Labels, one JSON object a line; blank lines skipped."""
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                yield json.loads(line)


def parse(data: bytes, timeout: int) -> tuple[Bounce | None, str | None]:
    """The parser's answer and the exception it raised, if any (then the guard's answer)."""
    signal.alarm(timeout)
    try:
        return _parse(data, None), None
    except Exception as exc:  # counted and shown: the point of calling _parse directly
        return parse_bounce(b""), f"{type(exc).__name__}: {exc}"
    finally:
        signal.alarm(0)


def fact_addresses(fact: dict[str, Any]) -> set[str]:
    """Every address a fact may be reported as: recipient, alias, original."""
    names = [fact.get("recipient"), fact.get("alias"), *(fact.get("original") or [])]
    return {n.lower() for n in names if n}


def reported(bounce: Bounce | None) -> list[str]:
    """The addresses the parser reported, lower-cased, empty ones left out."""
    if bounce is None:
        return []
    return [r.address.lower() for r in bounce.recipients if r.address]


def recipients_right(facts: list[dict[str, Any]], addresses: list[str]) -> tuple[bool, str]:
    """Every fact is reported and nothing else is."""
    wanted = [fact_addresses(f) for f in facts]
    missing = [sorted(w)[0] for w in wanted if not w & set(addresses)]
    extra = [a for a in addresses if not any(a in w for w in wanted)]
    return not missing and not extra, f"missing {missing} extra {extra}"


def pair_statuses(facts: list[dict[str, Any]], bounce: Bounce | None) -> list[str | None]:
    """Each fact's reported status, paired by address in order (one and one always pair)."""
    found = list(bounce.recipients) if bounce else []
    if len(facts) == 1 and len(found) == 1:
        return [found[0].status]
    taken: set[int] = set()
    statuses: list[str | None] = []
    for fact in facts:
        names = fact_addresses(fact)
        index = next(
            (
                i
                for i, r in enumerate(found)
                if i not in taken and r.address and r.address.lower() in names
            ),
            None,
        )
        if index is not None:
            taken.add(index)
        statuses.append(found[index].status if index is not None else None)
    return statuses


@dataclass
class Bench:
    """Every measure over one corpus."""

    scores: dict[str, Score] = field(default_factory=lambda: defaultdict(Score))
    exceptions: list[str] = field(default_factory=list)
    families: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    slowest: tuple[float, str] = (0.0, "")

    def run(self, corpus: Path, label: dict[str, Any], args: argparse.Namespace) -> None:
        """Parse one file and score it on every measure that applies."""
        name, klass = label["file"], label["class"]
        with (corpus / name).open("rb") as stream:
            data = stream.read(args.max_bytes)
        start = time.perf_counter()
        bounce, error = parse(data, args.timeout)
        took = time.perf_counter() - start
        self.seconds += took
        self.slowest = max(self.slowest, (took, name))
        if error:
            self.exceptions.append(f"{name}: {error}")
        kind = bounce.kind.value if bounce else "none"
        where = f"{label['family']}/{name}"
        if label["bounce"]:
            hit = bounce is not None and bounce.kind is not BounceKind.AUTO_REPLY
            self.scores["detected"].add(hit, where, f"got {kind}")
            if label["facts"]:
                ok, why = recipients_right(label["facts"], reported(bounce))
                self.scores["recipient"].add(ok, where, why)
        elif klass in ("none", "auto-reply"):
            self.scores[f"{klass} kept apart"].add(kind == klass, where, f"got {kind}")
        if klass in BOUNCE_CLASSES:
            self.scores["class"].add(kind == klass, where, f"{klass}, got {kind}")
            wrong = kind == "hard" and klass != "hard"
            self.scores["wrong-hard"].add(not wrong, where, f"{klass}, got hard")
        self.score_statuses(label, bounce, where)

    def score_statuses(self, label: dict[str, Any], bounce: Bounce | None, where: str) -> None:
        """The status of each fact that has a real one, against its paired recipient."""
        facts = label["facts"]
        for fact, got in zip(facts, pair_statuses(facts, bounce), strict=True):
            status = fact.get("status") or ""
            if fact["class"] in STATUS_CLASSES and status and not PSEUDO_STATUS.match(status):
                why = f"{fact['recipient']}: {status}, got {got}"
                self.scores["status"].add(got == status, where, why)


def figure(name: str, score: Score) -> str:
    """One table row: measure, count, percentage, target and whether it is met."""
    if name == "wrong-hard":  # counted as files NOT wrongly hard; shown as the mistakes
        wrong = score.total - score.hits
        ratio = wrong / score.total if score.total else 0.0
        count = f"{wrong}/{score.total}"
    else:
        ratio, count = score.ratio, f"{score.hits}/{score.total}"
    target, at_least = TARGETS.get(name, (None, True))
    if target is None:
        return f"| {name:<21} | {count:>9} | {ratio:7.1%} |          |     |"
    met = ratio >= target if at_least else ratio <= target
    sign = "≥" if at_least else "≤"
    verdict = "yes" if met else "NO"
    return f"| {name:<21} | {count:>9} | {ratio:7.1%} | {sign} {target:6.1%} | {verdict:<3} |"


def report(bench: Bench, files: int, verbose: bool) -> None:
    """The table, then (with --verbose) every miss grouped by family."""
    print("| measure               |     count |       % |   target | met |")
    print("|-----------------------|-----------|---------|----------|-----|")
    order = [*TARGETS, *sorted(set(bench.scores) - set(TARGETS))]
    for name in order:
        print(figure(name, bench.scores[name]))
    print(
        f"| {'exceptions':<21} | {len(bench.exceptions):>4}/{files:<4} |         |      = 0 |"
        f" {'yes' if not bench.exceptions else 'NO':<3} |"
    )
    print(
        f"\n{files} files parsed in {bench.seconds:.2f} s; slowest {bench.slowest[1]} "
        f"({bench.slowest[0] * 1000:.0f} ms)"
    )
    for line in bench.exceptions:
        print(f"exception: {line}")
    if verbose:
        print_misses(bench)


def print_misses(bench: Bench) -> None:
    """Misses of each measure, grouped by family, most failing family first."""
    for name, score in bench.scores.items():
        if not score.misses:
            continue
        by_family: dict[str, list[str]] = defaultdict(list)
        for miss in score.misses:
            by_family[miss.split("/", 1)[0]].append(miss.split("/", 1)[1])
        print(f"\n{name}: {len(score.misses)} misses")
        for family, misses in sorted(by_family.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            print(f"  {family} ({len(misses)})")
            for miss in misses:
                print(f"    {miss}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path, help="folder holding the messages")
    parser.add_argument("labels", type=Path, help="JSON Lines labels, one per file")
    parser.add_argument("--verbose", "-v", action="store_true", help="list misses by family")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--max-bytes", type=int, default=20_000_000, help="read at most this")
    parser.add_argument("--timeout", type=int, default=10, help="seconds allowed per file")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGALRM, _alarm)
    bench, files = Bench(), 0
    for label in read_labels(args.labels):
        if not (args.corpus / label["file"]).is_file():
            print(f"skipped {label['file']}: not in {args.corpus}", file=sys.stderr)
            continue
        files += 1
        bench.run(args.corpus, label, args)
    report(bench, files, args.verbose)
    if args.json:
        figures = {k: {"hits": s.hits, "total": s.total} for k, s in bench.scores.items()}
        figures["exceptions"] = {"hits": len(bench.exceptions), "total": files}
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0 if files else 2


if __name__ == "__main__":
    sys.exit(main())

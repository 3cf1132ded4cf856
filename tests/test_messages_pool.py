"""Worker processes build exactly what the parent would, in the same order."""

from __future__ import annotations

import re
import time

import pytest

from notify import sandbox
from notify.errors import RunawayError
from notify.incident import load_incident
from notify.messages import pool as workers
from notify.messages.pool import RenderPool
from notify.messages.spool import Spool
from notify.workspace import Context
from tests.conftest import make_rows

DATE = re.compile(rb"^Date: .*\r\n", re.MULTILINE)


def load(workspace):
    return load_incident(Context.open(workspace.root, {}), "42")


def test_two_processes_build_the_same_messages_in_order(workspace):
    workspace.rows(make_rows(1200, items_each=2))
    incident = load(workspace)
    recipients = incident.cleaned.recipients
    with RenderPool(incident, processes=1) as serial:
        expected = list(serial.outgoing(recipients))
    with RenderPool(incident, processes=2) as parallel:
        built = list(parallel.outgoing(recipients))
        batch = parallel.build(recipients[700:720])
    assert [m.key for m in built] == [r.key for r in recipients]
    assert [DATE.sub(b"", m.data) for m in built] == [DATE.sub(b"", m.data) for m in expected]
    assert [m.key for m in batch] == [r.key for r in recipients[700:720]]


def test_a_check_with_a_spool_keeps_every_message_by_position(workspace, tmp_path):
    workspace.rows(make_rows(1200, items_each=2))
    incident = load(workspace)
    recipients = incident.cleaned.recipients
    with RenderPool(incident, processes=1) as serial:
        expected = [DATE.sub(b"", m.data) for m in serial.outgoing(recipients)]
    for processes in (1, 2):
        spool = Spool(len(recipients), tmp_path)
        with RenderPool(incident, processes=processes) as pool:
            assert pool.problems(spool=spool) == []
        assert spool.complete
        kept = [spool.get(position) or b"" for position in range(len(recipients))]
        assert [DATE.sub(b"", data) for data in kept] == expected
        spool.close()


def test_two_processes_find_the_same_problems(workspace):
    rows = make_rows(1100)
    for index in (5, 600, 1099):
        rows[index][0] = ""
    workspace.rows(rows)
    workspace.write("templates/apology/subject.j2", "Hello {{ customer.name }}\n")
    incident = load(workspace)
    with RenderPool(incident, processes=2) as parallel:
        problems = parallel.problems()
    with RenderPool(incident, processes=1) as serial:
        assert problems == serial.problems()
    assert [p.split(" ")[0] for p in problems] == [
        "customer5@example.com",
        "customer600@example.com",
        "customer1099@example.com",
    ]


def test_the_first_n_by_position_are_the_same_messages_as_by_list(workspace):
    workspace.rows(make_rows(1300, items_each=2))
    incident = load(workspace)
    recipients = incident.cleaned.recipients
    with RenderPool(incident, processes=1) as serial:
        expected = [DATE.sub(b"", m.data) for m in serial.outgoing(recipients[:1100])]
        alone = [DATE.sub(b"", m.data) for m in serial.outgoing_first(1100)]
    with RenderPool(incident, processes=2) as parallel:
        pooled = [DATE.sub(b"", m.data) for m in parallel.outgoing_first(1100)]
        everyone = list(parallel.outgoing_first(5000))
    assert pooled == alone == expected
    assert [m.key for m in everyone] == [r.key for r in recipients]


def test_order_holds_however_few_chunks_are_built_ahead(workspace, monkeypatch):
    workspace.rows(make_rows(1800))
    incident = load(workspace)
    recipients = incident.cleaned.recipients
    monkeypatch.setattr(workers, "AHEAD", 1)
    with RenderPool(incident, processes=2) as parallel:
        first = [m.key for m in parallel.outgoing_first(1700)]
        listed = [m.key for m in parallel.outgoing(recipients[100:])]
    assert first == [r.key for r in recipients[:1700]]
    assert listed == [r.key for r in recipients[100:]]


def test_workers_refuse_a_header_control_character_as_the_parent_does(workspace):
    """Workers only check what building would refuse; they must refuse the same."""
    rows = make_rows(1100)
    rows[700][0] = "Eve\x1bBcc: victim@example.net"
    workspace.rows(rows)
    workspace.write("templates/apology/subject.j2", "Hello {{ customer.name }}\n")
    incident = load(workspace)
    with RenderPool(incident, processes=2) as parallel:
        problems = parallel.problems()
    with RenderPool(incident, processes=1) as serial:
        assert problems == serial.problems()
    assert len(problems) == 1
    assert problems[0] == (
        "customer700@example.com (data/affected.csv row 702): the name holds the control "
        "character U+001B; remove it from the export"
    )


def test_a_runaway_template_stops_the_check_at_once_in_the_workers(workspace, monkeypatch):
    """The time limit holds in forked workers (no signal alarm there), and one runaway
    stops the check instead of costing its time limit for every recipient."""
    monkeypatch.setattr(sandbox, "TIME_LIMIT", 0.3)
    workspace.rows(make_rows(1100))
    workspace.write(
        "templates/apology/body.txt.j2",
        "Dear {{ customer.name }},\n"
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}\n",
    )
    incident = load(workspace)
    started = time.monotonic()
    with RenderPool(incident, processes=2) as parallel, pytest.raises(RunawayError) as caught:
        parallel.problems()
    assert time.monotonic() - started < 10
    assert re.fullmatch(
        r"customer\d+@example\.com \(data/affected\.csv row \d+\): body\.txt\.j2 line 2: the "
        r"template ran past its limit of 0\.3 s for one message \(a loop that never ends\?\); "
        r"fix templates/apology",
        str(caught.value),
    )

#!/usr/bin/env python3
"""Several senders on one incident: does throughput scale with the number of senders?

    python bench/fleet.py [--messages 1200] [--delay-ms 25] [--senders 1,2,3]

For each sender count it makes a fresh PostgreSQL ledger database on 127.0.0.1:5432 and
a fresh workspace, starts the delayed relay of bench/run.py (every reply waits
--delay-ms, like a relay 25 ms away), runs that many `notify send --yes` processes at
once and reads the relay's own message counter: messages per second from the first to
the last message, and the ratio to one sender in the same run. Bounded in count and
time, loopback only; every process it starts is stopped.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the benchmark's workspace generator and relay)

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def measure(senders: int, args: argparse.Namespace, out: Path) -> tuple[float, int]:
    """Messages per second at the relay for `senders` processes, and messages seen."""
    database = f"notify_bench_{uuid.uuid4().hex[:10]}"
    workspace = out / f"fleet-{senders}"
    run.generate_workspace(workspace, recipients=args.messages, items_per_recipient=1.0)
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    sink = run.start_python_sink("delay", None, str(args.delay_ms / 1000))
    try:
        env = run.base_env(
            smtp_host=run.LOOPBACK,
            smtp_port=str(sink.port),
            smtp_security="none",
            connections=str(args.connections),
            ledger=f"postgresql://postgres@127.0.0.1:5432/{database}",
        )
        argv = run.notify_argv(workspace, "send", "--yes")
        mark = sink.mark()
        processes = [
            subprocess.Popen(
                argv, env=env, cwd=run.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )  # fmt: skip
            for _ in range(senders)
        ]
        deadline = time.monotonic() + args.timeout
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        seconds, seen, _ = sink.phase(mark, args.messages)
    finally:
        sink.stop()
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    return (seen / seconds if seconds else 0.0), seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1200)
    parser.add_argument("--delay-ms", type=float, default=25.0)
    parser.add_argument("--senders", default="1,2,3")
    parser.add_argument("--connections", type=int, default=4, help="per sender")
    parser.add_argument("--timeout", type=float, default=300.0, help="per sender count")
    args = parser.parse_args()
    out = run.REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    ceiling_one = args.connections / (run.ROUND_TRIPS_PER_MESSAGE * args.delay_ms / 1000)
    print(f"relay delay {args.delay_ms:g} ms, {args.connections} connections per sender, "
          f"{args.messages} messages; one sender's ceiling {ceiling_one:.0f}/s")  # fmt: skip
    print("senders | messages | msg/s at relay | x one sender")
    first = None
    for count in (int(n) for n in args.senders.split(",")):
        rate, seen = measure(count, args, out)
        first = first or rate
        print(f"{count:>7} | {seen:>8} | {rate:>14.1f} | {rate / first:>12.2f}", flush=True)


if __name__ == "__main__":
    main()

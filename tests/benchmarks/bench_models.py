"""Micro-benchmark: the record check (``parse_campaign``) per record, in microseconds.

Run from the repository root (a few seconds):

    .venv/bin/python -m tests.benchmarks.bench_models

Each record shape is decoded once and checked ``--number`` times per repeat; the best of
``--repeat`` repeats is printed (the least disturbed by other work on the machine), with the
median beside it. Nothing is asserted: docs/performance.md keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import timeit
from typing import Any

from exporter.api.models import parse_campaign
from tests.helpers import FIRST_EXAMPLE, SECOND_EXAMPLE

# Every field present and each text far longer than a label value may be (10,000 characters).
LONG_TEXTS: dict[str, Any] = dict(
    FIRST_EXAMPLE,
    **{key: SECOND_EXAMPLE[key] for key in ("total_leads", "completed_calls", "pending_calls")},
    scheduled_at="2024-06-01T09:00:00.000Z",
    name="N" * 10_000,
    agent_id="A" * 10_000,
    organization_id="O" * 10_000,
    from_phone_number="P" * 10_000,
)
SHAPES: dict[str, dict[str, Any]] = {
    "first example (no counters)": FIRST_EXAMPLE,
    "second example (counters)": SECOND_EXAMPLE,
    "every field, texts of 10,000 characters": LONG_TEXTS,
}


def measure(document: dict[str, Any], number: int, repeat: int) -> list[float]:
    """Microseconds per check of ``document``, one figure per repeat."""
    decoded = json.loads(json.dumps(document))
    cid = decoded["id"]
    times = timeit.repeat(lambda: parse_campaign(decoded, cid), number=number, repeat=repeat)
    return [seconds / number * 1e6 for seconds in times]


def main() -> None:
    """Print one markdown table of the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print("| record | best µs/check | median µs/check |")
    print("|---|---|---|")
    for label, document in SHAPES.items():
        figures = measure(document, args.number, args.repeat)
        print(f"| {label} | {min(figures):.2f} | {statistics.median(figures):.2f} |")


if __name__ == "__main__":
    main()

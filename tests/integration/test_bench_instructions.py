"""bench.instructions end to end: callgrind counts of real single-user backends.

Instruction counts are deterministic, so what must hold is asserted directly: a trigger
costs instructions, pgcast.watch's costs more than a trigger that does nothing, and the
table reports each variant against the plain INSERT.
"""

from __future__ import annotations

import shutil

from bench.instructions import measure, table


def test_trigger_costs_show_in_instruction_counts() -> None:
    assert shutil.which("valgrind"), "valgrind is missing: make install-bench-tools"
    report = measure(["plain", "noop_trigger", "watch"], transactions=3)
    per_tx = report["instructions_per_transaction"]
    assert 10_000 < per_tx["plain"] < per_tx["noop_trigger"] < per_tx["watch"]
    rendered = table(report)
    assert "| plain |" in rendered
    assert "| watch |" in rendered
    assert "1.00" in rendered.splitlines()[2]

"""`python -m bench`: only a full run replaces the committed report."""

from __future__ import annotations

import pytest

from bench.__main__ import PUBLISHED, SCRATCH, default_output


@pytest.mark.parametrize(("quick", "only"), [(True, None), (False, "memory"), (True, "library")])
def test_short_runs_leave_the_published_report_alone(quick: bool, only: str | None) -> None:
    """--quick and --only write under build/, never docs/BENCHMARKS.md or docs/benchmarks.json."""
    output = default_output(quick, only)
    assert output == SCRATCH and output.parts[0] == "build"
    assert output.with_name("benchmarks.json").parts[0] == "build"


def test_a_full_run_writes_the_published_report() -> None:
    """A full run (no --quick, no --only) writes docs/BENCHMARKS.md, the page the README links to."""
    assert default_output(False, None) == PUBLISHED and str(PUBLISHED) == "docs/BENCHMARKS.md"

"""Where the test suite's time goes, from the JUnit report every ``pytest`` run writes.

    python -m bench.suite [--junit .test-reports/junit.xml] [--label "clean clone"] [--setup-s 74]
                          [--wall-s 1500] [--record]

Each test case's time in the report is its set-up, call and tear-down together, so a session fixture
(a server, the SparkSession) is paid by the first test that asks for it. Groups: unit, contract, each
integration module, e2e. With ``--record`` the figures are appended to ``bench/results/suite.json``
(``--setup-s``: the ``.venv``/``.jvm``/chromium set-up measured by the caller; ``--wall-s``: the
whole run's wall time, which is less than the sum when tests run side by side).
"""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "suite.json"


def group_of(classname: str) -> str:
    """``tests.integration.test_etl`` -> ``integration/test_etl``; unit and contract as one group each."""
    parts = classname.split(".")
    kind = parts[1] if len(parts) > 1 else parts[0]
    if kind == "integration" and len(parts) > 2:
        return f"integration/{parts[2]}"
    return kind


def seconds_per_group(junit: Path) -> tuple[dict[str, float], dict[str, int], list[tuple[float, str]]]:
    """Seconds and test count per group, and every test case's (seconds, id)."""
    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    cases = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        group = group_of(case.get("classname", ""))
        took = float(case.get("time", 0))
        seconds[group] += took
        counts[group] += 1
        cases.append((took, f"{case.get('classname')}::{case.get('name')}"))
    return dict(seconds), dict(counts), sorted(cases, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--junit", type=Path, default=REPO / ".test-reports" / "junit.xml")
    parser.add_argument("--label", default="")
    parser.add_argument("--setup-s", type=float, default=None)
    parser.add_argument("--wall-s", type=float, default=None)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    seconds, counts, cases = seconds_per_group(args.junit)
    print("| group | tests | minutes |\n|---|---|---|")
    if args.setup_s is not None:
        print(f"| set-up (.venv, .jvm, chromium) | | {args.setup_s / 60:.1f} |")
    for group in sorted(seconds, key=lambda g: (g.split("/")[0] != "unit", g.split("/")[0], -seconds[g])):
        print(f"| {group} | {counts[group]} | {seconds[group] / 60:.1f} |")
    print(f"| **tests, summed** | {sum(counts.values())} | **{sum(seconds.values()) / 60:.1f}** |")
    if args.wall_s is not None:
        print(f"| **wall** | | **{args.wall_s / 60:.1f}** |")
    print("\nslowest:")
    for took, name in cases[:15]:
        print(f"  {took:7.1f} s  {name}")
    if args.record:
        runs = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        runs.append({
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "label": args.label,
            "setup_s": args.setup_s, "wall_s": args.wall_s,
            "groups": {g: {"tests": counts[g], "seconds": round(s, 1)} for g, s in seconds.items()},
            "slowest": [{"seconds": round(t, 1), "test": n} for t, n in cases[:30]],
        })  # fmt: skip
        RESULTS.write_text(json.dumps(runs, indent=1) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Rewrites tests/parity/known_differences.txt from a parity report.

    PARITY_REPORT=/tmp/parity.txt cargo test --test parity
    python3 tests/parity/update_known.py /tmp/parity.txt

Every case in the report becomes one line `label | what unidb does`; reasons already
written by hand for a label that still differs are kept.
"""
import re
import sys
from pathlib import Path

HERE = Path(__file__).parent
KNOWN = HERE / "known_differences.txt"
HEADER = """# Corpus cases (tests/parity/corpus.sql) whose outcome on unidb-on-SQLite differs from
# PostgreSQL 15 today: `label | what unidb does`. tests/parity.rs fails when a case
# differs without being listed here, and when a listed case has become identical.
# Regenerate after a change with tests/parity/update_known.py.
"""


def main() -> None:
    report = Path(sys.argv[1]).read_text()
    old = {}
    for line in KNOWN.read_text().splitlines():
        if line and not line.startswith("#") and " | " in line:
            label, why = line.split(" | ", 1)
            old[label.strip()] = why.strip()
    lines = []
    for block in report.split("\n--- ")[0:]:
        block = block.lstrip("- ")
        if not block.strip():
            continue
        label = block.split("\n", 1)[0].strip()
        m = re.search(r"\n  unidb:    (.*)", block)
        got = m.group(1) if m else ""
        if label in old and not old[label].startswith(("unidb answers", "result differs")):
            why = old[label]
        elif got.startswith("ERROR"):
            why = "unidb answers " + " ".join(got.split()[:2])
        else:
            why = "result differs"
        lines.append(f"{label} | {why}")
    KNOWN.write_text(HEADER + "\n" + "\n".join(lines) + "\n")
    print(f"{len(lines)} known differences")


if __name__ == "__main__":
    main()

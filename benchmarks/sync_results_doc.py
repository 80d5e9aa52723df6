"""Copy the committed sweep summaries' tables into docs/results.md, or check that they match.

docs/results.md marks each copied block:

    <!-- summary: benchmarks/results/rt-dirichlet-0.5/summary.md -->
    ...
    <!-- end summary -->

and the block holds that summary.md from its "Test accuracy" line through its "Majority-class
reference" line (the accuracy table, the paired differences, what is significant, and the
majority-class rate). Run after `secure-fedsa sweep --plot-only DIR` redraws a summary:

    python benchmarks/sync_results_doc.py           # rewrite the blocks
    python benchmarks/sync_results_doc.py --check   # exit 1 when a block differs (tests run this)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"
BLOCK = re.compile(
    r"(<!-- summary: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- end summary -->)", re.DOTALL
)
FIRST, LAST = "Test accuracy", "Majority-class reference"


def excerpt(summary: str, where: str) -> str:
    """The lines of ``summary`` from the FIRST marker line through the LAST marker line."""
    lines = summary.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith(FIRST))
        end = next(i for i, line in enumerate(lines) if i > start and line.startswith(LAST))
    except StopIteration:
        message = f"{where}: no '{FIRST}' ... '{LAST}' lines (not a sweep summary?)"
        raise SystemExit(message) from None
    return "\n".join(lines[start : end + 1]) + "\n"


def synced(doc: str, root: Path = ROOT) -> str:
    """``doc`` with every marked block replaced by its summary's excerpt."""

    def replace(match: re.Match[str]) -> str:
        path = root / match["path"]
        if not path.is_file():
            raise SystemExit(f"docs/results.md names {match['path']}, which does not exist")
        body = excerpt(path.read_text(encoding="utf-8"), match["path"])
        return f"{match.group(1)}{body}{match.group(4)}"

    return BLOCK.sub(replace, doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 on a difference")
    args = parser.parse_args()
    doc = DOC.read_text(encoding="utf-8")
    if not BLOCK.search(doc):
        raise SystemExit("docs/results.md has no '<!-- summary: PATH -->' block")
    new = synced(doc)
    if args.check:
        if new != doc:
            print(
                "docs/results.md differs from the committed summaries: run "
                "python benchmarks/sync_results_doc.py",
                file=sys.stderr,
            )
            sys.exit(1)
        return
    if new != doc:
        DOC.write_text(new, encoding="utf-8")
        print("docs/results.md: tables updated")
    else:
        print("docs/results.md: already in sync")


if __name__ == "__main__":
    main()

"""Copy result tables into README.md from the indexes that `pretty-align reproduce` writes, so the
README never holds a hand-typed number (non-negotiable 5).

    python scripts/readme_tables.py           # rewrite README.md's result blocks
    python scripts/readme_tables.py --check   # exit 1 if README.md differs from results/ (CI runs this)

A block in README.md is marked by the section it copies, a `## ` heading of a generated index
(`results/<preset>/README.md`), matched by the start of its title:

    <!-- results: quick/README.md#translation -->
    ...replaced by that section, heading excluded...
    <!-- /results -->
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- results: (?P<file>[^#\s]+)#(?P<section>[^>]+?) -->\n)(?P<body>.*?)(<!-- /results -->)",
                   re.DOTALL)


def section(index: Path, title: str) -> str:
    """The body of the first `## ` section of ``index`` whose title starts with ``title``."""
    parts = re.split(r"^## ", index.read_text(encoding="utf-8"), flags=re.MULTILINE)[1:]
    for part in parts:
        heading, _, body = part.partition("\n")
        if heading.startswith(title):
            return f"*From `results/{index.relative_to(ROOT / 'results')}`: {heading}*\n\n" + body.strip("\n") + "\n"
    raise SystemExit(f"{index}: no section starting with '## {title}'")


def render(readme: str) -> str:
    """``readme`` with every result block replaced by its section."""
    return BLOCK.sub(lambda m: m.group(1) + "\n" + section(ROOT / "results" / m.group("file"), m.group("section"))
                     + "\n" + m.group(5), readme)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check; exit 1 when README.md is out of date")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = ap.parse_args()
    text = args.readme.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        if new != text:
            print(f"{args.readme} is out of date with results/: run python scripts/readme_tables.py", file=sys.stderr)
            return 1
        print(f"{args.readme}: {len(BLOCK.findall(text))} result blocks match results/")
        return 0
    args.readme.write_text(new, encoding="utf-8")
    print(f"{args.readme}: {len(BLOCK.findall(new))} result blocks written")
    return 0


if __name__ == "__main__":
    sys.exit(main())

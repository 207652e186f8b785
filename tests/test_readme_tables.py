"""The README's result tables are copies of what `pretty-align reproduce` wrote into results/:
this fails when someone edits a number by hand or reruns a preset without updating the README."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_tables_match_results():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_tables.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    blocks = (ROOT / "README.md").read_text(encoding="utf-8").count("<!-- results: ")
    assert blocks >= 27 and f"{blocks} result blocks match results/" in proc.stdout   # every block was compared


def test_a_hand_edited_number_is_caught(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    edited = tmp_path / "README.md"
    # the first "none" row of a copied table, its headline number changed
    before, blocks = readme.split("<!-- results:", 1)
    match = re.search(r"\| none \| ([0-9.]+) \|", blocks)
    assert match, "no '| none | <number> |' row in the README's result blocks"
    changed = f"| none | {float(match.group(1)) + 11.1:.1f} |"
    blocks = blocks[:match.start()] + changed + blocks[match.end():]
    edited.write_text(before + "<!-- results:" + blocks, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_tables.py"), "--check",
                           "--readme", str(edited)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "out of date" in proc.stderr

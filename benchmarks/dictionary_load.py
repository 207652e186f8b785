"""Parse time of the real MUSE dictionaries (the pseudo prior's input): every ``en-XX.txt`` under
``$PRETTY_DATA/dictionaries/muse`` (default ``../shared/data``), loaded with the cache cleared.

    python benchmarks/dictionary_load.py            # target: each file in < 2 s on 2 cores

Prints entries, malformed lines and seconds per file, and exits non-zero if a file misses the
target. (This bound was a timing assertion in tests/test_dictionary.py until it failed a CI run
with the machine under load; timing targets live here, not in tests.)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pretty_align.languages import get_language  # noqa: E402
from pretty_align.priors import dictionary as dictmod  # noqa: E402

TARGETS = {"de": "deu_Latn", "es": "spa_Latn", "fr": "fra_Latn", "ja": "jpn_Jpan", "ru": "rus_Cyrl",
           "vi": "vie_Latn", "zh": "zho_Hans"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target-s", type=float, default=2.0, help="seconds allowed per file")
    args = ap.parse_args()
    muse = Path(os.environ.get("PRETTY_DATA", ROOT.parent / "shared" / "data")) / "dictionaries" / "muse"
    files = sorted(muse.glob("en-*.txt"))
    if not files:
        raise SystemExit(f"no en-*.txt under {muse} (set PRETTY_DATA)")
    print("| file | entries | malformed | seconds |")
    print("|---|---|---|---|")
    slow = []
    for f in files:
        iso1 = f.stem.split("-", 1)[1]
        dictmod._CACHE.clear()
        t = time.perf_counter()
        d = dictmod.BilingualDictionary.load(f, tgt=get_language(TARGETS[iso1]) if iso1 in TARGETS else None)
        seconds = time.perf_counter() - t
        print(f"| {f.name} | {len(d)} | {d.malformed_count} | {seconds:.2f} |")
        if seconds >= args.target_s:
            slow.append(f.name)
    print(f"target < {args.target_s:g} s per file: " + ("met" if not slow else f"NOT met ({', '.join(slow)})"))
    raise SystemExit(1 if slow else 0)


if __name__ == "__main__":
    main()

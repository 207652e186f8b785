"""Precision@1 of lexicons induced from Tatoeba pairs with eflomal against MUSE (issue 15.2).

    python benchmarks/lexicon.py [--langs de,fr,ru]

For each language: induce the English -> X lexicon from ``tatoeba/eng-XXX.{eng,XXX}`` (PRETTY_DATA,
default ../shared/data), then report the share of English words found in both lexicons whose first
induced translation is one of MUSE's, and the time the induction took (cached runs are instant:
delete ~/.cache/pretty_align/lexicons to time an alignment). The pseudo prior built on these lexicons
is compared with the MUSE one by the ``lexicon`` stage of ``reproduce --preset beyond``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pretty_align.languages import all_languages, get_language  # noqa: E402
from pretty_align.priors.lexicon import induce_lexicon, precision_at_1, read_lexicon  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--langs", default="de,fr,ru", help="ISO 639-1 codes with Tatoeba pairs and a MUSE dictionary")
    args = ap.parse_args()
    data = Path(os.environ.get("PRETTY_DATA", ROOT.parent / "shared" / "data"))
    rows = []
    for iso1 in args.langs.split(","):
        found = [lang for lang in all_languages().values()   # the FLORES language Tatoeba has pairs for
                 if lang.iso1 == iso1 and (data / "tatoeba" / f"eng-{lang.iso3}.eng").is_file()]
        if not found:
            sys.exit(f"no Tatoeba pairs for '{iso1}' under {data / 'tatoeba'}")
        tgt = found[0]
        t0 = time.perf_counter()
        path = induce_lexicon(data / "tatoeba" / f"eng-{tgt.iso3}.eng", data / "tatoeba" / f"eng-{tgt.iso3}.{tgt.iso3}",
                              get_language("eng_Latn"), tgt)
        seconds = time.perf_counter() - t0
        induced = read_lexicon(path)
        p1, n = precision_at_1(induced, read_lexicon(data / "dictionaries" / "muse" / f"en-{iso1}.txt"))
        rows.append({"lang": iso1, "induced_words": len(induced), "shared_with_muse": n,
                     "precision_at_1": round(p1, 1), "seconds": round(seconds, 1)})
        print(f"en-{iso1}: {len(induced)} source words induced; P@1 against MUSE {p1:.1f}% over {n} shared words "
              f"({seconds:.1f} s)")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()

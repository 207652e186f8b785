"""First load of a GGUF in the hf backend: the dequantization into an HF checkpoint, with the
backend's ``_gguf_parsed_once`` (each file parsed once, over a plain array) and with transformers
as it is (it parses the file three times through ``numpy.memmap`` slices).

    python benchmarks/gguf_convert.py [--model gemma3-270m]

Each way runs in its own process with an empty pretty-align cache (a temporary folder), imports
excluded from the time; the two checkpoints must be byte-identical (``models.dir_sha256``), else
the script exits non-zero. Run it on an otherwise idle machine: it times everything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

WAYS = ("parsed once", "transformers as is")


def child(way: str, model: str) -> None:
    """Convert ``model`` into the (empty) cache PRETTY_ALIGN_CACHE points at; print seconds and hash."""
    import torch  # noqa: F401  (imported before the clock starts)
    import transformers  # noqa: F401

    from pretty_align.backends import hf
    from pretty_align.models import dir_sha256, resolve_model

    if way == "transformers as is":
        hf._gguf_parsed_once = contextlib.nullcontext
    resolved = resolve_model(model)
    t = time.perf_counter()
    hf._load(resolved, "float32")
    seconds = time.perf_counter() - t
    converted = hf.converted_dir(resolved.sha256)
    print(json.dumps({"seconds": seconds, "sha256": dir_sha256(converted)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gemma3-270m", help="a GGUF model name or path")
    ap.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.model)
    results = {}
    for way in WAYS:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "PRETTY_ALIGN_CACHE": cache, "TRANSFORMERS_VERBOSITY": "error"}
            out = subprocess.run([sys.executable, __file__, "--model", args.model, "--child", way],
                                 env=env, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{way}: failed\n{out.stderr[-3000:]}")
            results[way] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"| {args.model}: first load in the hf backend | seconds | checkpoint sha256 |")
    print("|---|---|---|")
    for way, r in results.items():
        print(f"| {way} | {r['seconds']:.1f} | {r['sha256'][:16]} |")
    a, b = (results[w] for w in WAYS)
    same = a["sha256"] == b["sha256"]
    print(f"{b['seconds'] / a['seconds']:.2f}x faster parsed once; checkpoints "
          + ("byte-identical" if same else "DIFFER"))
    raise SystemExit(0 if same else 1)


if __name__ == "__main__":
    main()

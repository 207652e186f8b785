"""Where a step of the batched llamacpp backend goes (issue 14.3): the share of wall time inside
``llama_decode`` against the Python around it, and the decode throughput under context settings
that could matter (flash attention forced off/on, an f32 KV cache, a small ``n_ctx``).

    python benchmarks/llamacpp_step.py [--parallel 8] [--n 48] [--new-tokens 48] [--threads 2]

Requests: ``--n`` FLORES devtest translation prompts (benchmarks/roofline.py's), no prior, no stop
string, ``--new-tokens`` greedy tokens each, all handed to one ``generate`` call (continuous
batching over ``--parallel`` slots) after a warm-up call. Each variant loads the backend afresh
(context settings are fixed when a context is created) and applies its settings to every llama.cpp
context the backend creates; the parallel decoder's is the one that decodes. Run it on an otherwise
idle machine: it times everything.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

VARIANTS = {   # label -> (llama_context_params fields to set, backend options)
    "as configured": ({}, {}),
    "flash attention off": ({"flash_attn_type": 0}, {}),
    "flash attention on": ({"flash_attn_type": 1}, {}),
    "f32 KV cache": ({"type_k": 0, "type_v": 0}, {}),
    "n_ctx 512": ({}, {"n_ctx": 512}),
}


def run(args, fields: dict, options: dict, profile: bool = False) -> tuple[float, int, float | None]:
    """(wall s, generated tokens, share of wall time inside llama_decode or None)."""
    import llama_cpp

    from pretty_align.backends import load_backend
    from pretty_align.decoding import Decoding
    from roofline import requests_for

    original = llama_cpp.llama_init_from_model

    def init(model, params):
        for k, v in fields.items():
            setattr(params, k, v)
        return original(model, params)

    llama_cpp.llama_init_from_model = init
    try:
        backend = load_backend("llamacpp", "gemma3-270m", n_threads=args.threads, parallel=args.parallel, **options)
    finally:
        llama_cpp.llama_init_from_model = original
    reqs = requests_for(backend.tokenizer, args.n, args.new_tokens, Path(args.data))
    decoding = Decoding(max_new_tokens=args.new_tokens, stop=(), loop_guard=False, batch_size=args.parallel)
    backend.generate(reqs[:args.parallel], decoding)   # warm-up
    prof = cProfile.Profile() if profile else None
    t = time.perf_counter()
    if prof:
        prof.enable()
    out = backend.generate(reqs, decoding)
    if prof:
        prof.disable()
    wall = time.perf_counter() - t
    share = None
    if prof:
        stats = pstats.Stats(prof).stats   # (file, line, name) -> (cc, nc, tottime, cumtime, callers)
        share = sum(v[2] for (path, _, name), v in stats.items()
                    if name == "_decode" and path.endswith("llamacpp.py")) / wall   # ParallelDecoder._decode
    return wall, sum(len(g.new_ids) for g in out), share


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--data", default=os.environ.get("PRETTY_DATA", str(ROOT.parent / "shared" / "data")))
    args = ap.parse_args()
    print(f"llamacpp parallel={args.parallel}, {args.n} requests x {args.new_tokens} new tokens, "
          f"{args.threads} threads", flush=True)
    wall, toks, share = run(args, {}, {}, profile=True)
    print(f"profiled: {wall:.1f} s, {toks / wall:.1f} tokens/s; inside llama_decode (its Python wrapper "
          f"included): {100 * share:.1f}% of the wall time", flush=True)
    for label, (fields, options) in VARIANTS.items():
        wall, toks, _ = run(args, fields, options)
        print(f"  {label:<22} {wall:6.1f} s  {toks / wall:6.1f} tokens/s", flush=True)


if __name__ == "__main__":
    main()

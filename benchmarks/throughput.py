"""Throughput of greedy PRETTY generation with the HF backend on CPU: one example at a time vs
batched, on the same prompts, checking the outputs are identical.

    python benchmarks/throughput.py --n 32 --batch-size 8 --tgt deu_Latn [--dtype bfloat16]

Target (issue 2): batched >= 3x one-at-a-time in sentences/s at batch size 8.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

from pretty_align.backends import load_backend
from pretty_align.decoding import Decoding
from pretty_align.experiment.answerer import Answerer
from pretty_align.languages import get_language
from pretty_align.tasks.translation import TranslationTask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--flores", default=os.path.join(os.environ.get("PRETTY_DATA", "../shared/data"), "flores200"))
    ap.add_argument("--tgt", default="deu_Latn")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()

    t0 = time.time()
    backend = load_backend("hf", args.model, dtype=args.dtype)
    print(f"model load: {time.time() - t0:.1f}s  ({backend.signature()['model']}, sha256 "
          f"{backend.signature()['sha256'][:12]}, torch threads {__import__('torch').get_num_threads()}, {args.dtype})")
    task = TranslationTask(flores=args.flores, split="dev", n=args.n)
    examples = list(task.examples(get_language(args.tgt)))
    base = Decoding(max_new_tokens=args.max_new_tokens)
    results = {}
    for label, bs in (("one at a time", 1), (f"batched (bs={args.batch_size})", args.batch_size)):
        answerer = Answerer(backend, task, replace(base, batch_size=bs))  # no store: nothing cached
        answerer.answer(examples[:1])  # warm-up
        t = time.time()
        answers = answerer.answer(examples)
        dt = time.time() - t
        toks = sum(len(a.new_ids) for a in answers)
        results[label] = (dt, toks, [a.new_ids for a in answers])
        print(f"{label:>20}: {dt:7.1f}s  {len(examples) / dt:6.2f} sentences/s  {toks / dt:7.1f} generated tokens/s"
              f"  ({toks} tokens)")
    (d1, _, o1), (d2, _, o2) = results.values()
    same = sum(a == b for a, b in zip(o1, o2))
    print(f"speed-up: {d1 / d2:.2f}x   identical greedy outputs: {same}/{len(o1)}")


if __name__ == "__main__":
    main()

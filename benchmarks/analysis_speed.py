"""Decision-space analysis speed: one teacher-forced pass per model (what `pretty-align analyze`
does) vs the naive per-position loop (one full forward pass per answer position, prefix recomputed
each time, as public code does), on the same prompts and 64-token answers; checks both agree.

    python benchmarks/analysis_speed.py --n 4 --answer-tokens 64 [--adapter runs/sft/gemma3-270m-mt/adapter]

Target (issue 4): one pass >= 10x faster than the naive loop.
The answers are FLORES dev reference translations (continued with the next lines until they reach
exactly --answer-tokens tokens); the SFT model is gemma-3-270m + the LoRA adapter when given,
otherwise the base model against itself.
"""

from __future__ import annotations

import argparse
import os
import time

from pretty_align.analysis.decision import compare, naive_records
from pretty_align.backends import load_backend
from pretty_align.boundary import encode_prompt
from pretty_align.languages import get_language
from pretty_align.tasks.translation import TranslationTask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--flores", default=os.path.join(os.environ.get("PRETTY_DATA", "../shared/data"), "flores200"))
    ap.add_argument("--tgt", default="deu_Latn")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--answer-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()

    import torch

    base = load_backend("hf", args.model, dtype=args.dtype)
    sft = load_backend("hf", args.model, dtype=args.dtype, adapter=args.adapter) if args.adapter else base
    tgt = get_language(args.tgt)
    task = TranslationTask(flores=args.flores, split="dev", n=args.n + 8)
    examples = list(task.examples(tgt))
    tok = base.tokenizer
    items = []
    for i, ex in enumerate(examples[:args.n]):
        prompt = encode_prompt(tok, task.render(ex))
        text = " " + " ".join(e.reference for e in examples[i:])
        items.append((prompt.ids, tok.encode(text, add_special_tokens=False)[:args.answer_tokens]))
    print(f"{base.signature()['model']} (sha256 {base.signature()['sha256'][:12]}), SFT "
          f"{'adapter ' + sft.signature()['adapter_sha256'][:12] if args.adapter else '= base'}, {args.dtype}, "
          f"torch threads {torch.get_num_threads()}; {len(items)} examples x {args.answer_tokens} answer tokens, "
          f"prompts {min(len(p) for p, _ in items)}-{max(len(p) for p, _ in items)} tokens")

    list(compare(base, sft, items[:1]))  # warm-up
    t = time.time()
    fast = dict(compare(base, sft, items, batch_size=args.batch_size))
    t_fast = time.time() - t
    t = time.time()
    slow = {i: naive_records(base, sft, p, a) for i, (p, a) in enumerate(items)}
    t_slow = time.time() - t
    positions = sum(len(a) for _, a in items)
    same_rank = sum(x.rank_base == y.rank_base for i in fast for x, y in zip(fast[i], slow[i]))
    max_dkl = max(abs(x.kl - y.kl) for i in fast for x, y in zip(fast[i], slow[i]))
    max_dp = max(max(abs(x.p_base - y.p_base), abs(x.p_sft - y.p_sft)) for i in fast for x, y in zip(fast[i], slow[i]))
    print(f"     one pass per model: {t_fast:7.1f}s  ({positions / t_fast:8.1f} positions/s)")
    print(f"naive per-position loop: {t_slow:7.1f}s  ({positions / t_slow:8.1f} positions/s)")
    print(f"speed-up: {t_slow / t_fast:.1f}x; identical base ranks at {same_rank}/{positions} positions; "
          f"max |dKL| {max_dkl:.2e}, max |dp| {max_dp:.2e}")


if __name__ == "__main__":
    main()

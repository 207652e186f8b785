"""pretty-align side by side with what researchers use instead (issue 14): lm-evaluation-harness's
HF backend (``generate_until``) and plain batched ``transformers`` ``generate``, on the same requests.

    python benchmarks/lm_eval_compare.py --n 100 --tgt deu_Latn [--sft-adapter runs/sft/gemma3-270m-mt/adapter]

Requests: ``--n`` FLORES devtest sentences (en -> ``--tgt``) x none / pseudo k=2 (MUSE) / sft k=2
(the SFT counterpart's first tokens) / gold k=2 (the reference's first tokens), built once through
the runner's own code. Every system gets the same prompt + prior: pretty-align as token ids;
lm-eval as the context string (its ``gen_prefix`` convention: the prior appended to the context),
which it tokenizes itself (the output counts the contexts whose ids then equal ours); plain
``generate`` as the same ids, left-padded. All greedy, float32, batch size ``--batch-size``, the
same ``--max-new-tokens`` for every request and the stop string "\\n"; pretty-align's loop guard
is off so that the three stop by the same rule.
pretty-align's hf backend computes the output layer as ``--output-layer`` says (default ``mm``,
its fastest float32 form on an AVX2 CPU; ``linear`` is transformers' own, which the other two run);
``--prepack`` runs every linear layer, the output layer included, through oneDNN over weights packed
once at load (the backend's ``prepack`` option; then the output layer is not ``mm``).

Reported: wall time, outputs/s, the speed ratio, and the share of identical outputs (the text
before the first newline, stripped). Targets: pretty-align >= 3x faster than lm-eval, with >= 95%
identical outputs. Needs ``pip install -e '.[bench]'`` (lm-eval with its HF backend). Run it
on an otherwise idle machine: it times everything.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
name = "bench-lm-eval"
store = "{store}"
[base]
model = "gemma3-270m"
dtype = "float32"
[reference]
model = "gemma3-270m"
adapter = "{adapter}"
dtype = "float32"
chat = false
[task]
name = "translation"
source = "eng_Latn"
targets = ["{tgt}"]
flores = "{data}/flores200"
split = "devtest"
n = {n}
[decoding]
max_new_tokens = {max_new}
batch_size = {batch_size}
[[priors]]
strategy = "none"
[[priors]]
strategy = "pseudo"
k = 2
dictionary = "{data}/dictionaries/muse/en-{{tgt_iso1}}.txt"
[[priors]]
strategy = "sft"
k = 2
model = "reference"
[[priors]]
strategy = "gold"
k = 2
"""


def build_requests(args) -> tuple[list, list[str], object]:
    """[(condition, example index, prompt ids, prior ids)] for every condition x example, and the tokenizer."""
    from pretty_align.experiment.config import load_config
    from pretty_align.experiment.runner import Runner
    from pretty_align.priors import PriorItem

    text = CONFIG.format(store=ROOT / "runs" / "bench-lm-eval.sqlite", adapter=Path(args.sft_adapter).resolve(),
                         tgt=args.tgt, data=args.data, n=args.n, max_new=args.max_new_tokens,
                         batch_size=args.batch_size)
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
    runner = Runner(load_config(Path(f.name)))
    tgt = runner.targets[0]
    examples = runner.examples[tgt.code]
    conds = [c for c in runner.conditions if c.prior is not None]
    answerer = conds[0].answerer
    prompts = [answerer.prompt(ex)[0] for ex in examples]
    rows = []
    for cond in conds:
        priors = cond.prior.build([PriorItem(ex, p) for ex, p in zip(examples, prompts)], answerer.tokenizer)
        rows += [(cond.label, i, list(p.ids), list(prior.ids)) for i, (p, prior) in enumerate(zip(prompts, priors))]
    rows.sort(key=lambda r: (r[1], r[0]))   # example by example, as the runner sends them
    return rows, [c.label for c in conds], answerer.tokenizer


def hf_checkpoint(tok) -> Path:
    """The HF checkpoint the hf backend dequantizes gemma-3-270m's GGUF into: the directory its
    loaded tokenizer came from (the backend converts it once, so lm-eval and ``generate`` read
    exactly the weights pretty-align runs, whichever systems are chosen)."""
    path = Path(tok.name_or_path)
    if not (path / "config.json").exists():
        raise SystemExit(f"expected the hf backend's converted checkpoint at {path}")
    return path


def first_line(text: str) -> str:
    return text.split("\n", 1)[0].strip()


def run_pretty(rows, args) -> tuple[float, list[str]]:
    from pretty_align.backends import load_backend
    from pretty_align.backends.base import GenerationRequest
    from pretty_align.decoding import Decoding

    backend = load_backend("hf", "gemma3-270m", dtype="float32", threads=args.threads,
                           output_layer="linear" if args.prepack else args.output_layer, prepack=args.prepack)
    decoding = Decoding(max_new_tokens=args.max_new_tokens, stop=("\n",), loop_guard=False, batch_size=args.batch_size)
    reqs = [GenerationRequest(tuple(prompt), tuple(prior), args.max_new_tokens) for _, _, prompt, prior in rows]
    backend.generate(reqs[:args.batch_size], decoding)   # warm-up
    t = time.perf_counter()
    out = []
    step = 4 * args.batch_size   # the runner's chunks: batch_size examples x 4 conditions
    for j in range(0, len(reqs), step):
        out += backend.generate(reqs[j:j + step], decoding)
    wall = time.perf_counter() - t
    tok = backend.tokenizer
    return wall, [first_line(tok.decode(g.new_ids, skip_special_tokens=True)) for g in out]


def run_lm_eval(rows, tok, checkpoint: Path, args) -> tuple[float, list[str], int]:
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise SystemExit("lm-eval is not installed: pip install -e '.[bench]' (lm-eval[hf])") from None
    lm = HFLM(pretrained=str(checkpoint), dtype="float32", batch_size=args.batch_size, device="cpu",
              add_bos_token=True, max_length=1024)
    contexts = [tok.decode((prompt + prior)[1:]) for _, _, prompt, prior in rows]   # lm-eval adds the BOS itself
    same_ids = sum(lm.tok_encode(c) == prompt + prior for c, (_, _, prompt, prior) in zip(contexts, rows))
    kwargs = {"until": ["\n"], "max_gen_toks": args.max_new_tokens, "do_sample": False}
    inst = [Instance(request_type="generate_until", doc={}, arguments=(c, dict(kwargs)), idx=i)
            for i, c in enumerate(contexts)]
    lm.generate_until(inst[:args.batch_size], disable_tqdm=True)   # warm-up
    t = time.perf_counter()
    out = lm.generate_until(inst, disable_tqdm=True)
    return time.perf_counter() - t, [first_line(o) for o in out], same_ids


def run_generate(rows, checkpoint: Path, args) -> tuple[float, list[str]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def batch(ids_list):
        width = max(map(len, ids_list))
        ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids_list])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids_list])
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.max_new_tokens,
                                 do_sample=False, stop_strings=["\n"], tokenizer=tok, pad_token_id=pad)
        return [first_line(tok.decode(g[width:], skip_special_tokens=True)) for g in gen]

    all_ids = [prompt + prior for _, _, prompt, prior in rows]
    batch(all_ids[:args.batch_size])   # warm-up
    t = time.perf_counter()
    out = []
    for j in range(0, len(all_ids), args.batch_size):
        out += batch(all_ids[j:j + args.batch_size])
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--tgt", default="deu_Latn")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--sft-adapter", default=str(ROOT / "runs" / "sft" / "gemma3-270m-mt" / "adapter"))
    ap.add_argument("--systems", default="pretty-align,lm-eval,generate")
    ap.add_argument("--output-layer", choices=("linear", "mm"), default="mm",
                    help="pretty-align's hf option output_layer (lm-eval and generate run transformers' own)")
    ap.add_argument("--prepack", action="store_true",
                    help="pretty-align's hf option prepack (oneDNN over weights packed once; implies output layer linear)")
    ap.add_argument("--data", default=os.environ.get("PRETTY_DATA", str(ROOT.parent / "shared" / "data")))
    args = ap.parse_args()
    if not Path(args.sft_adapter).is_dir():
        raise SystemExit(f"no SFT adapter at {args.sft_adapter}: build one (pretty-align sft configs/sft-gemma.toml) "
                         "or give --sft-adapter")
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.time()
    rows, conds, tok = build_requests(args)
    print(f"requests: {len(rows)} ({args.n} sentences x {conds}), built in {time.time() - t0:.0f}s; "
          f"adapter {args.sft_adapter}; float32, batch {args.batch_size}, {args.max_new_tokens} new tokens max, "
          f"{args.threads} threads; pretty-align "
          f"{'prepack' if args.prepack else f'output_layer={args.output_layer}'}", flush=True)
    checkpoint = hf_checkpoint(tok)
    results: dict[str, tuple[float, list[str]]] = {}
    for name in args.systems.split(","):
        if name == "pretty-align":
            results[name] = run_pretty(rows, args)
        elif name == "lm-eval":
            wall, outs, same_ids = run_lm_eval(rows, tok, checkpoint, args)
            results[name] = (wall, outs)
            print(f"lm-eval contexts tokenized to our ids: {same_ids}/{len(rows)}")
        elif name == "generate":
            results[name] = run_generate(rows, checkpoint, args)
        else:
            raise SystemExit(f"unknown system {name!r}")
        print(f"{name:>13}: {results[name][0]:7.1f} s, {len(rows) / results[name][0]:.2f} outputs/s", flush=True)
    names = list(results)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            same = sum(x == y for x, y in zip(results[a][1], results[b][1]))
            print(f"agreement: {a} vs {b}: {same}/{len(rows)} identical outputs ({100 * same / len(rows):.1f}%)")
    if {"pretty-align", "lm-eval"} <= results.keys():
        ratio = results["lm-eval"][0] / results["pretty-align"][0]
        print(f"pretty-align vs lm-eval: {ratio:.2f}x faster (target >= 3)")
    if {"pretty-align", "generate"} <= results.keys():
        print(f"pretty-align vs batched HF generate: {results['generate'][0] / results['pretty-align'][0]:.2f}x faster")
    for label in conds:
        idx = [j for j, r in enumerate(rows) if r[0] == label]
        if {"pretty-align", "lm-eval"} <= results.keys():
            same = sum(results["pretty-align"][1][j] == results["lm-eval"][1][j] for j in idx)
            print(f"  {label}: pretty-align = lm-eval on {same}/{len(idx)}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

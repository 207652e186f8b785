"""Wall time of the dynamic prior against base-only and SFT-only decoding (issue 13.1).

    python benchmarks/dynamic.py --n 50 --tgt deu_Latn --tau 0.2 --k 1 [--parallel 8] [--threads 2] [--prepack]

gemma-3-270m (the GGUF, llamacpp backend, ``--parallel`` sequences per step as in the presets)
decodes FLORES devtest sentences three ways, after every model is loaded (load times are printed
apart):

* ``base``    the base model alone (the ``none`` condition);
* ``sft``     the SFT counterpart alone (hf, bfloat16, our LoRA adapter merged: the reference model);
* ``dynamic`` the base model with the ``dynamic`` prior, the SFT counterpart as helper (id level).

Printed per way: wall seconds, generated tokens, tokens/s, and for ``dynamic`` the helper's share of
the output tokens, its interventions, and the tokens its sessions evaluated (its cost: one prefill
per row plus the tokens it was fed, never a second full decode). Then the ratios dynamic/base and
dynamic/sft. Needs the counterpart (``runs/sft/gemma3-270m-mt/adapter``; ``pretty-align sft
configs/sft-gemma.toml`` or ``reproduce --preset paper`` builds it). Run it on an idle machine.

Smallest check: ``--n 2 --max-new-tokens 8``.
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

from pretty_align.backends import load_backend  # noqa: E402
from pretty_align.decoding import Decoding  # noqa: E402
from pretty_align.experiment.answerer import Answerer  # noqa: E402
from pretty_align.experiment.signature import code_revision  # noqa: E402
from pretty_align.languages import get_language  # noqa: E402
from pretty_align.priors import PriorItem, make_prior  # noqa: E402
from pretty_align.tasks.translation import TranslationTask  # noqa: E402

ADAPTER = ROOT / "runs" / "sft" / "gemma3-270m-mt" / "adapter"


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50, help="FLORES devtest sentences")
    ap.add_argument("--tgt", default="deu_Latn")
    ap.add_argument("--tau", type=float, default=0.2)
    ap.add_argument("--margin", type=float, default=0.0)
    ap.add_argument("--k", type=int, default=1, help="positions always given to the helper")
    ap.add_argument("--parallel", type=int, default=8, help="llamacpp sequences per step (1: serial)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--adapter", default=str(ADAPTER))
    ap.add_argument("--prepack", action="store_true",
                    help="the counterpart's hf option prepack (oneDNN over weights packed once at load)")
    args = ap.parse_args()
    if not Path(args.adapter, "adapter_config.json").is_file():
        sys.exit(f"no SFT adapter at {args.adapter}: build it with `pretty-align sft configs/sft-gemma.toml`")
    data = Path(os.environ.get("PRETTY_DATA", ROOT.parent / "shared" / "data"))
    task = TranslationTask("eng_Latn", flores=str(data / "flores200"), split="devtest", n=args.n)
    exs = list(task.examples(get_language(args.tgt)))
    dec = Decoding(max_new_tokens=args.max_new_tokens, batch_size=8)

    base, t_base_load = timed(lambda: load_backend("llamacpp", "gemma3-270m", n_threads=args.threads,
                                                                 parallel=args.parallel))
    sft, t_sft_load = timed(lambda: load_backend("hf", "gemma3-270m", adapter=args.adapter,
                                                              dtype="bfloat16", threads=args.threads,
                                                              prepack=args.prepack))
    a_base, a_sft = Answerer(base, task, dec), Answerer(sft, task, dec)
    for ex in exs:   # prompts are encoded before any timing
        a_base.prompt(ex), a_sft.prompt(ex)

    base_out, t_base = timed(lambda: a_base.answer(exs))
    sft_out, t_sft = timed(lambda: a_sft.answer(exs))
    prior = make_prior("dynamic", k=args.k, answerer=a_sft, tau=args.tau, margin=args.margin)

    def dynamic():
        built = prior.build([PriorItem(e, a_base.prompt(e)[0]) for e in exs], base.tokenizer)
        sessions = [r.hook.session for r in built]
        answers = a_base.answer(exs, hooks=[r.hook for r in built])
        return built, sessions, answers

    (built, sessions, dyn_out), t_dyn = timed(dynamic)
    traces = [r.hook.finish(len(a.new_ids)) for r, a in zip(built, dyn_out)]
    tokens = {name: sum(len(a.new_ids) for a in out) for name, out in
              (("base", base_out), ("sft", sft_out), ("dynamic", dyn_out))}
    walls = {"base": t_base, "sft": t_sft, "dynamic": t_dyn}
    helper = sum(t["helper_tokens"] for t in traces)
    result = {
        "n": len(exs), "tgt": args.tgt, "tau": args.tau, "margin": args.margin, "k": args.k,
        "parallel": args.parallel, "threads": args.threads, "prepack": args.prepack, "code": code_revision(),
        "load_s": {"base": round(t_base_load, 1), "sft": round(t_sft_load, 1)},
        "wall_s": {k: round(v, 1) for k, v in walls.items()}, "tokens": tokens,
        "tokens_per_s": {k: round(tokens[k] / walls[k], 1) for k in walls},
        "helper_share_%": round(100 * helper / max(1, tokens["dynamic"]), 1),
        "interventions": sum(len(t["interventions"]) for t in traces),
        "helper_evaluated_tokens": sum(s.evaluated for s in sessions),
        "dynamic_vs_base": round(t_dyn / t_base, 2), "dynamic_vs_sft": round(t_dyn / t_sft, 2),
    }
    print(f"{'way':<8} {'wall s':>8} {'tokens':>7} {'tok/s':>7}")
    for k in walls:
        print(f"{k:<8} {walls[k]:>8.1f} {tokens[k]:>7} {tokens[k] / walls[k]:>7.1f}")
    print(f"dynamic: helper share {result['helper_share_%']}% of output tokens, {result['interventions']} "
          f"interventions, helper sessions evaluated {result['helper_evaluated_tokens']} tokens; "
          f"wall time {result['dynamic_vs_base']}x base-only, {result['dynamic_vs_sft']}x SFT-only")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

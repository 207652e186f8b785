"""The loop guard, old rule against new, on real runs and on gold data.

    python benchmarks/loop_guard.py --n 20          # real runs: POS (configs/pos.toml), translation (configs/sft-eval.toml)
    python benchmarks/loop_guard.py --check-gold    # every gold POS answer and FLORES devtest reference

Old rule: any cycle of <= 16 tokens repeated 4 times stops the row, from its first token (so four
equal tags or "10000" split into digits stop it). New rule (``Decoding`` defaults): the repetition
must also cover ``loop_min_span`` tokens and come past ``loop_after`` of the row's budget.

Real runs: each config runs with the guard off on the first N examples per language, every
base-model condition that needs no SFT counterpart (the counterpart must be built first with
`pretty-align sft`). Greedy decoding is deterministic and the guard only ends a row early, so a
guarded row is exactly the unguarded one cut where the rule first fires: both rules are replayed
through ``decoding.RowState`` on the same generations, each row with its own budget.

Gold data: each gold answer (POS, tags and word/tag forms, test+dev) and reference (FLORES devtest,
every language here) is fed through both rules as if the model had produced it, with the budget
its source would get under configs/pos.toml or configs/sft-eval.toml; a rule that stops it would
have cut a correct answer.
"""

from __future__ import annotations

import argparse
from collections import Counter
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from pretty_align.backends import load_backend
from pretty_align.decoding import Decoding, RowState
from pretty_align.experiment.config import load_config
from pretty_align.experiment.runner import Runner

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"pos": ROOT / "configs" / "pos.toml", "translation": ROOT / "configs" / "sft-eval.toml"}
NEW = Decoding(stop=(), loop_guard=True)
RULES = {"old (4 repeats, anywhere)": replace(NEW, loop_min_span=1, loop_after=0.0),
         f"new (4 repeats, >= {NEW.loop_min_span} tokens, past {NEW.loop_after:g} of budget)": NEW}


def guard_stop(ids: list[int], budget: int, rule: Decoding, tokenizer) -> int | None:
    """How many ids a row guarded by ``rule`` keeps, or None if the rule never stops ``ids``."""
    row = RowState(rule, tokenizer, budget)
    for tok in ids:
        if row.push(tok, set()) == "loop":
            return len(row.new)
    return None


def report(label: str, rows: list[tuple[int, list[int]]], tokenizer, examples: list[str] | None = None,
           ends: list[str] | None = None) -> None:
    """Print, for each rule, how many of ``rows`` ((budget, ids)) it stops and the tokens it drops;
    ``ends``: how each row ended unguarded (for the rows only the old rule stops)."""
    stops = {rule: [guard_stop(ids, b, d, tokenizer) for b, ids in rows] for rule, d in RULES.items()}
    print(f"{label}: {len(rows)} rows")
    for rule, cut in stops.items():
        n_cut = sum(c is not None for c in cut)
        lost = sum(len(ids) - c for (_, ids), c in zip(rows, cut) if c is not None)
        print(f"  {rule:<52} stops {n_cut:>5}/{len(rows)} rows ({100 * n_cut / len(rows):.2f}%), dropping {lost} tokens")
    old, new = stops.values()
    only_old = [i for i, (a, b) in enumerate(zip(old, new)) if a is not None and b is None]
    print(f"  stopped by the old rule only: {len(only_old)}; by the new rule only: "
          f"{sum(a is None and b is not None for a, b in zip(old, new))}")
    if ends is not None and only_old:
        print(f"  how those rows end under the new rule (unguarded stop reason): "
              f"{dict(Counter(ends[i] for i in only_old).most_common())}")
    for i in only_old[:3]:
        print(f"    the old rule cut, the new keeps: {tokenizer.decode(rows[i][1])[:110]!r}")
    for i, c in enumerate(new):
        if c is not None and examples is not None:
            print(f"    the new rule cuts: {examples[i][:110]!r}")


def generations(config: Path, n: int, threads: int, store: Path):
    """(base tokenizer, (budget, new ids) of every base-model row, their stop reasons, condition labels) of
    ``config``'s run on ``n`` examples per language, guard off, on the llamacpp backend."""
    cfg = load_config(config, {"task.n": n, "decoding.loop_guard": False, "store": str(store),
                               "base.backend": "llamacpp", "base.options": {"n_threads": threads}})
    cfg = cfg.model_copy(update={"reference": None,
                                 "priors": [p for p in cfg.priors if p.strategy not in {"sft", "model"}]})
    seen: list[tuple[int, list[int]]] = []
    ends: list[str] = []

    def factory(name, model, **options):
        backend = load_backend(name, model, **options)
        real = backend.generate

        def generate(reqs, dec, on_done=None):
            def done(i, gen):
                seen.append((reqs[i].max_new_tokens or dec.max_new_tokens, list(gen.new_ids)))
                ends.append(gen.stop_reason)
                if on_done:
                    on_done(i, gen)
            return real(reqs, dec, done)

        backend.generate = generate
        return backend

    runner = Runner(cfg, backend_factory=factory)
    runner.run(progress=True)
    return runner.base.tokenizer, seen, ends, [c.label for c in runner.conditions]


def gold() -> None:
    """Both rules on every gold answer, with the budget its source gets under the task's config."""
    from pretty_align.backends.llamacpp import GGUFTokenizer
    from pretty_align.boundary import answer_ids, encode_prompt
    from pretty_align.experiment.runner import build_task
    from pretty_align.languages import get_language
    from pretty_align.models import known_model_path

    tok = GGUFTokenizer.from_path(known_model_path("gemma3-270m"))
    cases = {"POS tags (test+dev)": (TASKS["pos"], {"task.answer_format": "tags"}),
             "POS word/tag (test+dev)": (TASKS["pos"], {"task.answer_format": "word/tag"}),
             "FLORES devtest references": (TASKS["translation"], {})}
    for label, (path, extra) in cases.items():
        rows, texts = [], []
        splits = ("test", "dev") if "POS" in label else ("devtest",)
        for split in splits:
            shots = {"task.shots_split": "test"} if split == "dev" else {}   # never from the evaluated file
            cfg = load_config(path, {"task.n": None, "task.split": split, **shots, **extra})
            decoding, task = cfg.decoding.build(), build_task(cfg)
            targets = cfg.task.targets if "POS" in label else sorted(
                p.stem for p in (Path(cfg.task.flores) / split).glob("*.devtest") if p.stem != "eng_Latn")
            for code in targets:
                for ex in task.examples(get_language(code)):
                    src = len(tok.encode(ex.source, add_special_tokens=False))
                    prompt = encode_prompt(tok, task.render(ex))
                    rows.append((decoding.budget(src), answer_ids(tok, prompt, ex.reference)))
                    texts.append(ex.reference)
        report(label, rows, tok, texts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="examples per language")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--check-gold", action="store_true", help="replay gold answers instead of running models")
    args = ap.parse_args()
    if args.check_gold:
        gold()
        return
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            t0 = time.time()
            tok, rows, ends, conditions = generations(TASKS[task], args.n, args.threads, Path(tmp) / f"{task}.sqlite")
            report(f"{task} ({', '.join(conditions)}; {args.n} per language; generated in {time.time() - t0:.0f}s "
                   "with the guard off)", rows, tok, ends=ends)


if __name__ == "__main__":
    main()

"""Time of the LoRA SFT build's optimizer steps, with and without frozen weights held in bf16 (issue 14.4).

    python benchmarks/sft_steps.py                        # configs/sft-gemma.toml, 10 steps each way
    python benchmarks/sft_steps.py --steps 20 --profile   # + the top operators of the faster run

Both runs take the first ``--steps`` optimizer steps of the real build (the config's data, batch
order, LoRA init and optimizer; nothing is written to its output directory) and one validation pass
over ``--val`` examples. ``freeze_for_autocast`` (sft/train.py) holds the frozen linear and output
layer weights in bf16 once instead of letting autocast cast them on every call. The benchmark
prints the seconds per step and per validation pass of each run and checks that both runs give
bit-identical losses and LoRA weights: the speed-up must not change a bit of the adapter.

Only meaningful where the config trains in bf16 (``dtype = "auto"`` on a CPU with native bf16,
AVX512-BF16 or AMX); elsewhere there is nothing to hold in bf16 and it says so. Run it on an
otherwise idle machine: it times everything.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(config: Path, steps: int, n_val: int, freeze: bool, profile: bool) -> dict:
    """The first ``steps`` optimizer steps of the build of ``config``; timings, losses, LoRA weights."""
    import torch

    import pretty_align.sft.train as train
    from pretty_align.sft.config import load_sft_config

    original = train.freeze_for_autocast
    if not freeze:
        train.freeze_for_autocast = lambda model, dtype: 0
    try:
        trainer = train.Trainer(load_sft_config(config), progress=False)
        if trainer.cfg.train.threads:
            torch.set_num_threads(trainer.cfg.train.threads)
        tok, model = trainer._load_model()
    finally:
        train.freeze_for_autocast = original
    split = trainer.load_split(tok)
    t = trainer.cfg.train
    pad = tok.pad_token_id
    order = train.batch_order([len(e.input_ids) for e in split.train], t.batch_size, t.bucket_batches,
                              trainer.cfg.data.seed, 0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, train._schedule(t.warmup_steps, max(steps, t.warmup_steps + 1)))
    model.train()
    groups = [order[s * t.grad_accum:(s + 1) * t.grad_accum] for s in range(steps)]

    def step(group):
        return trainer._step(model, opt, sched, [[split.train[i] for i in b] for b in group], pad, params)[0]

    losses = [step(groups[0])]            # the first step pays one-off allocations: not timed
    start = time.perf_counter()
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            losses += [step(g) for g in groups[1:]]
    else:
        losses += [step(g) for g in groups[1:]]
    step_s = (time.perf_counter() - start) / max(1, steps - 1)
    start = time.perf_counter()
    val = trainer._evaluate(model, split.validation[:n_val], pad)
    val_s = time.perf_counter() - start
    return {"dtype": trainer.cfg.base.dtype, "step_s": step_s, "val_s": val_s, "losses": losses, "val": val,
            "weights": {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad},
            "tokens": sum(split.train[i].answer_length for g in groups for b in g for i in b),
            "profile": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12) if profile else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "sft-gemma.toml")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per run (the first is not timed)")
    ap.add_argument("--val", type=int, default=229, help="validation examples in the timed pass (229: all of "
                                                          "sft-gemma.toml's)")
    ap.add_argument("--profile", action="store_true", help="torch.profiler over the faster run's steps")
    args = ap.parse_args()
    if args.steps < 2:
        ap.error("--steps must be at least 2 (the first step is not timed)")
    import torch

    from pretty_align.experiment.signature import code_revision

    fast = run(args.config, args.steps, args.val, freeze=True, profile=args.profile)
    if fast["dtype"] != "bfloat16":
        print(f"{args.config} trains in {fast['dtype']} here: no autocast, nothing to hold in bf16; no comparison.")
        return
    plain = run(args.config, args.steps, args.val, freeze=False, profile=False)
    same = (fast["losses"] == plain["losses"] and fast["val"] == plain["val"]
            and all(torch.equal(fast["weights"][k], plain["weights"][k]) for k in fast["weights"]))
    print(f"{args.config.name}, {args.steps} optimizer steps ({fast['tokens']} answer tokens), "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, pretty-align {code_revision()}")
    print("| frozen weights | s / step | validation pass (s) |")
    print("|---|---|---|")
    print(f"| cast by autocast on every call | {plain['step_s']:.2f} | {plain['val_s']:.1f} |")
    print(f"| held in bf16 (freeze_for_autocast) | {fast['step_s']:.2f} | {fast['val_s']:.1f} |")
    print(f"speed-up per step: {plain['step_s'] / fast['step_s']:.2f}x; losses, validation loss and LoRA "
          f"weights bit-identical: {'yes' if same else 'NO'}")
    if fast["profile"]:
        print(fast["profile"])
    if not same:
        raise SystemExit("the two runs differ: freeze_for_autocast changed the arithmetic")


if __name__ == "__main__":
    main()

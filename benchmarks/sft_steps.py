"""Time of the LoRA SFT build's optimizer steps, with and without frozen weights held in bf16 (issue 14.4).

    python benchmarks/sft_steps.py                        # configs/sft-gemma.toml, 10 steps each way
    python benchmarks/sft_steps.py --steps 20

Each run is the real build (``Trainer.build``) of the config cut to ``--steps`` optimizer steps, with
validation and a checkpoint only at the end, into a temporary output directory; the seconds per
step are the gaps between the build's ``on_step`` calls, leaving out the first step (one-off
allocations) and the last (validation, checkpoint). ``freeze_for_autocast`` (sft/train.py) holds the
frozen linear and output layer weights in bf16 once instead of letting autocast cast them on every
call. The benchmark prints the seconds per step of each run and checks that both give the same
losses and a bit-identical adapter directory (``dir_sha256``): the speed-up must not change a bit.

Only meaningful where the config trains in bf16 (``dtype = "auto"`` on a CPU with native bf16,
AVX512-BF16 or AMX); elsewhere there is nothing to hold in bf16 and it says so. Run it on an
otherwise idle machine: it times everything.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(config: Path, steps: int, freeze: bool, out: Path) -> dict:
    """A build of ``config`` cut to ``steps`` optimizer steps into ``out``: seconds per step, losses,
    adapter hash."""
    import pretty_align.sft.train as train
    from pretty_align.models import dir_sha256
    from pretty_align.sft.config import load_sft_config

    cfg = load_sft_config(config, {"output": str(out), "train.max_steps": steps, "train.eval_every": steps,
                                   "train.checkpoint_every": steps})
    stamps: list[float] = []
    original = train.freeze_for_autocast
    if not freeze:
        train.freeze_for_autocast = lambda model, dtype: 0
    try:
        trainer = train.Trainer(cfg, progress=False, on_step=lambda step, group: stamps.append(time.perf_counter()))
        result = trainer.build()
    finally:
        train.freeze_for_autocast = original
    timed = stamps[:-1]                 # from the end of step 1 to the end of step steps - 1
    return {"dtype": trainer.cfg.base.dtype, "step_s": (timed[-1] - timed[0]) / (len(timed) - 1),
            "history": result.state.history, "adapter": dir_sha256(result.adapter_dir),
            "tokens": result.state.tokens_seen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "sft-gemma.toml")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per run (the first is not timed)")
    args = ap.parse_args()
    if args.steps < 3:
        ap.error("--steps must be at least 3 (the first and last steps are not timed)")
    import torch

    from pretty_align.experiment.signature import code_revision

    with tempfile.TemporaryDirectory() as tmp:
        fast = run(args.config, args.steps, True, Path(tmp) / "fast")
        if fast["dtype"] != "bfloat16":
            print(f"{args.config} trains in {fast['dtype']} here: no autocast, nothing to hold in bf16; "
                  "no comparison.")
            return
        plain = run(args.config, args.steps, False, Path(tmp) / "plain")
    same = fast["history"] == plain["history"] and fast["adapter"] == plain["adapter"]
    print(f"{args.config.name}, {args.steps} optimizer steps ({fast['tokens']} answer tokens), "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, pretty-align {code_revision()}")
    print("| frozen weights | s / step |")
    print("|---|---|")
    print(f"| cast by autocast on every call | {plain['step_s']:.2f} |")
    print(f"| held in bf16 (freeze_for_autocast) | {fast['step_s']:.2f} |")
    print(f"speed-up per step: {plain['step_s'] / fast['step_s']:.2f}x; losses, validation losses and adapter "
          f"(dir_sha256) bit-identical: {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit("the two runs differ: freeze_for_autocast changed the arithmetic")


if __name__ == "__main__":
    main()

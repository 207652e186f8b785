"""The model card (README.md) of a LoRA SFT adapter: base model and its hash, data, hyperparameters,
steps, losses, package versions, and the command that rebuilds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models import ResolvedModel, dir_sha256
from .config import SFTConfig


def _loss_rows(history: list[dict[str, Any]], best_step: int) -> list[str]:
    """One row per validation pass, with the mean training loss since the previous one."""
    rows, window = [], []
    for e in history:
        if "train_loss" in e:
            window.append(e["train_loss"])
        if "val_loss" in e:
            train = f"{sum(window) / len(window):.4f}" if window else "–"
            mark = " (best)" if e["step"] == best_step else ""
            rows.append(f"| {e['step']} | {train} | {e['val_loss']:.4f}{mark} |")
            window = []
    return rows


def write_card(adapter: Path, cfg: SFTConfig, state, split, *, resolved: ResolvedModel, pairs: dict[str, int],
               fingerprint: str, versions: dict[str, str]) -> Path:
    t, lc, d = cfg.train, cfg.lora, cfg.data
    first_val = next((e["val_loss"] for e in state.history if "val_loss" in e), None)
    train_losses = [e["train_loss"] for e in state.history if "train_loss" in e]
    head = train_losses[:10]
    tail = train_losses[-10:]
    lines = [
        "---",
        f"base_model: {cfg.base.model}",
        "library_name: peft",
        "tags: [pretty-align, lora, sft, translation]",
        f"language: [{', '.join(sorted({d.source[:3], *[x[:3] for x in d.targets]}))}]",
        "---",
        "",
        f"# {cfg.name}",
        "",
        f"LoRA SFT counterpart of `{cfg.base.model}` built by pretty-align for PRETTY experiments: the same "
        "tokenizer as the base model, so it can serve as the `sft` prior (id level) and as the reference "
        "model. Trained on the experiments' own task template with the loss on the answer only; every "
        f"answer ends with the stop string {d.stop!r} and EOS, so the model learns to stop.",
        "",
        "## Base model",
        "",
        f"- model: `{resolved.spec}` ({resolved.kind}: `{Path(resolved.path).name}`)",
        f"- sha256: `{resolved.sha256}`",
        f"- compute dtype: {cfg.base.dtype} (LoRA weights float32)",
        f"- adapter sha256 (weights and config): `{dir_sha256(adapter)}`",
        f"- config fingerprint: `{fingerprint}`",
        "",
        "## Data",
        "",
        f"Tatoeba test sets (`{Path(d.dir).name}/`), {d.source} → {', '.join(d.targets)}; never FLORES. "
        f"{d.per_language} pairs per language after a seeded shuffle (seed {d.seed}), examples longer than "
        f"{d.max_tokens} tokens dropped, {d.validation_share:.0%} of each language held out for validation.",
        "",
        "| language | pairs available |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in pairs.items()],
        "",
        f"Training examples: {len(split.train)}; validation: {len(split.validation)}; dropped as too long: "
        f"{split.dropped_too_long}. Template: {'custom' if d.template else 'the default translation template'}.",
        "",
        "## Hyperparameters",
        "",
        "| setting | value |",
        "|---|---|",
        f"| LoRA r / alpha / dropout | {lc.r} / {lc.alpha} / {lc.dropout} |",
        f"| target modules | {', '.join(lc.target_modules)} |",
        f"| batch size × grad accumulation | {t.batch_size} × {t.grad_accum} |",
        f"| learning rate, warm-up | {t.lr}, {t.warmup_steps} steps, cosine to 10% |",
        f"| weight decay, max grad norm | {t.weight_decay}, {t.max_grad_norm} |",
        f"| epochs / max steps | {t.epochs} / {t.max_steps} |",
        f"| early stopping | every {t.eval_every} steps, patience {t.patience}, min delta {t.min_delta} |",
        "",
        "## Training",
        "",
        f"- optimizer steps: {state.step}{' (stopped early)' if state.stopped_early else ''}; "
        f"best validation loss at step {state.best_step} (this adapter)",
        f"- examples seen: {state.examples_seen}; answer tokens with loss: {state.tokens_seen}",
        f"- wall time: {state.elapsed_s / 60:.1f} min",
        f"- validation loss: {first_val:.4f} before training → {state.best_val:.4f} best" if first_val is not None
        else "- validation loss: –",
        f"- training loss: first {len(head)} steps mean {sum(head) / max(len(head), 1):.4f}, last {len(tail)} "
        f"steps mean {sum(tail) / max(len(tail), 1):.4f}" if train_losses else "- training loss: –",
        "",
        "| step | train loss (mean since previous row) | validation loss |",
        "|---|---|---|",
        *_loss_rows(state.history, state.best_step),
        "",
        "Every step's loss and learning rate: `trainer_state.jsonl`.",
        "",
        "## Versions",
        "",
        ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        "## Rebuild and use",
        "",
        "```",
        f"pretty-align sft {cfg.config_path or '<config>.toml'}   # resumes from its checkpoints if killed",
        "```",
        "",
        "In an experiment config: `[reference] model = \"" + cfg.base.model + "\"`, `adapter = \"<this directory>\"`; "
        "as a prior: `strategy = \"sft\"`, `model = \"reference\"`.",
        "",
    ]
    path = adapter / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path

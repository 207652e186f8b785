"""LoRA SFT on CPU: answer-only loss, gradient accumulation, length bucketing, checkpoints, resume,
early stopping, and an adapter directory with a model card.

Invariants:
- The data order is a pure function of ``(data.seed, epoch)``: examples are shuffled, cut into
  windows of ``bucket_batches`` batches, sorted by length inside each window (little padding), and
  the batches are shuffled again. Optimizer step ``s`` always consumes the same examples, so a
  resumed build sees exactly the data an uninterrupted one would.
- A checkpoint holds the LoRA weights, optimizer, scheduler, torch RNG state and the loss history;
  it is written to a temporary directory and renamed, so a kill never leaves a half checkpoint
  that resume would pick up. Resume refuses a checkpoint whose config fingerprint differs.
- Logits are computed only at answer positions: the decoder's hidden states are gathered where the
  label is not IGNORE and only those rows go through the output layer (gemma-3's 262k-word output
  layer would otherwise cost more than the rest of the model).
- The loss of an optimizer step is the mean over all answer tokens of its ``grad_accum`` batches.
- Under bf16 autocast the frozen weights that autocast would cast to bf16 on every call (the linear
  layers' and the output layer's) are held in bf16 once (``freeze_for_autocast``). The values each
  matmul sees are the same, so the losses and the adapter are bit-identical to casting per call;
  only the copies go. torch.profiler put them at a fifth of a step's operator time for gemma-3-270m,
  but wall time per step moved 1.00-1.07x (``benchmarks/sft_steps.py``), within a VM's noise.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import InputError, MissingDependencyError, PrettyAlignError
from ..experiment.signature import code_revision, content_hash, package_versions
from ..hardware import resolve_dtype
from ..languages import get_language
from ..progress import progress_bar
from ..tasks.base import check_template
from ..tasks.translation import DEFAULT_TEMPLATE, FIELDS, TranslationTask
from .config import SFTConfig
from .data import IGNORE, SFTExample, SFTSplit, build_split, load_pairs

log = logging.getLogger(__name__)
TRAINER_FILE = "trainer.pt"
STATE_LOG = "trainer_state.jsonl"   # not hashed by dir_sha256 (suffix), so the adapter hash is the weights'


@dataclass
class TrainState:
    step: int = 0                       # optimizer steps done
    best_val: float | None = None
    best_step: int = 0
    bad_evals: int = 0                  # validation passes since the last improvement
    stopped_early: bool = False
    elapsed_s: float = 0.0              # training wall time over all sessions of this build
    examples_seen: int = 0
    tokens_seen: int = 0                # answer tokens with loss
    history: list[dict[str, Any]] = field(default_factory=list)   # {"step", "train_loss", "val_loss"?, "lr"}


@dataclass
class BuildResult:
    adapter_dir: Path
    state: TrainState
    split_sizes: dict[str, int]
    resumed_from: int | None


def batch_order(lengths: Sequence[int], batch_size: int, bucket_batches: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches (lists of example indices) of one epoch; deterministic in ``(seed, epoch)``."""
    rng = random.Random(f"{seed}:{epoch}")
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    window = batch_size * bucket_batches
    batches = []
    for start in range(0, len(idx), window):
        chunk = sorted(idx[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[SFTExample], pad_id: int):
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (IGNORE on padding)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return ids, mask, labels


def answer_loss(model, ids, mask, labels):
    """(summed cross-entropy over answer tokens, number of answer tokens), with the output layer
    applied only at positions that predict an answer token. Equals the full-logit loss exactly."""
    import torch.nn.functional as F

    from ..backends.hf import answer_hidden, project

    targets = labels[:, 1:]
    keep = targets != IGNORE
    # position t predicts token t+1: keep positions 0..T-2 whose next label carries loss
    hidden = answer_hidden(model, ids, mask, F.pad(keep, (0, 1), value=False))
    return F.cross_entropy(project(model, hidden).float(), targets[keep], reduction="sum"), int(keep.sum())


def freeze_for_autocast(model, dtype) -> int:
    """Hold the frozen weights that ``torch.autocast(dtype)`` casts on every call in ``dtype`` once;
    returns how many tensors were converted.

    Autocast caches casts only of leaf tensors that require grad, so a frozen ``nn.Linear`` weight
    is cast again by every forward (and the 262k x 640 output layer of gemma-3 is the largest). A
    frozen linear weight (a LoRA ``base_layer`` or an untargeted projection) is converted in place.
    The output layer is tied to the input embedding, whose lookup runs in float32 outside autocast:
    it gets its own ``dtype`` copy, so the embedding keeps float32. Trainable (LoRA) weights, norms
    and the embedding are untouched. Only for training under autocast: ``save_pretrained`` of a peft
    model writes the adapter alone, so nothing converted here reaches a file.
    """
    import torch

    from ..backends.hf import _parts

    _, head, _ = _parts(model)
    count = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not head and not module.weight.requires_grad \
                and module.weight.dtype != dtype:
            module.weight.data = module.weight.data.to(dtype)
            count += 1
    if head is not None and not head.weight.requires_grad and head.weight.dtype != dtype:
        head.weight = torch.nn.Parameter(head.weight.detach().to(dtype), requires_grad=False)   # unties
        count += 1
    return count


class Trainer:
    """One SFT build: ``Trainer(cfg).build()`` trains (or resumes) and writes ``<output>/adapter``."""

    def __init__(self, cfg: SFTConfig, *, progress: bool = True,
                 on_step: Callable[[int, list[list[int]]], None] | None = None) -> None:
        # dtype "auto" becomes the dtype it means on this machine before anything reads it: the
        # fingerprint (so a build resumes only where it resolves alike), the autocast and the card.
        base = cfg.base.model_copy(update={"dtype": resolve_dtype(cfg.base.dtype, what="SFT base.dtype")})
        cfg = cfg.model_copy(update={"base": base})
        self.cfg, self.progress, self.on_step = cfg, progress, on_step
        self.out = cfg.output_path
        self.fingerprint = content_hash(cfg.fingerprint_fields())

    # -- data -------------------------------------------------------------------------------------
    def _task(self) -> TranslationTask:
        template = self.cfg.data.template or DEFAULT_TEMPLATE
        check_template(template, FIELDS, {"source"}, field="data.template")   # named after the SFT config field
        return TranslationTask(self.cfg.data.source, texts=["(unused)"], template=template)

    def load_split(self, tokenizer) -> SFTSplit:
        d = self.cfg.data
        src = get_language(d.source, field="data.source")
        pairs = [load_pairs(d.dir, src, get_language(t, field="data.targets")) for t in d.targets]
        for t, p in zip(d.targets, pairs):
            if not p:
                raise InputError(f"no usable pairs for {t}", path=d.dir)
        split = build_split(tokenizer, self._task(), pairs, src, per_language=d.per_language,
                            validation_share=d.validation_share, max_tokens=d.max_tokens, seed=d.seed, stop=d.stop)
        self.pairs_available = {t: len(p) for t, p in zip(d.targets, pairs)}
        if not split.train:
            raise InputError("no training examples left after the length filter", field="data.max_tokens")
        return split

    # -- model ------------------------------------------------------------------------------------
    def _load_model(self):
        import torch

        from ..backends.hf import _load
        from ..models import resolve_model

        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise MissingDependencyError("SFT training", "'pretty-align[peft]'") from None
        self.resolved = resolve_model(self.cfg.base.model, field="base.model")
        tok, model = _load(self.resolved, "float32")
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        torch.manual_seed(self.cfg.data.seed)   # LoRA init
        lc = self.cfg.lora
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        missing = [m for m in lc.target_modules if m not in present]
        if missing:
            raise InputError(f"modules {missing} do not exist in {self.cfg.base.model}", field="lora.target_modules")
        config = LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=lc.target_modules,
                            task_type="CAUSAL_LM", base_model_name_or_path=self.cfg.base.model)
        model = get_peft_model(model, config)
        # A portable adapter_config.json (no machine-specific cache path) with its target modules in a
        # fixed order (peft keeps them as a set, whose order follows the per-process string hash): two
        # builds with bit-identical weights then have one adapter hash, on every machine.
        peft_cfg = model.peft_config["default"]
        peft_cfg.base_model_name_or_path = self.cfg.base.model
        peft_cfg.target_modules = sorted(peft_cfg.target_modules)
        if self.cfg.base.dtype == "bfloat16":
            freeze_for_autocast(model, torch.bfloat16)
        return tok, model

    # -- checkpoints ------------------------------------------------------------------------------
    def _checkpoints(self) -> list[Path]:
        d = self.out / "checkpoints"
        return sorted(p for p in d.glob("step-*") if (p / TRAINER_FILE).is_file()) if d.is_dir() else []

    def _save_checkpoint(self, model, opt, sched, state: TrainState) -> None:
        import torch

        final = self.out / "checkpoints" / f"step-{state.step:06d}"
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        torch.save({"fingerprint": self.fingerprint, "state": asdict(state), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "rng": torch.get_rng_state()}, tmp / TRAINER_FILE)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in self._checkpoints()[:-self.cfg.train.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    def _resume(self, model, opt, sched) -> TrainState | None:
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        cps = self._checkpoints()
        if not cps:
            return None
        last = cps[-1]
        blob = torch.load(last / TRAINER_FILE, weights_only=False)
        if blob["fingerprint"] != self.fingerprint:
            raise PrettyAlignError(f"{last}: checkpoint of a different SFT config (base, data, LoRA or training "
                                   f"settings changed); use another output directory or --restart")
        set_peft_model_state_dict(model, load_file(last / "adapter_model.safetensors"))
        opt.load_state_dict(blob["optimizer"])
        sched.load_state_dict(blob["scheduler"])
        torch.set_rng_state(blob["rng"])
        return TrainState(**blob["state"])

    # -- loop -------------------------------------------------------------------------------------
    def _evaluate(self, model, examples: list[SFTExample], pad_id: int) -> float:
        import torch

        model.eval()
        total, n = 0.0, 0
        with torch.no_grad(), self._autocast():
            ordered = sorted(examples, key=lambda e: len(e.input_ids))
            bs = self.cfg.train.batch_size * 2
            for i in range(0, len(ordered), bs):
                loss, k = answer_loss(model, *collate(ordered[i:i + bs], pad_id))
                total, n = total + float(loss), n + k
        model.train()
        return total / max(n, 1)

    def _autocast(self):
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.base.dtype == "bfloat16")

    def build(self, *, restart: bool = False) -> BuildResult:
        import torch

        t = self.cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        if restart:
            shutil.rmtree(self.out / "checkpoints", ignore_errors=True)
        tok, model = self._load_model()
        split = self.load_split(tok)
        pad_id = tok.pad_token_id
        lengths = [len(e.input_ids) for e in split.train]
        per_epoch = math.ceil(math.ceil(len(split.train) / t.batch_size) / t.grad_accum)
        total_steps = min(t.max_steps or per_epoch * t.epochs, per_epoch * t.epochs)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(t.warmup_steps, total_steps))
        state = self._resume(model, opt, sched)
        resumed_from = state.step if state else None
        if state is None:
            state = TrainState()
            state.best_val = self._evaluate(model, split.validation, pad_id)
            state.history.append({"step": 0, "val_loss": state.best_val})
            log.info("validation loss before training: %.4f", state.best_val)
            self._write_best(model, state)
        model.train()
        started = time.monotonic() - state.elapsed_s
        line = _LossLine()
        with progress_bar(self.progress, total_steps, completed=state.step, description="training") as advance:
            orders: dict[int, list[list[int]]] = {}   # the epoch's batch order, built once per epoch
            while state.step < total_steps and not state.stopped_early:
                epoch, in_epoch = divmod(state.step, per_epoch)
                if epoch not in orders:
                    orders = {epoch: batch_order(lengths, t.batch_size, t.bucket_batches, self.cfg.data.seed, epoch)}
                order = orders[epoch]
                group = order[in_epoch * t.grad_accum:(in_epoch + 1) * t.grad_accum]
                loss = self._step(model, opt, sched, [[split.train[i] for i in b] for b in group], pad_id, params)
                state.step += 1
                state.examples_seen += sum(len(b) for b in group)
                state.tokens_seen += loss[1]
                state.elapsed_s = time.monotonic() - started
                entry: dict[str, Any] = {"step": state.step, "train_loss": loss[0], "lr": sched.get_last_lr()[0]}
                if state.step % t.eval_every == 0 or state.step == total_steps:
                    entry["val_loss"] = self._validate(model, split, pad_id, state)
                state.history.append(entry)
                advance(1, line(entry))
                if state.step % t.checkpoint_every == 0 or state.step == total_steps or state.stopped_early:
                    self._save_checkpoint(model, opt, sched, state)
                if self.on_step:
                    self.on_step(state.step, group)
        adapter = self._finish(state, split, resumed_from)
        return BuildResult(adapter, state, {"train": len(split.train), "validation": len(split.validation),
                                            "dropped_too_long": split.dropped_too_long}, resumed_from)

    def _step(self, model, opt, sched, batches: list[list[SFTExample]], pad_id: int, params) -> tuple[float, int]:
        import torch

        n_tokens = sum(e.answer_length for b in batches for e in b)  # every answer token is some position's target
        total = 0.0
        for b in batches:
            with self._autocast():
                loss, _ = answer_loss(model, *collate(b, pad_id))
            (loss / n_tokens).backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, self.cfg.train.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return total / n_tokens, n_tokens

    def _validate(self, model, split: SFTSplit, pad_id: int, state: TrainState) -> float:
        val = self._evaluate(model, split.validation, pad_id)
        if state.best_val is None or val < state.best_val - self.cfg.train.min_delta:
            state.best_val, state.best_step, state.bad_evals = val, state.step, 0
            self._write_best(model, state)
        else:
            state.bad_evals += 1
            state.stopped_early = state.bad_evals >= self.cfg.train.patience
        return val

    def _write_best(self, model, state: TrainState) -> None:
        """The adapter with the lowest validation loss so far (early stopping keeps this one)."""
        best = self.out / "best"
        tmp = best.with_name("best.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        (tmp / "step.json").write_text(json.dumps({"step": state.step, "val_loss": state.best_val}))
        shutil.rmtree(best, ignore_errors=True)
        tmp.rename(best)

    def _finish(self, state: TrainState, split: SFTSplit, resumed_from: int | None) -> Path:
        from .card import write_card

        adapter = self.out / "adapter"
        shutil.rmtree(adapter, ignore_errors=True)
        shutil.copytree(self.out / "best", adapter)
        (adapter / "step.json").unlink(missing_ok=True)
        with open(adapter / STATE_LOG, "w", encoding="utf-8") as f:
            for entry in state.history:
                f.write(json.dumps(entry) + "\n")
        write_card(adapter, self.cfg, state, split, resolved=self.resolved, pairs=self.pairs_available,
                   fingerprint=self.fingerprint, versions={**package_versions(), "pretty-align": code_revision()})
        return adapter


def _schedule(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 10% of the peak learning rate."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


class _LossLine:
    """The progress description of a build: smoothed training loss and the last validation loss
    (also logged per step when the bar is off)."""

    def __init__(self) -> None:
        self.smooth: float | None = None
        self.val: float | None = None

    def __call__(self, entry: dict[str, Any]) -> str:
        loss = entry["train_loss"]
        self.smooth = loss if self.smooth is None else 0.9 * self.smooth + 0.1 * loss
        self.val = entry.get("val_loss", self.val)
        log.info("step %d loss %.4f%s", entry["step"], loss, f" val {entry['val_loss']:.4f}" if "val_loss" in entry else "")
        return f"training loss {self.smooth:.3f}" + (f" val {self.val:.3f}" if self.val is not None else "")


def build_sft(cfg: SFTConfig, *, progress: bool = True, restart: bool = False, merge: bool = False) -> BuildResult:
    """Train (or resume) the LoRA SFT model of ``cfg``; optionally merge it into a full checkpoint."""
    result = Trainer(cfg, progress=progress).build(restart=restart)
    if merge:
        merge_adapter(cfg.base.model, result.adapter_dir, cfg.output_path / "merged")
    return result


def merge_adapter(base_model: str, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Merge a LoRA adapter into its base model and save a full float32 checkpoint (with tokenizer)."""
    from ..backends.hf import _load
    from ..models import resolve_model

    try:
        from peft import PeftModel
    except ImportError:
        raise MissingDependencyError("merging a LoRA adapter", "'pretty-align[peft]'") from None
    tok, model = _load(resolve_model(base_model), "float32")
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out

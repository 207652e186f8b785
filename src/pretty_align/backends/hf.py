"""Hugging Face transformers backend: hub id, model directory or GGUF file, optional LoRA adapter.

GGUF files are dequantized by transformers on first load (slow: ~50 s for gemma-3-270m) and the
result is cached as a regular checkpoint under the pretty-align cache, keyed by the file's sha256,
so later loads take seconds. Greedy generation is batched with left padding; rows are sorted by
length so batches carry little padding, and every row stops on its own (stop string, EOS, loop
guard, its own token budget) through ``StopState``, exactly as it would alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from ..boundary import Tokenizer
from ..decoding import Decoding, StopState, trim_loop
from ..errors import InputError, MissingDependencyError, PrettyAlignError
from ..models import ResolvedModel, cache_dir, dir_sha256, resolve_model
from . import BACKENDS
from .base import Backend, Capabilities, Generation, GenerationRequest, ScoreResult

log = logging.getLogger(__name__)


def _load(resolved: ResolvedModel, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if resolved.kind == "gguf":
        converted = cache_dir() / "gguf-hf" / resolved.sha256[:16]  # type: ignore[index]
        if not (converted / "config.json").exists():
            src = Path(resolved.path)
            log.info("dequantizing %s once (cached in %s)", src.name, converted)
            tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
            model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
            # The weights are plain dequantized tensors now; drop the GGUF "quantizer" so that
            # transformers agrees to save them as an ordinary checkpoint.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            tmp = converted.with_name(converted.name + ".tmp")
            tok.save_pretrained(tmp)
            model.save_pretrained(tmp)
            tmp.rename(converted)
        where = str(converted)
    else:
        where = resolved.path
    try:
        tok = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype)
    except OSError as e:
        raise PrettyAlignError(f"could not load model '{resolved.spec}': {e}") from e
    return tok, model.eval()


@BACKENDS.register("hf")
class HFBackend(Backend):
    def __init__(self, model: str, *, adapter: str | None = None, dtype: str = "float32",
                 chat: bool | None = None, threads: int | None = None, **_: object) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        if dtype not in {"float32", "bfloat16", "float16"}:
            raise InputError(f"dtype '{dtype}' is not one of float32, bfloat16, float16", field="dtype")
        self.resolved = resolve_model(model)
        self.dtype = dtype
        self._tok, self.model = _load(self.resolved, dtype)
        self.adapter_sha256 = None
        if adapter:
            self._load_adapter(adapter)
        if self._tok.pad_token_id is None:
            self._tok.pad_token = self._tok.eos_token
        has_template = getattr(self._tok, "chat_template", None) is not None
        self.chat = has_template if chat is None else chat
        if self.chat and not has_template:
            raise InputError(f"model '{model}' has no chat template", field="chat")
        self.capabilities = Capabilities(batched=True, token_ids_in=True, exact_scoring=True,
                                         adapters=True, chat_template=has_template,
                                         batch_invariant=dtype == "float32")

    def _load_adapter(self, adapter: str) -> None:
        if not Path(adapter).is_dir():
            raise InputError(f"adapter directory '{adapter}' does not exist", field="adapter")
        try:
            from peft import PeftModel
        except ImportError:
            raise MissingDependencyError("loading a LoRA adapter", "peft") from None
        self.model = PeftModel.from_pretrained(self.model, adapter).eval()
        self.adapter_sha256 = dir_sha256(adapter)

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tok

    def render_chat(self, user_text: str) -> str:
        return self._tok.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                             add_generation_prompt=True)

    # -- generation -------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding) -> list[Generation]:
        order = sorted(range(len(requests)),
                       key=lambda i: len(requests[i].prompt_ids) + len(requests[i].prior_ids))
        out: list[Generation | None] = [None] * len(requests)
        for start in range(0, len(order), decoding.batch_size):
            idx = order[start:start + decoding.batch_size]
            for i, g in zip(idx, self._generate_batch([requests[i] for i in idx], decoding)):
                out[i] = g
        return out  # type: ignore[return-value]

    def _generate_batch(self, reqs: Sequence[GenerationRequest], decoding: Decoding) -> list[Generation]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        inputs = [list(r.prompt_ids) + list(r.prior_ids) for r in reqs]
        width = max(map(len, inputs))
        pad = self._tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(x)) + x for x in inputs])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in inputs])
        budgets = [r.max_new_tokens or decoding.max_new_tokens for r in reqs]
        states = [StopState.for_request(decoding, self._tok, has_prior=bool(r.prior_ids)) for r in reqs]
        eos = self._eos_ids()

        class RowStop(StoppingCriteria):
            """Per-row stop: each row ends exactly where it would end alone."""

            def __call__(self, input_ids, scores, **kwargs):
                done = []
                for row, state, budget in zip(input_ids.tolist(), states, budgets):
                    new = row[width:]
                    done.append(len(new) >= budget or new[-1] in eos or state.check(new) is not None)
                return torch.tensor(done, dtype=torch.bool)

        with torch.inference_mode():
            seqs = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max(budgets),
                                       do_sample=False, stopping_criteria=StoppingCriteriaList([RowStop()]),
                                       pad_token_id=pad, eos_token_id=sorted(eos))
        return [self._finish(row[width:], state, budget, eos, decoding)
                for row, state, budget in zip(seqs.tolist(), states, budgets)]

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self._tok.eos_token_id is not None:
            ids.add(self._tok.eos_token_id)
        return ids

    @staticmethod
    def _finish(new: list[int], state: StopState, budget: int, eos: set[int], decoding: Decoding) -> Generation:
        """Replay the stopping rule over a row's tokens (padding after the stop is dropped)."""
        kept: list[int] = []
        for tok in new:
            if tok in eos:
                return Generation(kept, "eos")
            kept.append(tok)
            reason = state.check(kept)
            if reason == "loop":
                return Generation(trim_loop(kept, decoding.loop_max_period, decoding.loop_min_repeats), "loop")
            if reason:
                return Generation(kept, reason)
            if len(kept) >= budget:
                break
        return Generation(kept, "length")

    # -- scoring -----------------------------------------------------------------------------
    def score(self, prompt_ids: Sequence[int], answer_ids: Sequence[int], top_k: int = 10) -> ScoreResult:
        """Teacher-force ``answer_ids`` after ``prompt_ids`` in one forward pass."""
        import torch

        if not answer_ids:
            return ScoreResult([], [], [])
        ids = torch.tensor([list(prompt_ids) + list(answer_ids)])
        with torch.inference_mode():
            logits = self.model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        target = torch.tensor(list(answer_ids))
        chosen = logp.gather(1, target[:, None])[:, 0]
        ranks = (logp > chosen[:, None]).sum(dim=1) + 1
        top = logp.topk(top_k, dim=-1).indices
        return ScoreResult(chosen.tolist(), ranks.tolist(), top.tolist())

    def signature(self) -> dict:
        return {"backend": "hf", "model": self.resolved.spec, "kind": self.resolved.kind,
                "sha256": self.resolved.sha256, "adapter_sha256": self.adapter_sha256,
                "dtype": self.dtype, "chat": self.chat}

"""vLLM offline backend (optional extra ``pretty-align[vllm]``; needs a GPU vLLM build).

Model: a hub id or a model directory (``models.resolve_model``). A GGUF file (or known GGUF alias)
loads only with a separate ``tokenizer`` option (the base model's hub id or directory): vLLM's
own GGUF tokenizer conversion is slow and unreliable, and newer vLLM needs the
``vllm-gguf-plugin`` for GGUF at all. An ``adapter`` is a peft LoRA directory, served through
``LoRARequest`` (``enable_lora=True``, ``max_lora_rank`` = its ``r`` rounded up to a rank vLLM
accepts). Options not named below go to ``vllm.LLM`` unchanged (``enforce_eager``,
``quantization``, ...), after a check against ``vllm.EngineArgs`` so a typo fails early.

Generation. One ``LLM.generate`` call per ``generate``: vLLM schedules and batches the rows
itself, and prefix caching computes a prompt shared by several prior variants once. Prompts are
token ids, exactly ``req.input_ids`` (never re-tokenized); decoding is greedy
(``temperature=0``) with ``max_tokens`` = the row budget; vLLM itself stops only at an EOS id or
the budget. The stopping rule is then applied here, outside vLLM: the returned ids are pushed one
by one through ``decoding.RowState``, the one rule every backend uses (stop strings with the
no-prior lead-whitespace rule, loop guard, budget), so ``new_ids`` and ``stop_reason`` are what
any other backend produces from the same tokens. The price is that a row runs on in vLLM past a
stop string, at most to its budget. ``on_done`` fires per request once the call returns (an
offline ``LLM.generate`` reports nothing earlier).

Scoring. ``score`` reads ``prompt_logprobs`` of ``prompt + answer`` (``max_tokens=1``): per
position vLLM returns the top-N entries plus the actual token with its log-prob (float32
log-softmax of the raw logits) and its rank in the *full* vocabulary, so log p and rank are exact
(``exact_scoring=True``); ties count against the token (vLLM counts ``>=``, hf counts ``>``).
``top_k`` must not exceed the engine's ``max_logprobs`` (option, default 20).
``answer_logprobs`` needs the full distribution, which vLLM returns only when asked for every
vocabulary entry: option ``full_logprobs=True`` builds the engine with ``max_logprobs=-1`` (no
cap) and requests ``prompt_logprobs=-1``. That materializes (prompt + answer) x vocab Python
objects per item, so items go one per call; without the option it raises ``CapabilityError``
saying how to enable it.

Not batch invariant: bf16/fp16 kernels, chunked prefill and prefix-cache hits make the bits of a
row depend on what else the engine runs (``batch_invariant=False``, so the runner keys results by
batch); ``enable_prefix_caching=False`` removes the dependence on cache history.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..boundary import Tokenizer
from ..decoding import Decoding, RowState
from ..errors import CapabilityError, InputError, MissingDependencyError, PrettyAlignError
from ..models import ResolvedModel, dir_sha256, resolve_model
from . import BACKENDS
from .base import Backend, Capabilities, Generation, GenerationRequest, OnDone, ScoreResult, refuse_hooks

DTYPES = ("float32", "bfloat16", "float16", "auto")
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)   # vllm.config.lora.MaxLoRARanks
# EngineArgs this backend sets itself: they may not also come in through ``options``.
_OWN = {"model", "tokenizer", "revision", "dtype", "seed", "gpu_memory_utilization", "max_model_len",
        "enable_prefix_caching", "enable_lora", "max_lora_rank", "max_loras", "max_logprobs", "generation_config"}


# -- pure mapping from vLLM outputs (tested without vLLM) -------------------------------------
def row_budget(req: GenerationRequest, decoding: Decoding) -> int:
    """The row's token budget: vLLM's ``max_tokens`` and ``RowState``'s budget, the same number."""
    return req.max_new_tokens or decoding.max_new_tokens


def to_generation(token_ids: Sequence[int], finish_reason: str | None, req: GenerationRequest,
                  decoding: Decoding, tokenizer: Tokenizer, eos: set[int]) -> Generation:
    """Apply the shared stopping rule to the ids vLLM returned for one row.

    vLLM stops only at an EOS id (the id may or may not be in ``token_ids``) or at ``max_tokens``
    = the budget, both of which ``RowState`` also stops at; so when no pushed token stops the
    row, vLLM's own finish reason says why it ended."""
    if finish_reason not in ("stop", "length"):
        raise PrettyAlignError(f"vLLM ended a row with finish_reason={finish_reason!r}")
    row = RowState.for_request(decoding, tokenizer, req.max_new_tokens, has_prior=bool(req.prior_ids))
    for tok in token_ids:
        reason = row.push(tok, eos)
        if reason:
            return Generation(row.new, reason)
    # "stop" without stop strings in SamplingParams is an EOS that vLLM left out of token_ids;
    # "length" before the budget is the model's context limit (max_model_len).
    return Generation(row.new, "eos" if finish_reason == "stop" else "length")


def to_generations(outputs: Sequence[Any], requests: Sequence[GenerationRequest], decoding: Decoding,
                   tokenizer: Tokenizer, eos: set[int]) -> list[Generation]:
    """``LLM.generate`` outputs (in request order) -> Generations. Checks that vLLM answered each
    request and conditioned on exactly its ids."""
    if len(outputs) != len(requests):
        raise PrettyAlignError(f"vLLM returned {len(outputs)} outputs for {len(requests)} requests")
    gens = []
    for out, req in zip(outputs, requests):
        if list(out.prompt_token_ids) != req.input_ids:
            raise PrettyAlignError("vLLM output does not belong to its request (prompt ids differ)")
        first = out.outputs[0]
        gens.append(to_generation(first.token_ids, first.finish_reason, req, decoding, tokenizer, eos))
    return gens


def score_from_prompt_logprobs(prompt_logprobs: Sequence[Mapping[int, Any] | None], n_prompt: int,
                               answer_ids: Sequence[int], top_k: int) -> ScoreResult:
    """ScoreResult from vLLM ``prompt_logprobs`` of ``prompt + answer``: entry ``j`` maps token id
    -> Logprob(logprob, rank, ...) for the distribution that predicts token ``j`` (entry 0 is
    None), holding the top-N ids (ranks 1..N) plus the actual token with its full-vocabulary rank."""
    logprobs, ranks, tops = [], [], []
    for i, tgt in enumerate(answer_ids):
        entry = prompt_logprobs[n_prompt + i]
        if entry is None or tgt not in entry:
            raise PrettyAlignError(f"vLLM gave no log-prob for answer token {i} (id {tgt})")
        lp = entry[tgt]
        if lp.rank is None:
            raise PrettyAlignError("this vLLM version reports no token ranks; upgrade vLLM")
        logprobs.append(float(lp.logprob))
        ranks.append(int(lp.rank))
        tops.append([tid for tid, _ in sorted(entry.items(), key=lambda kv: kv[1].rank)][:top_k])
    return ScoreResult(logprobs, ranks, tops)


def dense_logprobs(prompt_logprobs: Sequence[Mapping[int, Any] | None], first_row: int, n: int, vocab: int):
    """A float32 ``[n, vocab]`` tensor from rows ``first_row ..`` of full-vocabulary
    ``prompt_logprobs``; a row that does not cover the whole vocabulary is an error, not a guess."""
    import torch

    out = torch.empty((n, vocab), dtype=torch.float32)
    for j in range(n):
        entry = prompt_logprobs[first_row + j]
        entry = entry or {}
        ids = torch.tensor(list(entry.keys()), dtype=torch.long)
        if len(ids) != vocab or (len(ids) and int(ids.max()) >= vocab):
            raise CapabilityError(f"vLLM returned {len(ids)} log-probs for a {vocab}-token vocabulary; "
                                  "answer_logprobs needs the engine built with full_logprobs=True")
        out[j, ids] = torch.tensor([lp.logprob for lp in entry.values()], dtype=torch.float32)
    return out


def lora_rank_cap(r: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds an adapter of rank ``r``."""
    for cap in LORA_RANKS:
        if cap >= r:
            return cap
    raise InputError(f"LoRA rank {r} exceeds vLLM's largest max_lora_rank {LORA_RANKS[-1]}", field="adapter")


# -- engine plumbing ---------------------------------------------------------------------------
def _import_vllm():
    try:
        import vllm
    except ImportError:
        raise MissingDependencyError("the vllm backend", "'pretty-align[vllm]'") from None
    return vllm


def _engine_options(vllm: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Options passed on to ``vllm.LLM``, checked against ``EngineArgs`` when it is a dataclass."""
    clash = sorted(set(options) & _OWN)
    if clash:
        raise InputError(f"options {clash} are set by the vllm backend's own arguments", field="options")
    args = getattr(vllm, "EngineArgs", None)
    if args is not None and dataclasses.is_dataclass(args):
        known = {f.name for f in dataclasses.fields(args)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"unknown vllm engine options {unknown} (not fields of vllm.EngineArgs)",
                             field="options")
    return dict(options)


def _adapter_rank(adapter: str) -> int:
    cfg = Path(adapter) / "adapter_config.json"
    if not cfg.is_file():
        raise InputError(f"adapter directory '{adapter}' has no adapter_config.json", field="adapter")
    try:
        return int(json.loads(cfg.read_text())["r"])
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{cfg}: no LoRA rank 'r' ({e})", field="adapter") from None


def _hub_revision(resolved: ResolvedModel, revision: str | None) -> str | None:
    """The commit of a hub model in the local Hugging Face cache (what vLLM loaded), if known."""
    if resolved.kind != "hub":
        return revision
    try:
        from huggingface_hub import try_to_load_from_cache
        path = try_to_load_from_cache(resolved.path, "config.json", revision=revision)
    except Exception:  # a cache lookup must never break loading
        return revision
    return Path(path).parent.name if isinstance(path, str) else revision


@BACKENDS.register("vllm")
class VLLMBackend(Backend):
    def __init__(self, model: str, *, adapter: str | None = None, dtype: str = "bfloat16",
                 gpu_memory_utilization: float = 0.85, max_model_len: int | None = None, seed: int = 0,
                 enable_prefix_caching: bool = True, tokenizer: str | None = None, revision: str | None = None,
                 full_logprobs: bool = False, max_logprobs: int = 20, **options: Any) -> None:
        vllm = _import_vllm()   # first: without vLLM nothing else matters
        if dtype not in DTYPES:
            raise InputError(f"dtype '{dtype}' is not one of {', '.join(DTYPES)}", field="dtype")
        self.resolved = resolve_model(model)
        if self.resolved.kind == "gguf" and not tokenizer:
            raise InputError(f"vLLM loads the GGUF model '{model}' only with a tokenizer: set options.tokenizer "
                             "to the base model's hub id or directory (e.g. google/gemma-3-270m), or give a "
                             "model directory / hub id instead", field="options.tokenizer")
        extra = _engine_options(vllm, options)
        dtype = "bfloat16" if dtype == "auto" else dtype   # the GPUs vLLM serves on have bf16 natively
        self.dtype, self.tokenizer_spec, self.enable_prefix_caching = dtype, tokenizer, enable_prefix_caching
        self.full_logprobs = full_logprobs
        self.max_logprobs = -1 if full_logprobs else max_logprobs   # -1: no cap (all vocab entries)
        self.adapter_sha256: str | None = None
        lora: dict[str, Any] = {}
        if adapter:
            if not Path(adapter).is_dir():
                raise InputError(f"adapter directory '{adapter}' does not exist", field="adapter")
            lora = {"enable_lora": True, "max_lora_rank": lora_rank_cap(_adapter_rank(adapter)), "max_loras": 1}
            self.adapter_sha256 = dir_sha256(adapter)
        self.options = extra
        self.llm = vllm.LLM(model=self.resolved.path, tokenizer=tokenizer, revision=revision, dtype=dtype, seed=seed,
                            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                            enable_prefix_caching=enable_prefix_caching, max_logprobs=self.max_logprobs,
                            # "vllm": no sampling defaults (or token caps) from the model's
                            # generation_config; every request states its own parameters.
                            generation_config="vllm", **lora, **extra)
        self._sampling = vllm.SamplingParams
        self._lora = None
        if adapter:
            from vllm.lora.request import LoRARequest
            self._lora = LoRARequest("adapter", 1, str(Path(adapter).resolve()))
        self._tok = self.llm.get_tokenizer()
        mc = getattr(self.llm, "model_config", None) or self.llm.llm_engine.model_config
        self.vocab_size = int(mc.get_vocab_size())
        self.eos_ids = self._eos_ids(mc)
        self.vllm_version = str(getattr(vllm, "__version__", "unknown"))
        self.revision = _hub_revision(self.resolved, revision)
        self.capabilities = Capabilities(batched=True, token_ids_in=True, exact_scoring=True, adapters=True,
                                         chat_template=getattr(self._tok, "chat_template", None) is not None,
                                         batch_invariant=False)

    def _eos_ids(self, model_config: Any) -> set[int]:
        """EOS ids as the hf backend takes them: the generation config's (which falls back to the
        model config's) plus the tokenizer's."""
        try:
            eos = model_config.try_get_generation_config().get("eos_token_id")
        except Exception:   # older/other vLLM: fall back to the model config
            eos = None
        if eos is None:
            eos = getattr(getattr(model_config, "hf_config", None), "eos_token_id", None)
        ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        if self._tok.eos_token_id is not None:
            ids.add(self._tok.eos_token_id)
        return ids

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tok

    def render_chat(self, user_text: str) -> str:
        if not self.capabilities.chat_template:
            return super().render_chat(user_text)
        return self._tok.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                             add_generation_prompt=True)

    def _run(self, seqs: Sequence[Sequence[int]], params: Any) -> list[Any]:
        return self.llm.generate([{"prompt_token_ids": list(s)} for s in seqs], params, use_tqdm=False,
                                 lora_request=self._lora)

    # -- generation -------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding,
                 on_done: OnDone | None = None) -> list[Generation]:
        refuse_hooks(self, requests)
        if not requests:
            return []
        # stop_token_ids: the same EOS set RowState stops at (vLLM adds the tokenizer's itself).
        # detokenize=False: text is rendered by boundary.render_output, never by vLLM.
        eos = sorted(self.eos_ids)
        params = [self._sampling(temperature=0.0, max_tokens=row_budget(r, decoding), stop_token_ids=eos,
                                 detokenize=False) for r in requests]
        outputs = self._run([r.input_ids for r in requests], params)
        gens = to_generations(outputs, requests, decoding, self._tok, self.eos_ids)
        if on_done:
            for i, gen in enumerate(gens):
                on_done(i, gen)
        return gens

    # -- scoring -----------------------------------------------------------------------------
    def _prompt_logprobs(self, prompt_ids: Sequence[int], answer_ids: Sequence[int], n: int) -> Any:
        if not prompt_ids:
            raise InputError("scoring needs at least one prompt token", field="prompt_ids")
        # n >= 1: vLLM returns no prompt_logprobs at all for 0 in some versions.
        params = self._sampling(temperature=0.0, max_tokens=1, prompt_logprobs=n, detokenize=False)
        [out] = self._run([list(prompt_ids) + list(answer_ids)], params)
        return out.prompt_logprobs

    def score(self, prompt_ids: Sequence[int], answer_ids: Sequence[int], top_k: int = 10) -> ScoreResult:
        if not answer_ids:
            return ScoreResult([], [], [])
        if self.max_logprobs != -1 and top_k > self.max_logprobs:
            raise InputError(f"top_k={top_k} exceeds the engine's max_logprobs={self.max_logprobs}; set "
                             f"options.max_logprobs = {top_k}", field="top_k")
        plp = self._prompt_logprobs(prompt_ids, answer_ids, max(1, top_k))
        return score_from_prompt_logprobs(plp, len(prompt_ids), answer_ids, top_k)

    def answer_logprobs(self, items: Sequence[tuple[Sequence[int], Sequence[int]]], *, batch_size: int = 8,
                        chunk: int = 256) -> Iterator[tuple[int, int, Any]]:
        """See ``Backend.answer_logprobs``. One item per vLLM call whatever ``batch_size``: the
        full-vocabulary ``prompt_logprobs`` of an item are (prompt + answer) x vocab objects."""
        if not self.full_logprobs:
            raise CapabilityError("the vllm backend gives full-vocabulary log-probs only when built with "
                                  "options.full_logprobs = true (engine max_logprobs=-1; memory-heavy), "
                                  "or use the hf backend")
        return self._answer_logprobs(items, chunk)

    def _answer_logprobs(self, items: Sequence[tuple[Sequence[int], Sequence[int]]],
                         chunk: int) -> Iterator[tuple[int, int, Any]]:
        for i, (p, a) in enumerate(items):
            if not p:   # as the hf backend: an error even when there is nothing to score
                raise InputError("scoring needs at least one prompt token", field="prompt_ids")
            if not a:
                continue
            plp = self._prompt_logprobs(p, a, -1)
            for first in range(0, len(a), chunk):
                yield i, first, dense_logprobs(plp, len(p) + first, min(chunk, len(a) - first), self.vocab_size)

    def signature(self) -> dict:
        return {"backend": "vllm", "model": self.resolved.spec, "kind": self.resolved.kind,
                "sha256": self.resolved.sha256, "revision": self.revision, "tokenizer": self.tokenizer_spec,
                "dtype": self.dtype, "adapter_sha256": self.adapter_sha256, "vllm": self.vllm_version,
                "enable_prefix_caching": self.enable_prefix_caching, "options": dict(sorted(self.options.items()))}

"""llama.cpp backend (llama-cpp-python, optional extra ``pretty-align[llamacpp]``): a GGUF file run
as it is quantized, on CPU (or on a GPU build of llama-cpp-python).

Model: a known model name or a ``.gguf`` path (``models.resolve_model``). LoRA adapters are refused
(``CapabilityError``): use the hf backend. ``dtype`` is accepted and ignored: the weights are what
the GGUF quantization says, and the signature records that quantization and the file's sha256.

Tokenizer: ``GGUFTokenizer``, llama.cpp's own tokenizer over the GGUF vocabulary. For the known
models it encodes exactly as the Hugging Face tokenizer transformers builds from the same GGUF, and
``get_vocab`` spells pieces the same way, so ``boundary.tokenizer_fingerprint`` matches too (tested).

Generation is greedy, one request at a time (``batched=False``): the prompt + prior ids are
evaluated, then the argmax of the last logits is taken and fed back one token at a time; every row
stops through ``decoding.RowState``. EOS is llama.cpp's end-of-generation set (``<eos>``, and for
gemma also ``<end_of_turn>``), which llama.cpp itself stops at.

Exactness. llama.cpp's logits depend on how the input is cut into evaluation chunks (measured on
CPU with llama-cpp-python 0.3.36: a suffix evaluated as a chunk of 4 tokens instead of inside one
chunk of 124 moved logits by up to ~1), so naively reusing a cached prompt prefix changes outputs.
Here prompts are always evaluated in chunks of ``n_batch`` tokens aligned at multiples of
``n_batch`` from position 0, which is what a plain ``Llama(n_batch=B).eval(ids)`` does, and the
prompt cache reuses only *whole aligned chunks* of the previous input that the new input shares.
Those chunks were computed with exactly the shapes and inputs a fresh evaluation uses, so reuse
is bit-exact (tested: identical logits, identical outputs), and a greedy output is a function of
the input ids and ``n_batch`` alone: ``batch_invariant=True``. Requests are sorted by
(prompt, prior) so those that share a prompt follow each other. ``n_batch`` is in the signature;
``n_ctx`` and ``n_threads`` are not (measured: they do not change a logit), nor ``prompt_cache``.

Scoring is teacher forcing through the same path: the prompt is evaluated as above, then the
answer one token at a time, reading the full-vocabulary logits at each position. Ranks and
log-probs are therefore exact over the whole vocabulary, for the very distributions the greedy
decoder sees (``exact_scoring=True``), at the cost of one decode step per answer token.
"""

from __future__ import annotations

import ctypes
import logging
import os
from typing import Any, Iterator, Sequence

from ..boundary import Tokenizer
from ..decoding import Decoding, RowState
from ..errors import CapabilityError, InputError, MissingDependencyError, PrettyAlignError
from ..models import resolve_model
from . import BACKENDS
from .base import Backend, Capabilities, Generation, GenerationRequest, OnDone

log = logging.getLogger(__name__)
DTYPES = ("float32", "bfloat16", "float16")


def import_llama_cpp():
    """The ``llama_cpp`` module, or a ``MissingDependencyError`` saying what to install."""
    try:
        import llama_cpp
    except ImportError:
        raise MissingDependencyError("the llamacpp backend", "'pretty-align[llamacpp]'") from None
    return llama_cpp


def load_llama(path: str, **kwargs: Any):
    """``llama_cpp.Llama(model_path=path, verbose=False, **kwargs)`` with a clear error for a bad file."""
    llama_cpp = import_llama_cpp()
    try:
        return llama_cpp.Llama(model_path=path, verbose=False, **kwargs)
    except (ValueError, RuntimeError) as e:
        raise PrettyAlignError(f"llama.cpp could not load '{path}': {e}") from e


class GGUFTokenizer:
    """``boundary.Tokenizer`` over a GGUF vocabulary, through llama.cpp's tokenizer.

    * ``encode(text, add_special_tokens)``: special tokens written in the text (``<start_of_turn>``)
      are parsed as such, and BOS is added when the GGUF asks for it, both as Hugging Face does.
    * ``decode(ids, skip_special_tokens)``: one pass over all ids, bytes decoded with
      ``errors='replace'``, so a character cut between tokens comes out as U+FFFD (HF writes one
      U+FFFD per byte of an invalid sequence, Python one per maximal invalid subsequence; callers
      only ever strip them).
    * ``get_vocab()``: piece -> id. SentencePiece vocabularies store a space as "▁" in HF, and
      llama.cpp keeps some whitespace pieces as literal spaces; they are written as "▁" here so
      the fingerprint equals the HF tokenizer's for the same GGUF.
    """

    def __init__(self, llama: Any) -> None:
        llama_cpp = import_llama_cpp()
        self._llama, self._lib = llama, llama_cpp
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        meta = llama.metadata or {}

        def valid(token_id: int) -> int | None:   # llama.cpp answers -1 for "none"
            return token_id if 0 <= token_id < self._n_vocab else None

        self.bos_token_id = valid(llama_cpp.llama_vocab_bos(self._vocab))
        self.eos_token_id = valid(llama_cpp.llama_vocab_eos(self._vocab))
        pad = meta.get("tokenizer.ggml.padding_token_id")
        self.pad_token_id = int(pad) if pad is not None else self.eos_token_id
        self.chat_template: str | None = meta.get("tokenizer.chat_template")
        self._spm = llama_cpp.llama_vocab_type(self._vocab) == llama_cpp.LLAMA_VOCAB_TYPE_SPM
        self._pieces: dict[str, int] | None = None
        self._eog: set[int] | None = None

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> "GGUFTokenizer":
        """Load only the vocabulary of a GGUF file (no weights: well under a second)."""
        return cls(load_llama(str(path), vocab_only=True))

    def __len__(self) -> int:
        return self._n_vocab

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._llama.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=True))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        n = len(ids)
        if n == 0:
            return ""
        arr = (self._lib.llama_token * n)(*ids)
        size = 16 * n + 64
        for _ in range(2):   # a negative result is the buffer size needed
            buf = ctypes.create_string_buffer(size)
            got = self._lib.llama_detokenize(self._vocab, arr, n, buf, size, False, not skip_special_tokens)
            if got >= 0:
                return buf.raw[:got].decode("utf-8", errors="replace")
            size = -got
        raise PrettyAlignError(f"llama.cpp could not detokenize {n} ids")

    def piece(self, token_id: int) -> str:
        """The vocabulary entry of one id (as ``get_vocab`` spells it)."""
        text = self._lib.llama_vocab_get_text(self._vocab, token_id).decode("utf-8", errors="surrogateescape")
        return text.replace(" ", "▁") if self._spm else text

    def get_vocab(self) -> dict[str, int]:
        if self._pieces is None:
            self._pieces = {self.piece(i): i for i in range(self._n_vocab)}
        return dict(self._pieces)

    @property
    def eog_ids(self) -> set[int]:
        """Ids that end generation for llama.cpp (EOS, EOT and the like)."""
        if self._eog is None:
            is_eog = self._lib.llama_vocab_is_eog
            self._eog = {i for i in range(self._n_vocab) if is_eog(self._vocab, i)}
            if self.eos_token_id is not None:
                self._eog.add(self.eos_token_id)
        return self._eog

    def render_chat(self, user_text: str) -> str:
        """One user turn through the GGUF's chat template (jinja2, as llama.cpp's server renders it;
        identical to transformers' ``apply_chat_template`` for the known models, tested)."""
        if not self.chat_template:
            raise CapabilityError("this GGUF file has no chat template (metadata 'tokenizer.chat_template')")
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        bos = self.piece(self.bos_token_id) if self.bos_token_id is not None else ""
        eos = self.piece(self.eos_token_id) if self.eos_token_id is not None else ""
        fmt = Jinja2ChatFormatter(self.chat_template, eos_token=eos, bos_token=bos, add_generation_prompt=True)
        return fmt(messages=[{"role": "user", "content": user_text}]).prompt


@BACKENDS.register("llamacpp")
class LlamaCppBackend(Backend):
    """Options: ``n_ctx`` (context size, default 4096), ``n_threads`` (alias ``threads``; default
    llama.cpp's choice), ``n_batch`` (evaluation chunk, default 32: smaller chunks let more of a
    shared prompt be reused, see the module docstring), ``prompt_cache`` (default True), ``seed``."""

    def __init__(self, model: str, *, adapter: str | None = None, dtype: str = "float32", n_ctx: int = 4096,
                 n_threads: int | None = None, n_batch: int = 32, seed: int = 0, prompt_cache: bool = True,
                 threads: int | None = None, **options: Any) -> None:
        if adapter:
            raise CapabilityError(f"the llamacpp backend cannot load LoRA adapters (adapter '{adapter}'); use the "
                                  "hf backend, or merge the adapter into the model and convert the result to GGUF")
        if options:
            raise InputError(f"unknown llamacpp backend option(s) {sorted(options)}; known: n_ctx, n_threads, "
                             "n_batch, prompt_cache, seed", field="options")
        if dtype not in DTYPES:
            raise InputError(f"dtype '{dtype}' is not one of {', '.join(DTYPES)}", field="dtype")
        for name, value in (("n_ctx", n_ctx), ("n_batch", n_batch)):
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}", field=f"options.{name}")
        self.resolved = resolve_model(model)
        if self.resolved.kind != "gguf":
            raise InputError(f"the llamacpp backend runs GGUF files; '{model}' is a {self.resolved.kind} model "
                             "(give a .gguf file or a known model name, or use the hf backend)", field="model")
        llama_cpp = import_llama_cpp()
        n_threads = n_threads or threads
        # swa_full: a sliding-window cache kept at full size, so that a cached prefix can be cut
        # back to any position (the small SWA cache has already dropped what a prefix needs).
        self._llm = load_llama(self.resolved.path, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=n_threads,
                               n_threads_batch=n_threads, seed=seed, logits_all=False, swa_full=True)
        self.n_ctx, self.n_batch, self.prompt_cache = int(self._llm.n_ctx()), int(self._llm.n_batch), prompt_cache
        self._lib, self._tok = llama_cpp, GGUFTokenizer(self._llm)
        self._eos = self._tok.eog_ids
        self._version = llama_cpp.__version__
        desc = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self._llm.model, desc, len(desc))
        self.description = desc.value.decode("utf-8", errors="replace")   # e.g. "gemma3 270M Q4_K - Medium"
        self._cached: list[int] = []      # input ids whose KV entries came from whole aligned chunks
        self.evaluated_tokens = 0         # prompt tokens run through the model (tests read it)
        self.capabilities = Capabilities(batched=False, token_ids_in=True, exact_scoring=True, adapters=False,
                                         chat_template=bool(self._tok.chat_template), batch_invariant=True)

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tok

    def render_chat(self, user_text: str) -> str:
        return self._tok.render_chat(user_text)

    # -- evaluation -------------------------------------------------------------------------
    def _prefill(self, ids: list[int]) -> None:
        """Evaluate ``ids`` so that the last logits are those of its last token, reusing the
        aligned chunks of the previous input it shares. Invariant: afterwards ``self._cached`` is
        the longest prefix of ``ids`` made of whole ``n_batch`` chunks."""
        if not ids:
            raise InputError("a prompt needs at least one token", field="prompt_ids")
        if len(ids) > self.n_ctx:
            raise InputError(f"{len(ids)} input tokens do not fit n_ctx={self.n_ctx}; raise n_ctx or lower "
                             "max_prompt_tokens", field="options.n_ctx")
        keep = 0
        if self.prompt_cache:
            limit = min(len(self._cached), len(ids) - 1)   # the last token is always evaluated: its logits
            while keep < limit and self._cached[keep] == ids[keep]:
                keep += 1
            keep -= keep % self.n_batch
        # Recurrent or hybrid memories cannot drop a suffix: fall back to a fresh evaluation.
        if keep and not self._lib.llama_memory_seq_rm(self._lib.llama_get_memory(self._llm.ctx), 0, keep, -1):
            keep = 0
        if not keep:
            self._llm.reset()
        self._cached = []           # until the evaluation below has succeeded
        self._llm.n_tokens = keep   # Llama.eval drops KV entries from n_tokens on, then chunks by n_batch
        self._llm.eval(ids[keep:])
        self.evaluated_tokens += len(ids) - keep
        self._cached = ids[:len(ids) - len(ids) % self.n_batch]

    def _logits(self):
        """The last evaluated token's logits over the whole vocabulary (a view: copy to keep)."""
        import numpy as np

        return np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self._llm.ctx, -1), shape=(len(self._tok),))

    def _step(self, tok: int) -> None:
        if self._llm.n_tokens >= self.n_ctx:
            raise InputError(f"generation ran past n_ctx={self.n_ctx}; raise n_ctx", field="options.n_ctx")
        self._llm.eval([tok])

    # -- generation -------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding,
                 on_done: OnDone | None = None) -> list[Generation]:
        """Greedy, one request at a time, sorted by (prompt, prior) so that requests sharing a
        prompt reuse its cached chunks; ``on_done`` gets each request's original index."""
        order = sorted(range(len(requests)),
                       key=lambda i: (tuple(requests[i].prompt_ids), tuple(requests[i].prior_ids)))
        out: list[Generation | None] = [None] * len(requests)
        for i in order:
            req = requests[i]
            row = RowState.for_request(decoding, self._tok, req.max_new_tokens, has_prior=bool(req.prior_ids))
            ids = req.input_ids
            if len(ids) + row.budget - 1 > self.n_ctx:
                raise InputError(f"{len(ids)} input tokens + a budget of {row.budget} new tokens do not fit "
                                 f"n_ctx={self.n_ctx}; raise n_ctx", field="options.n_ctx")
            self._prefill(ids)
            while True:
                tok = int(self._logits().argmax())
                reason = row.push(tok, self._eos)
                if reason:
                    break
                self._step(tok)
            out[i] = Generation(row.new, reason)
            if on_done:
                on_done(i, out[i])
        return out  # type: ignore[return-value]

    # -- scoring ----------------------------------------------------------------------------
    def _forced(self, prompt_ids: Sequence[int], answer_ids: Sequence[int]) -> Iterator[Any]:
        """Full-vocabulary logits (float32 copies) predicting each answer token, teacher-forced."""
        if len(prompt_ids) + len(answer_ids) - 1 > self.n_ctx:
            raise InputError(f"{len(prompt_ids)} prompt + {len(answer_ids)} answer tokens do not fit "
                             f"n_ctx={self.n_ctx}", field="options.n_ctx")
        self._prefill(list(prompt_ids))
        for j, tok in enumerate(answer_ids):
            if j:
                self._step(answer_ids[j - 1])
            yield self._logits().copy()

    def answer_logprobs(self, items: Sequence[tuple[Sequence[int], Sequence[int]]], *, batch_size: int = 8,
                        chunk: int = 256) -> Iterator[tuple[int, int, Any]]:
        """See ``Backend.answer_logprobs``. Items run one at a time whatever ``batch_size``; each
        chunk is the float32 log-softmax of at most ``chunk`` positions' logits."""
        import numpy as np
        import torch

        for index, (prompt, answer) in enumerate(items):
            rows: list[Any] = []
            first = 0
            for j, logits in enumerate(self._forced(prompt, answer)):
                rows.append(logits)
                if len(rows) == chunk or j == len(answer) - 1:
                    yield index, first, torch.log_softmax(torch.from_numpy(np.stack(rows)), dim=-1)
                    first, rows = j + 1, []

    def signature(self) -> dict:
        return {"backend": "llamacpp", "model": self.resolved.spec, "kind": "gguf", "sha256": self.resolved.sha256,
                "quantization": self.description, "n_batch": self.n_batch, "llama_cpp_version": self._version}

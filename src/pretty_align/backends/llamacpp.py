"""llama.cpp backend (llama-cpp-python, optional extra ``pretty-align[llamacpp]``): a GGUF file run
as it is quantized, on CPU (or on a GPU build of llama-cpp-python).

Model: a known model name or a ``.gguf`` path (``models.resolve_model``). LoRA adapters are refused
(``CapabilityError``): use the hf backend. ``dtype`` is accepted and ignored: the weights are what
the GGUF quantization says, and the signature records that quantization and the file's sha256.

Tokenizer: ``GGUFTokenizer``, llama.cpp's own tokenizer over the GGUF vocabulary. For the known
models it encodes exactly as the Hugging Face tokenizer transformers builds from the same GGUF, and
``get_vocab`` spells pieces the same way, so ``boundary.tokenizer_fingerprint`` matches too (tested).

Generation is greedy, one request at a time by default (``batched=False``): the prompt + prior ids are
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

Parallel decoding (option ``parallel`` > 1, issue 14): ``ParallelDecoder`` keeps ``parallel``
sequences in one unified KV cache and advances all of them with one ``llama_decode`` per step,
admitting a new request as soon as a slot frees (continuous batching); one example's prompt is
evaluated once and shared by its prior variants through ``llama_memory_seq_cp``. It has ~2x the
throughput of the serial path on 2 CPU cores (``benchmarks/backends.py``), but llama.cpp's CPU
kernels give a token different logits depending on how many tokens share its step (repacked
matrix kernels switch between GEMV and GEMM; turning the repacking off does not make it invariant,
measured), so outputs depend on the batch: ``batch_invariant=False``, ``batched=True``, and
``parallel`` is in the signature. A request decoded alone equals a plain llama-cpp-python loop
over the same chunks (tested).

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
from .base import Backend, Capabilities, Generation, GenerationRequest, OnDone, Session, reusable_prefix

log = logging.getLogger(__name__)
DTYPES = ("float32", "bfloat16", "float16", "auto")


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
    """Options: ``n_ctx`` (context size per sequence, default 4096), ``n_threads`` (alias
    ``threads``; default llama.cpp's choice), ``n_batch`` (evaluation chunk, default 32: smaller
    chunks let more of a shared prompt be reused, see the module docstring; 512 when parallel),
    ``prompt_cache`` (default True), ``seed``, ``parallel`` (default 1: sequences decoded together
    by ``ParallelDecoder``; above 1 outputs depend on the batch, ``batch_invariant=False``)."""

    def __init__(self, model: str, *, adapter: str | None = None, dtype: str = "float32", n_ctx: int = 4096,
                 n_threads: int | None = None, n_batch: int | None = None, seed: int = 0, prompt_cache: bool = True,
                 threads: int | None = None, parallel: int = 1, **options: Any) -> None:
        if adapter:
            raise CapabilityError(f"the llamacpp backend cannot load LoRA adapters (adapter '{adapter}'); use the "
                                  "hf backend, or merge the adapter into the model and convert the result to GGUF")
        if options:
            raise InputError(f"unknown llamacpp backend option(s) {sorted(options)}; known: n_ctx, n_threads, "
                             "n_batch, prompt_cache, seed, parallel", field="options")
        if dtype not in DTYPES:
            raise InputError(f"dtype '{dtype}' is not one of {', '.join(DTYPES)}", field="dtype")
        if n_batch is None:
            n_batch = 32 if parallel == 1 else 512
        for name, value in (("n_ctx", n_ctx), ("n_batch", n_batch), ("parallel", parallel)):
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}", field=f"options.{name}")
        if parallel > 255:   # llama.cpp holds at most 256 sequences: the slots and the shared-prefix holder
            raise InputError(f"parallel must be at most 255, got {parallel}", field="options.parallel")
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
        self.n_ctx, self.prompt_cache = int(self._llm.n_ctx()), prompt_cache
        # the evaluation chunk that shapes the logits: the decoder's ubatch when parallel
        self.n_batch = n_batch if parallel > 1 else int(self._llm.n_batch)
        self._lib, self._tok = llama_cpp, GGUFTokenizer(self._llm)
        self._eos = self._tok.eog_ids
        self._version = llama_cpp.__version__
        desc = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self._llm.model, desc, len(desc))
        self.description = desc.value.decode("utf-8", errors="replace")   # e.g. "gemma3 270M Q4_K - Medium"
        self._cached: list[int] = []      # input ids whose KV entries came from whole aligned chunks
        self.evaluated_tokens = 0         # prompt tokens run through the model (tests read it)
        self.parallel = parallel
        self._decoder = (ParallelDecoder(llama_cpp, self._llm.model, self._llm.context_params, parallel=parallel,
                                         n_ctx=n_ctx, n_ubatch=n_batch, free_with=_model_exit_stack(self._llm))
                         if parallel > 1 else None)
        self.capabilities = Capabilities(batched=parallel > 1, token_ids_in=True, exact_scoring=True, adapters=False,
                                         chat_template=bool(self._tok.chat_template), batch_invariant=parallel == 1,
                                         step_hook=True, sessions=True)
        self._spare: list[_SessionContext] = []   # helper sessions' contexts, cleared, for the next session

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
            keep = reusable_prefix(self._cached, ids)
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
        rows = fitting_rows(requests, decoding, self._tok, self.n_ctx)
        if self._decoder is not None:
            return self._decoder.run(requests, order, rows, self._eos, on_done)
        out: list[Generation | None] = [None] * len(requests)
        for i in order:
            row, hook = rows[i], requests[i].hook
            self._prefill(requests[i].input_ids)
            while True:
                tok = int(hook.pick(self._logits().copy(), row.new) if hook else self._logits().argmax())
                reason = row.push(tok, self._eos)
                if reason:
                    break
                self._step(tok)
            out[i] = Generation(row.new, reason)
            if on_done:
                on_done(i, out[i])
        return out  # type: ignore[return-value]

    def eos_ids(self) -> set[int]:
        return set(self._eos)

    def session(self) -> "LlamaSession":
        return LlamaSession(self)

    def _acquire_context(self) -> "_SessionContext":
        """A cleared context for one session: a spare one, or a new one with the main context's
        settings (so a session evaluates exactly as the main context would)."""
        if self._spare:
            return self._spare.pop()
        return _SessionContext(self._lib, self._llm.model, self._llm.context_params, len(self._tok),
                               free_with=_model_exit_stack(self._llm))

    def _release_context(self, ctx: "_SessionContext") -> None:
        ctx.clear()
        self._spare.append(ctx)

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
                "quantization": self.description, "n_batch": self.n_batch, "llama_cpp_version": self._version,
                **({"parallel": self.parallel} if self.parallel > 1 else {})}


class LlamaSession(Session):
    """One sequence in a llama.cpp context of its own (taken from the backend's spare contexts on
    its first call, handed back by ``close``). ``logits(ids)`` keeps the longest prefix of ``ids``
    it already evaluated and evaluates the rest as ``Llama.eval`` would (chunks of ``n_batch`` from
    where the call starts), so a helper that follows an answer costs one prefill plus the tokens
    it is fed, however many other sessions or decodes run in between. llama.cpp's logits depend
    on how tokens are chunked; here the chunks are a function of this session's own calls, so a
    helper's logits (and the dynamic prior's outputs) do not depend on which rows share a batch,
    nor on the base model's decoding when the helper is the base backend itself."""

    def __init__(self, backend: LlamaCppBackend) -> None:
        self._backend, self._ids, self._last, self._ctx = backend, [], None, None

    def logits(self, ids):
        b, ids = self._backend, list(ids)
        if not ids:
            raise InputError("a session needs at least one token", field="ids")
        if ids == self._ids and self._last is not None:
            return self._last
        if len(ids) > b.n_ctx:
            raise InputError(f"{len(ids)} tokens do not fit n_ctx={b.n_ctx}; raise n_ctx", field="options.n_ctx")
        if self._ctx is None:
            self._ctx = b._acquire_context()
        self._ctx.cut(reusable_prefix(self._ids, ids))
        start = self._ctx.n_tokens
        # what the context holds if the evaluation below fails part-way (the next call cuts to it)
        self._ids, self._last = ids[:start], None
        self._ctx.eval(ids[start:])
        self.evaluated += len(ids) - start
        self._ids, self._last = ids, self._ctx.logits()
        return self._last

    def close(self) -> None:
        """Hand the context back to the backend (cleared): a finished row holds no KV cache."""
        if self._ctx is not None:
            ctx, self._ctx, self._ids, self._last = self._ctx, None, [], None
            self._backend._release_context(ctx)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:   # at interpreter shutdown the backend may be gone already
            pass


class _OwnedContext:
    """A llama.cpp context of our own and its batch, freed by ``close``, at the latest when its
    model is (``free_with``: the model's exit stack, where llama-cpp-python's own contexts register
    too; a context freed after its model reads freed memory)."""

    ctx: Any = None

    def _own(self, lib: Any, ctx: Any, batch_tokens: int, n_seq: int, free_with: Any, failure: str) -> None:
        if not ctx:
            raise PrettyAlignError(failure)
        self._lib, self.ctx = lib, ctx
        self._mem = lib.llama_get_memory(ctx)
        self._batch = lib.llama_batch_init(batch_tokens, 0, n_seq)
        if free_with is not None:
            free_with.callback(self.close)

    def close(self) -> None:
        if self.ctx:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self.ctx)
            self.ctx = None

    def __del__(self) -> None:   # the context holds native memory
        try:
            self.close()
        except Exception:   # at interpreter shutdown the library may be gone already
            pass


class _SessionContext(_OwnedContext):
    """A llama.cpp context for one sequence, with the main context's parameters, evaluating as
    ``Llama.eval`` does: chunks of the context's ``n_batch`` tokens from the start of each call,
    logits computed for the last token of each chunk (which also shapes the computation, so it is
    kept the same)."""

    def __init__(self, lib: Any, model: Any, params: Any, n_vocab: int, free_with: Any = None) -> None:
        self.n_vocab, self.n_tokens = n_vocab, 0
        # No stdout/stderr redirection here (it is process-wide, and a server decodes in a worker
        # thread); llama-cpp-python's log callback already silences llama.cpp's info lines.
        ctx = lib.llama_init_from_model(model, type(params).from_buffer_copy(params))
        self.n_batch = int(lib.llama_n_batch(ctx)) if ctx else 0
        self._own(lib, ctx, self.n_batch, 1, free_with,
                  "llama.cpp could not create a context for a helper session; lower 'n_ctx'")

    def cut(self, keep: int) -> None:
        """Drop every position from ``keep`` on (everything, where the memory cannot drop a suffix)."""
        keep = min(keep, self.n_tokens)
        if keep < self.n_tokens:
            if not keep or not self._lib.llama_memory_seq_rm(self._mem, 0, keep, -1):
                self.clear()
                return
            self.n_tokens = keep

    def clear(self) -> None:
        self._lib.llama_memory_clear(self._mem, True)
        self.n_tokens = 0

    def eval(self, tokens: Sequence[int]) -> None:
        b = self._batch
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            for j, t in enumerate(chunk):
                b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = t, self.n_tokens + j, 1, j == len(chunk) - 1
                b.seq_id[j][0] = 0
            b.n_tokens = len(chunk)
            rc = self._lib.llama_decode(self.ctx, b)
            if rc != 0:
                raise PrettyAlignError(f"llama_decode failed with code {rc} in a helper session")
            self.n_tokens += len(chunk)

    def logits(self):
        """A float32 copy of the last evaluated token's logits."""
        import numpy as np

        return np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,)).copy()


def _model_exit_stack(llm: Any) -> Any:
    """The exit stack on which llama-cpp-python frees ``llm``'s model (its own contexts register
    there to be freed first); None where a version keeps it elsewhere (then contexts are freed by
    their own ``close``/``__del__`` only)."""
    return getattr(getattr(llm, "_model", None), "_exit_stack", None)


def fitting_rows(requests: Sequence[GenerationRequest], decoding: Decoding, tok: Any,
                 n_ctx: int) -> list[RowState]:
    """Each request's stopping state, after checking that its input and its whole budget of new
    tokens fit one sequence of ``n_ctx`` (the last new token is never evaluated, hence ``- 1``).
    Checked for all requests before any is decoded, so a bad one fails the batch up front."""
    rows = []
    for req in requests:
        row = RowState.for_request(decoding, tok, req.max_new_tokens, has_prior=bool(req.prior_ids))
        n = len(req.input_ids)
        if n + row.budget - 1 > n_ctx:
            raise InputError(f"{n} input tokens + a budget of {row.budget} new tokens do not fit n_ctx={n_ctx}; "
                             "raise n_ctx", field="options.n_ctx")
        rows.append(row)
    return rows


class _Slot:
    """One sequence of the parallel decoder: its request's index, stopping state and next position."""

    __slots__ = ("index", "row", "pos", "next_tok")

    def __init__(self, index: int, row: RowState, pos: int) -> None:
        self.index, self.row, self.pos, self.next_tok = index, row, pos, -1


class ParallelDecoder(_OwnedContext):
    """Continuous batching over one llama.cpp context holding ``parallel`` sequences in a unified
    KV cache: one ``llama_decode`` per step over a ``llama_batch`` whose tokens carry sequence ids.

    Invariants:
    * seq ids ``0..parallel-1`` are slots; seq id ``parallel`` (the holder) keeps the shared prompt
      prefix ``prompt_ids[:-1]``. A new prefix is evaluated on the holder alone, in one step; from
      the next step on, every request with that prefix starts from ``llama_memory_seq_cp`` (in the
      unified cache, cells carry several seq ids: nothing is copied) and evaluates only its prompt's
      last token and its prior. One example's prompt is thus evaluated once for all its prior
      variants (requests come sorted by prompt).
    * A step holds one token per decoding slot plus the prefills admitted in it, at most
      ``step_tokens`` tokens unless a single prefill is longer (it then runs alone with the slots).
    * The cache has ``n_ctx`` cells per sequence (holder included) and every request is checked to
      fit ``n_ctx``, so admission never waits for cache room.

    Outputs depend on what shares a step (the matrix shapes change float sums), so a backend using
    this decoder declares ``batch_invariant=False``."""

    def __init__(self, lib: Any, model: Any, base_params: Any, *, parallel: int, n_ctx: int, n_ubatch: int,
                 step_tokens: int = 512, free_with: Any = None) -> None:
        self._lib, self.parallel, self.n_ctx, self.step_tokens = lib, parallel, n_ctx, step_tokens
        self.n_vocab = int(lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model)))
        params = type(base_params).from_buffer_copy(base_params)
        params.n_ctx, params.n_seq_max, params.kv_unified = n_ctx * (parallel + 1), parallel + 1, True
        self.max_batch = max(step_tokens, n_ctx) + parallel
        params.n_batch, params.n_ubatch = self.max_batch, n_ubatch
        # Sequences are only ever dropped whole, so the small sliding-window cache would do; llama.cpp
        # still keeps it full-size in a unified cache (it logs so).
        params.swa_full = False
        from llama_cpp._utils import suppress_stdout_stderr

        with suppress_stdout_stderr(disable=False):   # llama.cpp's context log, as Llama(verbose=False) does
            ctx = lib.llama_init_from_model(model, params)
        self._own(lib, ctx, self.max_batch, parallel + 1, free_with,
                  f"llama.cpp could not create a context for {parallel} parallel sequences of n_ctx={n_ctx}; "
                  "lower 'parallel' or 'n_ctx'")
        self.evaluated_tokens = 0   # tokens run through the model (tests read it)

    def _decode(self, entries: list[tuple[int, int, list[int], bool]]) -> None:
        """One ``llama_decode`` over (token, position, seq ids, wants logits) entries."""
        b = self._batch
        for j, (t, p, seqs, want) in enumerate(entries):
            b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = t, p, len(seqs), want
            for k, s in enumerate(seqs):
                b.seq_id[j][k] = s
        b.n_tokens = len(entries)
        rc = self._lib.llama_decode(self.ctx, b)
        if rc != 0:
            raise PrettyAlignError(f"llama_decode failed with code {rc} on a batch of {len(entries)} tokens "
                                   "(1: no room in the KV cache: lower 'parallel' or raise 'n_ctx')")
        self.evaluated_tokens += len(entries)

    def run(self, requests: Sequence[GenerationRequest], order: Sequence[int], rows: Sequence[RowState],
            eos: set[int], on_done: OnDone | None) -> list[Generation]:
        """Greedy outputs of ``requests`` (``rows[i]`` holds request i's stopping state), admitted in
        ``order``; ``on_done(i, gen)`` as each ends."""
        import numpy as np

        lib, holder_id, n_vocab = self._lib, self.parallel, self.n_vocab
        lib.llama_memory_clear(self._mem, True)
        queue, free = list(reversed(order)), list(range(self.parallel - 1, -1, -1))
        active: dict[int, _Slot] = {}
        out: list[Generation | None] = [None] * len(requests)
        holder: list[int] = []
        while queue or active:
            entries: list[tuple[int, int, list[int], bool]] = []
            outputs: list[tuple[int, int]] = []   # (slot, batch index of its logits)
            for s, slot in active.items():
                outputs.append((s, len(entries)))
                entries.append((slot.next_tok, slot.pos, [s], True))
                slot.pos += 1
            while queue and free:
                req = requests[queue[-1]]
                ids, shared = list(req.input_ids), list(req.prompt_ids[:-1])
                if shared and shared != holder:
                    # Evaluate the new prefix on the holder alone; the requests that share it start
                    # at the next step from a copy (a token cannot belong to two KV streams).
                    if entries and len(entries) + len(shared) > self.step_tokens:
                        break
                    lib.llama_memory_seq_rm(self._mem, holder_id, 0, -1)
                    holder = shared
                    entries.extend((t, p, [holder_id], False) for p, t in enumerate(shared))
                    break
                if entries and len(entries) + len(ids) - len(shared) > self.step_tokens:
                    break   # a later step has room
                i, s = queue.pop(), free.pop()
                if shared:
                    lib.llama_memory_seq_cp(self._mem, holder_id, s, 0, -1)
                for p in range(len(shared), len(ids)):
                    entries.append((ids[p], p, [s], p == len(ids) - 1))
                outputs.append((s, len(entries) - 1))
                active[s] = _Slot(i, rows[i], len(ids))
            self._decode(entries)
            for s, b in outputs:
                slot = active[s]
                logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self.ctx, b), shape=(n_vocab,))
                hook = requests[slot.index].hook
                t = int(hook.pick(logits.copy(), slot.row.new) if hook else logits.argmax())
                reason = slot.row.push(t, eos)
                if not reason:
                    slot.next_tok = t
                    continue
                lib.llama_memory_seq_rm(self._mem, s, 0, -1)
                del active[s]
                free.append(s)
                out[slot.index] = Generation(slot.row.new, reason)
                if on_done:
                    on_done(slot.index, out[slot.index])
        return out  # type: ignore[return-value]

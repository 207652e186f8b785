"""Hugging Face transformers backend: hub id, model directory or GGUF file, optional LoRA adapter.

A hub id is pinned to one commit before loading (``models.pin_hub_revision``; option ``revision``:
a branch, tag or commit, default the default branch): model and tokenizer are both read at that
commit, and the signature records it as ``revision`` (hub ids only; files and directories are
identified by ``sha256``).

GGUF files are dequantized by transformers on first load (~25 s for gemma-3-270m on 2 cores) and the
result is cached as a regular checkpoint under the pretty-align cache, keyed by the file's sha256,
so later loads take seconds. Greedy generation is batched with left padding; rows are sorted by
length so batches carry little padding, and every row stops on its own (stop string, EOS, loop
guard, its own token budget) through ``decoding.RowState``, exactly as it would alone; a finished row
leaves the batch, so the others do not wait for it.

Prefix reuse (``prefix_reuse``, on by default): requests that share their prompt (one example under
several priors) are ordered together, the prompt is prefilled once per batch and its cache rows are
forked for each prior variant; only the prior tokens are then fed, left-padded to a common length
(masked, with explicit positions), so every row still computes exactly its own sequence. Forking is
skipped where it could change an output: a sliding-window layer that the longest row would outgrow.

Options for speed (each recorded in the signature when set): ``output_layer = "mm"`` computes the
output layer as ``W @ h.T``; ``prepack = true`` runs every linear layer through oneDNN over weights
laid out once at load (bit-identical in bfloat16, last bits differ in float32).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..boundary import Tokenizer
from ..decoding import Decoding, RowState
from ..errors import InputError, MissingDependencyError, PrettyAlignError
from ..hardware import resolve_dtype
from ..models import ResolvedModel, cache_dir, dir_sha256, pin_hub_revision, publish_dir, resolve_model
from . import BACKENDS
from .base import Backend, Capabilities, Generation, GenerationRequest, OnDone, Session, reusable_prefix

log = logging.getLogger(__name__)
REFILL_DIVISOR = 2  # refill once batch_size // 2 slots are free


@contextlib.contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """While active, every ``gguf.GGUFReader(path)`` returns one reader per file, parsed over a plain
    ndarray view of its memory map (the same bytes, read-only).

    transformers opens a GGUF three times to convert it (tokenizer, config, weights), and gguf-py's
    reader slices a ``numpy.memmap`` once per vocabulary string: for gemma-3-270m's 262k tokens,
    memmap's per-slice subclass hooks were ~3/4 of the conversion's profile (cProfile); in wall time
    the conversion went from 57.2 to 25.0 s (benchmarks/gguf_convert.py). transformers imports the
    reader from ``gguf`` at call time, so patching the module attribute reaches it; if a version
    imports it earlier, the conversion is merely as slow as before. Not thread-safe: conversion runs
    under ``publish_dir`` in one thread."""
    import gguf
    import numpy as np

    original = gguf.GGUFReader

    class PlainReader(original):  # type: ignore[misc, valid-type]
        # The reader assigns ``self.data = np.memmap(...)`` first thing in __init__.
        data = property(lambda self: self._plain,
                        lambda self, value: setattr(self, "_plain", value.view(np.ndarray)))

    readers: dict[tuple[str, str], Any] = {}

    def reader(path, mode="r"):
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = PlainReader(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def converted_dir(gguf_sha256: str) -> Path:
    """Where the hf backend keeps the checkpoint it dequantized from the GGUF file with this sha256
    (``<cache>/gguf-hf/<first 16 hex digits>``): converted once per file, then loaded from there."""
    return cache_dir() / "gguf-hf" / gguf_sha256[:16]


def _load(resolved: ResolvedModel, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if resolved.kind == "gguf":
        converted = converted_dir(resolved.sha256)  # type: ignore[arg-type]
        if not (converted / "config.json").exists():
            src = Path(resolved.path)
            log.info("dequantizing %s once (cached in %s)", src.name, converted)
            with _gguf_parsed_once():
                tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
                model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
            # The weights are plain dequantized tensors now; drop the GGUF "quantizer" so that
            # transformers agrees to save them as an ordinary checkpoint.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config

            def write(tmp: Path) -> None:
                tok.save_pretrained(tmp)
                model.save_pretrained(tmp)

            publish_dir(converted, write)   # another process may be converting the same file
        where = str(converted)
    else:
        where = resolved.path
    try:
        tok = AutoTokenizer.from_pretrained(where, revision=resolved.revision)
        model = AutoModelForCausalLM.from_pretrained(where, revision=resolved.revision, dtype=torch_dtype)
    except OSError as e:
        raise PrettyAlignError(f"could not load model '{resolved.spec}': {e}") from e
    loaded = getattr(model.config, "_commit_hash", None)
    if resolved.revision and loaded and loaded != resolved.revision:
        raise PrettyAlignError(f"model '{resolved.spec}': asked for commit {resolved.revision}, "
                               f"transformers loaded {loaded}")
    return tok, model.eval()


def _parts(model):
    """(decoder, output layer, final logit soft-cap) of a causal LM, also through a peft wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings(), getattr(base.config, "final_logit_softcapping", None)


def answer_hidden(model, ids, mask, keep):
    """Final hidden states ``[n, hidden]`` at the positions where ``keep`` (bool ``[B, T]``) is true,
    row by row: one decoder pass, no vocabulary-sized tensor."""
    decoder, _, _ = _parts(model)
    return decoder(input_ids=ids, attention_mask=mask).last_hidden_state[keep]


def project(model, hidden):
    """Logits from final hidden states, exactly as the model's own forward computes them."""
    _, head, cap = _parts(model)
    logits = head(hidden)
    return (logits / cap).tanh() * cap if cap else logits


OUTPUT_LAYERS = ("linear", "mm")


def _prepare_output_layer(model, output_layer: str = "linear") -> None:
    """Set how the output layer computes ``h W^T``: ``linear`` (transformers' own, with its input
    given canonical strides) or ``mm`` (``W @ h.T``).

    ``linear``: with ``logits_to_keep=1`` the output layer gets ``hidden[:, -1:, :]``, whose batch
    stride is the whole sequence's. ``torch.matmul`` folds a 3-D input into one ``mm`` only when the
    weight requires grad or the leading strides are canonical; otherwise it broadcasts the weight to
    a ``bmm`` and copies it (262k x 640 for gemma-3, ~1.2 s per batch row on 2 cores). A merged LoRA
    adapter leaves the weights with ``requires_grad=False``, so every multi-token forward of the SFT
    counterpart (a prefill, a helper catching up) paid that copy. Copying the B x 640 slice costs
    nothing and gives the same values.

    ``mm``: the same product with the weight as the left operand, on a 2-D view of the input (so
    the strides above do not matter). On an AVX2 CPU (2 cores, float32) torch runs the
    decode-shaped GEMM (B x 640 @ 640 x 262144) 2.0x faster at B = 8 and 1.6x at B = 32 this way,
    and no faster in bfloat16 (benchmarks/roofline.py --output-layer); values differ from
    ``linear`` in the last bits, so the choice is part of the backend's signature."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return
    if output_layer == "mm":
        head.forward = _weight_left_forward(head)
    else:
        head.register_forward_pre_hook(_canonical_input)


def _weight_left_forward(head):
    """``head``'s forward as ``(W @ h.T).T`` (+ bias) over ``h`` flattened to 2-D."""
    import torch

    def forward(x):
        flat = x.reshape(-1, x.shape[-1])
        out = torch.mm(head.weight, flat.t()).t()
        if head.bias is not None:
            out = out + head.bias
        return out.reshape(*x.shape[:-1], out.shape[-1])

    return forward


PREPACK_BATCH_HINT = 8   # oneDNN lays the weights out for this many rows; any row count works


def _prepack_linears(model) -> None:
    """Give every ``nn.Linear`` (the output layer included; LoRA's too, merged or not) a forward
    through oneDNN's linear kernel over a weight laid out for it once at load, instead of per call.

    Why: in bfloat16, torch's ``linear`` reorders the weight into oneDNN's blocked layout on every
    call, so a decode step reads every weight twice and writes it once. Prepacked, the output layer's
    decode-shaped GEMM ran 1.5-2.9x faster in bfloat16 and 2.1-4.7x in float32 on a 2-core AVX-512
    CPU (benchmarks/roofline.py --prepack), with bit-identical bfloat16 values. In
    float32 the kernel differs from torch's (MKL), so the last bits of the logits do too: the
    choice is in the signature. Invariant: the module's own ``weight`` stays as it was (the tied
    input embedding reads it); the packed copy costs that much memory again."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.forward = packed_linear(module.weight, module.bias)


def packed_linear(weight, bias=None):
    """``x -> linear(x, weight, bias)`` through oneDNN, ``weight`` laid out for it once, now."""
    import torch

    packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PREPACK_BATCH_HINT)

    def forward(x):
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

    return forward


def check_prepack(dtype: str) -> None:
    """``prepack`` needs torch built with oneDNN, and for bfloat16 a CPU whose oneDNN has bf16;
    raises ``InputError`` (field ``options.prepack``) saying which is missing."""
    import torch

    if dtype not in {"float32", "bfloat16"}:
        raise InputError(f"prepack runs float32 or bfloat16 weights, not {dtype}", field="options.prepack")
    if not torch.backends.mkldnn.is_available():
        raise InputError("prepack needs torch built with oneDNN (mkldnn), which this torch is not",
                         field="options.prepack")
    if dtype == "bfloat16" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise InputError("prepack in bfloat16 needs a CPU with bf16 support in oneDNN (AVX-512); use float32",
                         field="options.prepack")


def _canonical_input(_module, args):
    """Forward pre-hook: the input with canonical strides where ``matmul`` could not fold it."""
    import torch

    x = args[0]
    if all(x.stride(i) == x.stride(i + 1) * x.shape[i + 1] for i in range(x.dim() - 2)):
        return None   # matmul folds it already
    return (x.clone(memory_format=torch.contiguous_format), *args[1:])


@BACKENDS.register("hf")
class HFBackend(Backend):
    def __init__(self, model: str, *, adapter: str | None = None, dtype: str = "float32",
                 threads: int | None = None, merge_adapter: bool = True, prefix_reuse: bool = True,
                 revision: str | None = None, output_layer: str = "linear", prepack: bool = False) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        if dtype not in {"float32", "bfloat16", "float16", "auto"}:
            raise InputError(f"dtype '{dtype}' is not one of float32, bfloat16, float16, auto", field="dtype")
        dtype = resolve_dtype(dtype, what="hf backend dtype")   # the signature records what runs
        if output_layer not in OUTPUT_LAYERS:
            raise InputError(f"output_layer '{output_layer}' is not one of {', '.join(OUTPUT_LAYERS)}",
                             field="options.output_layer")
        if not isinstance(prepack, bool):
            raise InputError(f"prepack must be true or false, not {prepack!r}", field="options.prepack")
        if prepack:
            check_prepack(dtype)
            if output_layer != "linear":
                raise InputError(f"prepack replaces every linear layer, the output layer included: it cannot be "
                                 f"combined with output_layer '{output_layer}'", field="options.output_layer")
        self.output_layer, self.prepack = output_layer, prepack
        self.resolved = pin_hub_revision(resolve_model(model), revision)
        self.dtype = dtype
        self.prefix_reuse = prefix_reuse
        self._tok, self.model = _load(self.resolved, dtype)
        self.adapter_sha256 = None
        # Merged LoRA weights decode as fast as the base model; unmerged is exactly peft's forward.
        self.merge_adapter = bool(adapter) and merge_adapter
        if adapter:
            self._load_adapter(adapter)
        if prepack:
            _prepack_linears(self.model)   # after any adapter merge: the merged weights are packed
        else:
            _prepare_output_layer(self.model, output_layer)
        if self._tok.pad_token_id is None:
            self._tok.pad_token = self._tok.eos_token
        has_template = getattr(self._tok, "chat_template", None) is not None
        # transformers >= 5.x renamed ``past_key_values`` to ``cache``; use whichever forward takes.
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self.cache_kw = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        self.capabilities = Capabilities(batched=True, token_ids_in=True, exact_scoring=True,
                                         adapters=True, chat_template=has_template,
                                         batch_invariant=dtype == "float32", step_hook=True, sessions=True)

    def _load_adapter(self, adapter: str) -> None:
        if not Path(adapter).is_dir():
            raise InputError(f"adapter directory '{adapter}' does not exist", field="adapter")
        try:
            from peft import PeftModel
        except ImportError:
            raise MissingDependencyError("loading a LoRA adapter", "peft") from None
        model = PeftModel.from_pretrained(self.model, adapter)
        self.model = (model.merge_and_unload() if self.merge_adapter else model).eval()
        self.adapter_sha256 = dir_sha256(adapter)

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tok

    def render_chat(self, user_text: str) -> str:
        return self._tok.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                             add_generation_prompt=True)

    # -- generation -------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding,
                 on_done: OnDone | None = None) -> list[Generation]:
        """Greedy continuous batching: up to ``batch_size`` rows decode together; a row that stops
        leaves the batch and the next request (by length) is prefilled and merged in its place.
        Left padding + attention mask keep every row's computation that of the row alone
        (batched == one at a time, tested)."""
        import torch

        if self.prefix_reuse:   # same prompt together (shortest prompts first), then by prior length
            order = sorted(range(len(requests)), key=lambda i: (len(requests[i].prompt_ids), requests[i].prompt_ids,
                                                                len(requests[i].prior_ids)))
        else:
            order = sorted(range(len(requests)), key=lambda i: len(requests[i].input_ids))
        pending = [(i, requests[i]) for i in order]
        out: list[Generation | None] = [None] * len(requests)
        eos = self._eos_ids()
        hooks = {i: r.hook for i, r in enumerate(requests) if r.hook is not None}
        batch: _Batch | None = None
        with torch.inference_mode():
            while pending or batch is not None:
                room = decoding.batch_size - (len(batch.rows) if batch else 0)
                # Refill once a few slots are free: prefilling one row alone costs ~2 decode steps.
                if pending and (batch is None or room >= max(1, decoding.batch_size // REFILL_DIVISOR)):
                    group = pending[:room]
                    # an upper bound of the new batch's width, forked (prompt + longest prior) or not
                    width = max(len(r.prompt_ids) for _, r in group) + max(len(r.prior_ids) for _, r in group)
                    if batch is None or batch.can_merge(width, decoding.max_new_tokens):
                        pending = pending[room:]
                        fresh = self._prefill(group, decoding)
                        batch = fresh if batch is None else batch.merge(fresh)
                for row, gen in batch.step(eos, hooks):  # type: ignore[union-attr]
                    out[row] = gen
                    if on_done:
                        on_done(row, gen)
                if not batch.rows:  # type: ignore[union-attr]
                    batch = None
                else:
                    batch.advance(self.model)  # type: ignore[union-attr]
        return out  # type: ignore[return-value]

    def _prefill(self, group: list[tuple[int, GenerationRequest]], decoding: Decoding) -> "_Batch":
        """Prefill ``group`` into a new batch; rows that share a prompt share its prefill."""
        import torch

        rows = [(i, RowState.for_request(decoding, self._tok, r.max_new_tokens, has_prior=bool(r.prior_ids)))
                for i, r in group]
        reqs = [r for _, r in group]
        prompts = list(dict.fromkeys(r.prompt_ids for r in reqs))
        longest = max(map(len, prompts)) + max(len(r.prior_ids) for r in reqs) + decoding.max_new_tokens
        if self.prefix_reuse and len(prompts) < len(reqs) and _fits_window(self._new_cache(), longest):
            cache, mask, next_pos, logits = self._forward_left_padded([list(p) for p in prompts])
            fork = torch.tensor([prompts.index(r.prompt_ids) for r in reqs])
            cache.batch_select_indices(fork)   # indexing with repeats copies each prompt's rows
            batch = _Batch(rows, cache, mask[fork], next_pos[fork], logits[fork], self.cache_kw)
            batch.feed(self.model, [list(r.prior_ids) for r in reqs], self._tok.pad_token_id)
            return batch
        cache, mask, next_pos, logits = self._forward_left_padded([r.input_ids for r in reqs])
        return _Batch(rows, cache, mask, next_pos, logits, self.cache_kw)

    def eos_ids(self) -> set[int]:
        return self._eos_ids()

    def session(self) -> "HFSession":
        return HFSession(self)

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _forward_left_padded(self, inputs: list[list[int]]):
        """(cache, mask, next position, last logits) of one left-padded pass over ``inputs``."""
        import torch

        width = max(map(len, inputs))
        pad = self._tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(x)) + x for x in inputs])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in inputs])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = self._new_cache()
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                            logits_to_keep=1, **{self.cache_kw: cache}).logits[:, -1]
        return cache, mask, pos[:, -1] + 1, logits

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self._tok.eos_token_id is not None:
            ids.add(self._tok.eos_token_id)
        return ids

    # -- scoring -----------------------------------------------------------------------------
    def answer_logprobs(self, items: Sequence[tuple[Sequence[int], Sequence[int]]], *, batch_size: int = 8,
                        chunk: int = 256) -> Iterator[tuple[int, int, Any]]:
        """See ``Backend.answer_logprobs``: right-padded batches, one decoder pass each, the output
        layer applied only at answer positions and only ``chunk`` positions at a time."""
        import torch

        for start in range(0, len(items), batch_size):
            group = items[start:start + batch_size]
            width = max(len(p) + len(a) for p, a in group)
            ids = torch.full((len(group), width), self._tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            keep = torch.zeros_like(ids, dtype=torch.bool)
            for row, (p, a) in enumerate(group):
                if not p:
                    raise InputError("scoring needs at least one prompt token", field="prompt_ids")
                ids[row, :len(p) + len(a)] = torch.tensor(list(p) + list(a))
                mask[row, :len(p) + len(a)] = 1
                keep[row, len(p) - 1:len(p) + len(a) - 1] = True   # positions that predict an answer token
            # Grad mode is thread-local: a context held across a ``yield`` would leak into the
            # caller (and two interleaved generators would restore each other's state wrongly),
            # so every no-grad block closes before the chunk is handed out.
            with torch.no_grad():
                hidden = answer_hidden(self.model, ids, mask, keep)
            offset = 0
            for row, (_, a) in enumerate(group):
                for first in range(0, len(a), chunk):
                    n = min(chunk, len(a) - first)
                    with torch.no_grad():
                        lp = torch.log_softmax(project(self.model, hidden[offset + first:offset + first + n]).float(),
                                               dim=-1)
                    yield start + row, first, lp
                offset += len(a)

    def signature(self) -> dict:
        """Identity of the weights: ``sha256`` (gguf, dir) or ``revision``, the commit (hub ids;
        absent for other kinds, whose keys predate it)."""
        return {"backend": "hf", "model": self.resolved.spec, "kind": self.resolved.kind,
                "sha256": self.resolved.sha256, **({"revision": self.resolved.revision} if self.resolved.kind == "hub"
                                                   else {}),
                "adapter_sha256": self.adapter_sha256,
                "dtype": self.dtype, **({"adapter_merged": self.merge_adapter} if self.adapter_sha256 else {}),
                # Forking a prompt's cache changes the padded shapes, which moves low-precision outputs
                # like batch composition does; float32 outputs are unchanged (tested). Absent = no reuse.
                **({"prefix_reuse": True} if self.prefix_reuse and self.dtype != "float32" else {}),
                **({"output_layer": self.output_layer} if self.output_layer != "linear" else {}),   # absent: linear
                **({"prepack": True} if self.prepack else {})}   # absent: torch's own linear


class HFSession(Session):
    """One sequence with its own KV cache. ``logits(ids)`` crops the cache to the longest common
    prefix of ``ids`` and what it evaluated, then feeds the rest in one forward pass: a helper that
    follows an answer token by token costs one prefill plus one position per token fed. A row is
    always computed alone (no padding), so its logits do not depend on any batch."""

    def __init__(self, backend: HFBackend) -> None:
        self._backend, self._ids, self._cache, self._last = backend, [], None, None

    def close(self) -> None:
        self._ids, self._cache, self._last = [], None, None

    def logits(self, ids):
        import torch

        ids = list(ids)
        if not ids:
            raise InputError("a session needs at least one token", field="ids")
        if ids == self._ids and self._last is not None:
            return self._last
        keep = reusable_prefix(self._ids, ids)
        if keep and keep < len(self._ids):
            try:   # transformers 5: a negative count drops that many positions from every layer
                self._cache.crop(keep - len(self._ids))
            except (RuntimeError, ValueError):   # a sliding-window layer past its window cannot roll back
                keep = 0
        if self._cache is None or not keep:
            self._cache, keep = self._backend._new_cache(), 0
        b = self._backend
        with torch.inference_mode():
            out = b.model(input_ids=torch.tensor([ids[keep:]]), position_ids=torch.arange(keep, len(ids))[None],
                          use_cache=True, logits_to_keep=1, **{b.cache_kw: self._cache})
        self.evaluated += len(ids) - keep
        self._ids, self._last = ids, out.logits[0, -1].float().numpy()
        return self._last


class _Batch:
    """Rows decoding together, as (request index, RowState): a KV cache, a left-padded attention
    mask, each row's next position and the logits of each row's next token. Invariant: row j of
    every tensor is ``rows[j]``, and
    the cache length equals the mask width."""

    def __init__(self, rows: list[tuple[int, RowState]], cache, mask, next_pos, logits, cache_kw: str) -> None:
        self.rows, self.cache, self.mask, self.next_pos, self.logits = rows, cache, mask, next_pos, logits
        self.cache_kw = cache_kw
        self._tokens = None

    def step(self, eos: set[int], hooks: dict | None = None) -> list[tuple[int, Generation]]:
        """Pick each row's token (greedy, or its request's step hook from the row's own logits);
        drop the rows that stop (from the cache too)."""
        import torch

        # argmax over float32: exact conversion, same index, and ~2x faster than over bfloat16 here
        tokens = self.logits.float().argmax(-1).tolist()
        finished, keep = [], []
        for j, (index, row) in enumerate(self.rows):
            if hooks and index in hooks:
                tokens[j] = int(hooks[index].pick(self.logits[j].float().numpy(), row.new))
            reason = row.push(tokens[j], eos)
            if reason is None:
                keep.append(j)
            else:
                finished.append((index, Generation(row.new, reason)))
        if finished and keep:
            idx = torch.tensor(keep)
            self.cache.batch_select_indices(idx)
            self.mask, self.next_pos = self.mask[idx], self.next_pos[idx]
        self.rows = [self.rows[j] for j in keep]
        self._tokens = torch.tensor([tokens[j] for j in keep])[:, None]
        return finished

    def advance(self, model) -> None:
        """Feed each row's last token: one decode step for the whole batch."""
        import torch

        self.mask = torch.cat([self.mask, torch.ones(len(self.rows), 1, dtype=self.mask.dtype)], dim=1)
        self.logits = model(input_ids=self._tokens, attention_mask=self.mask, position_ids=self.next_pos[:, None],
                            use_cache=True, **{self.cache_kw: self.cache}).logits[:, -1]
        self.next_pos = self.next_pos + 1

    def feed(self, model, suffixes: list[list[int]], pad: int) -> None:
        """Append each row's ``suffixes[j]`` (its prior ids) to its cached prompt in one pass,
        left-padded to a common length with masked columns; a row with no suffix keeps its
        prompt's logits."""
        import torch

        width = max(map(len, suffixes))
        if not width:
            return
        lens = torch.tensor([len(x) for x in suffixes])
        ids = torch.tensor([[pad] * (width - len(x)) + x for x in suffixes])
        new_mask = (torch.arange(width)[None, :] >= (width - lens)[:, None]).to(self.mask.dtype)
        pos = self.next_pos[:, None] + (torch.arange(width)[None, :] - (width - lens)[:, None]).clamp(min=0)
        self.mask = torch.cat([self.mask, new_mask], dim=1)
        logits = model(input_ids=ids, attention_mask=self.mask, position_ids=pos, use_cache=True,
                       logits_to_keep=1, **{self.cache_kw: self.cache}).logits[:, -1]
        self.logits = torch.where((lens > 0)[:, None], logits, self.logits)
        self.next_pos = self.next_pos + lens

    def can_merge(self, width: int, max_new_tokens: int) -> bool:
        """Merging left-pads caches: exact while every sequence fits its sliding windows."""
        return _fits_window(self.cache, max(self.mask.shape[1], width) + max_new_tokens)

    def merge(self, other: "_Batch") -> "_Batch":
        """Append ``other``'s rows, left-padding the shorter side's cache and mask with zeros
        (masked positions: exactly as if the row had been left-padded from the start)."""
        import torch

        width = max(self.mask.shape[1], other.mask.shape[1])
        for la, lb in zip(self.cache.layers, other.cache.layers):
            la.keys = torch.cat([_left_pad(la.keys, width), _left_pad(lb.keys, width)], dim=0)
            la.values = torch.cat([_left_pad(la.values, width), _left_pad(lb.values, width)], dim=0)
            if hasattr(la, "cumulative_length"):
                la.cumulative_length = width
        mask = torch.cat([_left_pad(self.mask, width, dim=1), _left_pad(other.mask, width, dim=1)], dim=0)
        return _Batch(self.rows + other.rows, self.cache, mask, torch.cat([self.next_pos, other.next_pos]),
                      torch.cat([self.logits, other.logits]), self.cache_kw)


def _fits_window(cache, final: int) -> bool:
    """Padding inside a cache (left padding, masked columns between prompt and prior) is exact for
    plain layers, and for sliding-window layers only while every sequence, until it ends (cache
    width ``final``), fits in the window; unknown layer types are not assumed safe."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    for layer in cache.layers:
        if type(layer) is DynamicSlidingWindowLayer:
            if final >= layer.sliding_window - 1:
                return False
        elif type(layer) is not DynamicLayer:
            return False
    return True


def _left_pad(t, width: int, dim: int = -2):
    import torch

    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=t.dtype), t], dim=dim)

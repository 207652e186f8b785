"""The backend contract. A backend is a model plus its tokenizer behind four calls:

* ``generate(requests, decoding, on_done=None)``: batched greedy continuation of
  ``prompt.ids + prior_ids``; returns the new ids only (the caller renders text through
  ``boundary.render_output``) and calls ``on_done(i, generation)`` as each request finishes, so
  results can be stored as they are produced. Invariant: batched output == one-at-a-time output
  (where ``capabilities.batch_invariant``).
* ``score(prompt_ids, answer_ids, top_k)``: teacher forcing in one forward pass: per answer
  position the log-prob and 1-based rank of the given token and the top-k ids.
* ``tokenizer``: a ``boundary.Tokenizer``; ``render_chat(text)`` for chat-template models.
* ``capabilities`` and ``signature()``: what it can do, and what identifies it in a result key.
* ``session()`` (backends with ``capabilities.sessions``): an incremental view of one
  sequence, for a helper model that follows another model's output (the ``dynamic`` prior).

A request may carry a ``decoding.StepHook``; backends that run their own decode loop
(``capabilities.step_hook``) call it at every step of that row, the others refuse it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterator, Callable, Sequence

from ..boundary import Tokenizer, model_input
from ..decoding import Decoding, StepHook
from ..errors import CapabilityError


@dataclass(frozen=True)
class Capabilities:
    batched: bool = True          # generate() runs a batch in one pass
    token_ids_in: bool = True     # accepts token-id prompts (needed for exact prior boundaries)
    exact_scoring: bool = False   # score() gives full-vocabulary ranks (not a top-N approximation)
    adapters: bool = False        # can load a LoRA adapter
    chat_template: bool = False   # the model ships a chat template
    # Greedy outputs do not depend on which rows share a batch. True for float32 on CPU (tested);
    # bfloat16/float16 kernels round differently for different padded shapes, so there the batch
    # size becomes part of every result key (and the runner forms batches deterministically).
    batch_invariant: bool = True
    step_hook: bool = False       # generate() calls a request's StepHook at each of its steps
    sessions: bool = False        # session(): incremental logits of one sequence (a dynamic prior's helper)


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: tuple[int, ...]
    prior_ids: tuple[int, ...] = ()
    max_new_tokens: int | None = None   # per-row budget; None -> decoding.max_new_tokens
    hook: StepHook | None = field(default=None, compare=False)   # picks each next token instead of argmax

    @property
    def input_ids(self) -> list[int]:
        """What the model is conditioned on (``boundary.model_input``)."""
        return model_input(self.prompt_ids, self.prior_ids)


@dataclass
class Generation:
    new_ids: list[int]
    stop_reason: str  # "stop" | "eos" | "length" | "loop"


@dataclass
class ScoreResult:
    logprobs: list[float]           # log p(answer token at position i)
    ranks: list[int]                # 1-based rank of that token in the full distribution
    top_ids: list[list[int]] = field(default_factory=list)


OnDone = Callable[[int, Generation], None]


class Session(ABC):
    """One sequence of a model, evaluated incrementally: ``logits(ids)`` gives the next-token
    logits after ``ids`` (a float32 numpy array over the vocabulary), evaluating only what follows
    the longest prefix of ``ids`` already evaluated. Its cost over a whole answer is one prefill
    plus the tokens it is fed, however often it is asked."""

    evaluated = 0   # tokens this session ran through the model (tests and benchmarks read it)

    @abstractmethod
    def logits(self, ids: Sequence[int]) -> Any: ...

    def close(self) -> None:
        """Free what the sequence holds (its KV cache); a later ``logits`` starts afresh."""


def reusable_prefix(done: Sequence[int], ids: Sequence[int]) -> int:
    """How many leading ids of ``ids`` were already evaluated (``done``), leaving at least the last
    one to evaluate: its logits are what the caller wants."""
    keep, limit = 0, min(len(done), len(ids) - 1)
    while keep < limit and done[keep] == ids[keep]:
        keep += 1
    return keep


def refuse_hooks(backend: "Backend", requests: Sequence[GenerationRequest]) -> None:
    """Raise CapabilityError when a request carries a step hook that ``backend`` cannot call."""
    if not backend.capabilities.step_hook and any(r.hook is not None for r in requests):
        raise CapabilityError(f"backend '{backend.registry_name}' decodes in its own engine and cannot call a step "
                              "hook (the dynamic prior); run the base model on backend 'hf' or 'llamacpp'")


def token_stats(logp, targets: Sequence[int], top_k: int):
    """(log p of each target, its 1-based rank, the top-k ids) from a ``[n, vocab]`` log-prob
    tensor and ``n`` target ids: the reduction every scoring path applies to full distributions."""
    import torch

    tgt = torch.as_tensor(list(targets), dtype=torch.long)[:, None]
    chosen = logp.gather(1, tgt)[:, 0]
    ranks = (logp > chosen[:, None]).sum(dim=1) + 1
    return chosen, ranks, logp.topk(top_k, dim=1).indices


class Backend(ABC):
    registry_name = "?"
    capabilities = Capabilities()

    @property
    @abstractmethod
    def tokenizer(self) -> Tokenizer: ...

    @property
    def has_chat_template(self) -> bool:
        return self.capabilities.chat_template

    def render_chat(self, user_text: str) -> str:
        """Render one user turn through the model's chat template, ready for the answer."""
        raise CapabilityError(f"backend '{self.registry_name}' has no chat template")

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding,
                 on_done: OnDone | None = None) -> list[Generation]: ...

    def eos_ids(self) -> set[int]:
        """The ids that end an answer (EOS, end of turn)."""
        eos = getattr(self.tokenizer, "eos_token_id", None)
        return set() if eos is None else {eos}

    def session(self) -> Session:
        """A new ``Session`` of this model (nothing evaluated yet)."""
        raise CapabilityError(f"backend '{self.registry_name}' cannot follow another model's output token by "
                              "token (a dynamic prior's helper); use backend 'hf' or 'llamacpp' for the helper")

    def score(self, prompt_ids: Sequence[int], answer_ids: Sequence[int], top_k: int = 10) -> ScoreResult:
        """Teacher-force ``answer_ids`` after ``prompt_ids``: the ``token_stats`` of the full
        distributions ``answer_logprobs`` gives (backends with exact scoring); others override it
        or refuse."""
        import torch

        if not self.capabilities.exact_scoring:
            raise CapabilityError(f"backend '{self.registry_name}' cannot score answers (exact_scoring=False)")
        if not answer_ids:
            return ScoreResult([], [], [])
        logp = torch.cat([lp for _, _, lp in self.answer_logprobs([(prompt_ids, answer_ids)])])
        chosen, ranks, top = token_stats(logp, answer_ids, top_k)
        return ScoreResult(chosen.tolist(), ranks.tolist(), top.tolist())

    def answer_logprobs(self, items: Sequence[tuple[Sequence[int], Sequence[int]]], *, batch_size: int = 8,
                        chunk: int = 256) -> Iterator[tuple[int, int, Any]]:
        """Teacher-force each ``(prompt_ids, answer_ids)``: one forward pass per batch of items.

        Yields ``(item index, first answer position, log-probs)`` where log-probs is a float32
        tensor ``[n, vocab]`` over the next token at answer positions ``first .. first + n - 1``
        (0-based, position i predicts ``answer_ids[i]``). Chunks come in item order, each at most
        ``chunk`` positions, so two backends given the same items yield aligned chunks, and no more
        than one chunk of full-vocabulary log-probs needs to be alive at a time.
        """
        raise CapabilityError(f"backend '{self.registry_name}' cannot give full-vocabulary log-probs "
                              "(exact_scoring=False)")

    @abstractmethod
    def signature(self) -> dict:
        """Everything about this model that determines its outputs (ids, file hashes, dtype...)."""

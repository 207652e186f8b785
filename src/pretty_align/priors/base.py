"""Prior contract (SPEC §3): (example, task, target language) -> prior ids + provenance.

A prior is computed for a batch of examples against the *base* model that will receive it, because
``k`` counts base-model tokens and the ids must continue the base model's prompt (see
``boundary.answer_ids``). Strategies that produce text go through ``from_text``; strategies that
already have base-tokenizer ids (the same-tokenizer ``sft`` path) cut those directly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..boundary import Prompt, Tokenizer, answer_ids, cut_prior, prior_text
from ..errors import InputError
from ..languages import Language
from ..registry import keyword_params
from ..tasks.base import Example


@dataclass(frozen=True)
class PriorItem:
    """What a prior strategy sees of one example: the example and the base model's prompt."""

    example: Example
    prompt: Prompt


@dataclass
class PriorResult:
    ids: list[int]                 # base-model token ids, len <= k; [] means no prior
    text: str                      # for provenance/display only; the output is decoded from ids
    fell_back: bool = False        # the strategy found nothing and gave no (or a default) prior
    provenance: dict[str, Any] = field(default_factory=dict)
    # A step hook (``decoding.StepHook``) for this row's decoding, with ``finish(n_new) -> dict``
    # giving provenance once the row ends: priors that act during decoding (``dynamic``) set it.
    hook: Any = None


class Prior(ABC):
    """A prior strategy with its parameters. ``k`` = number of base-model tokens (paper: 1 or 2)."""

    registry_name = "?"
    needs_model = False        # the runner passes ``answerer``: the model named by the prior's ``model``
    needs_step_hook = False    # the base model's backend must call step hooks (its own decode loop)
    takes_k = True             # False: one condition, labelled by the strategy alone, built with k = 0

    def __init__(self, k: int = 1, **unknown: Any) -> None:
        """Subclasses take their own parameters and pass only the leftovers here, so a mistyped
        parameter fails loudly for every strategy, naming what the strategy accepts."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if unknown:
            name = sorted(unknown)[0]
            raise InputError(f"'{self.registry_name}' prior takes no parameter '{name}'; accepted: "
                             + (", ".join(self.accepted_params()) or "none"), field=f"priors.{name}")
        self.k = k

    @classmethod
    def accepted_params(cls) -> list[str]:
        """Keyword parameters of this strategy's constructors (``k`` aside)."""
        return sorted({name for c in cls.__mro__ if "__init__" in c.__dict__
                       for name in keyword_params(c.__dict__["__init__"], exclude=("self", "k"))})

    @abstractmethod
    def build(self, items: Sequence[PriorItem], tokenizer: Tokenizer) -> list[PriorResult]:
        """Priors for a batch of examples, in order, as ids of ``tokenizer`` (the base model's)."""

    def check_languages(self, pairs: Sequence[tuple[Language, Language]]) -> None:
        """Called by the runner once, with every (source, target) pair of the run, before any model
        is loaded; raise InputError for a pair this prior cannot serve. Default: serves all."""

    def signature(self, src: Language, tgt: Language) -> dict:
        """Strategy, k and every parameter that changes its output for ``src -> tgt``
        (file hashes, not paths)."""
        return {"strategy": self.registry_name, "k": self.k}

    def from_text(self, tokenizer: Tokenizer, prompt: Prompt, text: str | None,
                  provenance: dict[str, Any], *, fell_back: bool = False) -> PriorResult:
        """Cut ``text`` to the first k base tokens as they continue ``prompt``."""
        if not text or not text.strip() or self.k == 0:
            return PriorResult([], "", fell_back=fell_back or bool(self.k), provenance=provenance)
        ids = cut_prior(answer_ids(tokenizer, prompt, text), self.k)
        return PriorResult(ids, prior_text(tokenizer, prompt, ids), fell_back, provenance)

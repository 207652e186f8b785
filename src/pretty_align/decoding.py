"""Backend-independent decoding settings and stopping rules (stop strings, loop guard)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

from .boundary import Tokenizer


@dataclass(frozen=True)
class Decoding:
    """Greedy decoding settings. Part of every result's signature.

    ``max_new_tokens`` is a hard cap; the per-example budget is
    ``min(max_new_tokens, ceil(ratio * source_tokens) + slack)`` so a repetition loop on a short
    sentence cannot run to the cap.
    """

    max_new_tokens: int = 200
    length_ratio: float = 2.5
    length_slack: int = 16
    stop: tuple[str, ...] = ("\n",)
    loop_guard: bool = True
    loop_max_period: int = 16
    loop_min_repeats: int = 4
    batch_size: int = 8
    strategy: str = "greedy"

    def budget(self, source_tokens: int) -> int:
        return max(1, min(self.max_new_tokens, math.ceil(self.length_ratio * source_tokens) + self.length_slack))

    def signature(self) -> dict:
        sig = asdict(self)
        sig.pop("batch_size")  # batching must not change greedy outputs (tested), so not in the key
        return sig


@dataclass
class RowState:
    """One row's continuation and its stopping rule: the single place where every backend decides
    that a row ends, so a row stops at the same token whatever backend or batch it runs in.

    ``push`` appends a token and returns the stop reason ("eos", "stop", "loop", "length") or None.
    A stop string ends the row once it appears in the decoded continuation. Without a prior,
    leading whitespace is not content (a model may start its answer on a new line), so stops are
    looked for after it; with a prior, a newline right after the prior ends the row (an empty
    continuation is a real failure mode that must show in the results). On a loop, one copy of
    the repeated cycle is kept.
    """

    decoding: Decoding
    tokenizer: Tokenizer
    budget: int
    lead_ok: bool = True
    new: list[int] = field(default_factory=list)

    @classmethod
    def for_request(cls, decoding: Decoding, tokenizer: Tokenizer, budget: int | None,
                    has_prior: bool) -> "RowState":
        return cls(decoding, tokenizer, budget or decoding.max_new_tokens, lead_ok=not has_prior)

    def push(self, tok: int, eos: set[int]) -> str | None:
        if tok in eos:
            return "eos"
        self.new.append(tok)
        d = self.decoding
        if d.stop:
            text = self.tokenizer.decode(self.new, skip_special_tokens=True)
            if any(s in (text.lstrip() if self.lead_ok else text) for s in d.stop):
                return "stop"
        if d.loop_guard and loop_period(self.new, d.loop_max_period, d.loop_min_repeats):
            self.new = trim_loop(self.new, d.loop_max_period, d.loop_min_repeats)
            return "loop"
        return "length" if len(self.new) >= self.budget else None


def loop_period(ids: Sequence[int], max_period: int = 16, min_repeats: int = 4) -> int | None:
    """The period p if the last ``p * min_repeats`` ids are one p-gram repeated, else None."""
    n = len(ids)
    for p in range(1, max_period + 1):
        span = p * min_repeats
        if span > n:
            break
        tail = ids[n - span:]
        if all(tail[i] == tail[i - p] for i in range(p, span)):
            return p
    return None


def trim_loop(ids: list[int], max_period: int, min_repeats: int) -> list[int]:
    """Keep one copy of a detected repetition loop at the end of ``ids``."""
    p = loop_period(ids, max_period, min_repeats)
    if p is None:
        return ids
    return ids[: len(ids) - p * (min_repeats - 1)]

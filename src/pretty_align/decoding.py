"""Backend-independent decoding settings and stopping rules (stop strings, loop guard)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence

from .boundary import Tokenizer


# The loop guard's defaults, chosen on gold data (benchmarks/loop_guard.py --check-gold replays every
# gold POS answer and FLORES devtest reference, with the budget each would get, through the rule on
# the real gemma tokenizer). Legitimate repetition is common in POS answers ("NOUN NOUN NOUN NOUN",
# "PROPN PUNCT" x 18 in a list of names) and indistinguishable from a loop by content alone, so a
# loop must also be long (LOOP_MIN_SPAN tokens) and come late (past LOOP_AFTER of the row's budget,
# where a correct answer has usually ended).
LOOP_MIN_SPAN = 32
LOOP_AFTER = 0.5


@dataclass(frozen=True)
class Decoding:
    """Greedy decoding settings. Part of every result's signature.

    ``max_new_tokens`` is a hard cap; the per-example budget is
    ``min(max_new_tokens, ceil(ratio * source_tokens) + slack)`` so a repetition loop on a short
    sentence cannot run to the cap. The loop guard (``find_loop``) stops a row whose tail is a
    cycle of at most ``loop_max_period`` tokens repeated ``loop_min_repeats`` times over at least
    ``loop_min_span`` tokens, once the row is past ``loop_after`` of its budget.
    """

    max_new_tokens: int = 200
    length_ratio: float = 2.5
    length_slack: int = 16
    stop: tuple[str, ...] = ("\n",)
    loop_guard: bool = True
    loop_max_period: int = 16
    loop_min_repeats: int = 4
    loop_min_span: int = LOOP_MIN_SPAN
    loop_after: float = LOOP_AFTER
    batch_size: int = 8
    strategy: str = "greedy"

    def budget(self, source_tokens: int) -> int:
        return max(1, min(self.max_new_tokens, math.ceil(self.length_ratio * source_tokens) + self.length_slack))

    def signature(self) -> dict:
        sig = asdict(self)
        sig.pop("batch_size")  # batching must not change greedy outputs (tested), so not in the key
        return sig


class StepHook(Protocol):
    """Chooses one row's next token at every decode step, in place of the greedy pick (the
    ``dynamic`` prior's intervention point). ``logits`` is the row's next-token distribution over
    the whole vocabulary (a float32 numpy array, unnormalised) and ``new`` the tokens the row has
    produced so far; the returned id goes through ``RowState.push`` like a greedy one, so the
    stopping rules are unchanged. A hook sees one row only, so a batch-invariant backend stays
    batch invariant with hooks."""

    def pick(self, logits: Any, new: Sequence[int]) -> int: ...


@dataclass
class RowState:
    """One row's continuation and its stopping rule: the single place where every backend decides
    that a row ends, so a row stops at the same token whatever backend or batch it runs in.

    ``push`` appends a token and returns the stop reason ("eos", "stop", "loop", "length") or None.
    A stop string ends the row once it appears in the decoded continuation. Without a prior,
    leading whitespace is not content (a model may start its answer on a new line), so stops are
    looked for after it; with a prior, a newline right after the prior ends the row (an empty
    continuation is a real failure mode that must show in the results). On a loop, one copy of
    the repeated cycle is kept (see ``find_loop`` for what counts as a loop).
    """

    decoding: Decoding
    tokenizer: Tokenizer
    budget: int
    lead_ok: bool = True
    new: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.loop_from = math.ceil(self.decoding.loop_after * self.budget)   # the guard's first position

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
        loop = (d.loop_guard and len(self.new) >= self.loop_from
                and find_loop(self.new, d.loop_max_period, d.loop_min_repeats, d.loop_min_span))
        if loop:
            del self.new[loop_start(self.new, *loop) + loop[0]:]   # keep one copy of the cycle
            return "loop"
        return "length" if len(self.new) >= self.budget else None


def find_loop(ids: Sequence[int], max_period: int = 16, min_repeats: int = 4,
              min_span: int = LOOP_MIN_SPAN) -> tuple[int, int] | None:
    """``(period, span)`` if the last ``span`` ids are one ``period``-gram repeated, at least
    ``min_repeats`` times and over at least ``min_span`` ids; else None (the shortest period wins).

    Both bounds must hold, so legitimate repetition survives: four equal tags or digits
    ("NOUN NOUN NOUN NOUN", "10000" in a digit-splitting tokenizer, "ha ha ha ha") cover a few
    tokens, while a degenerate loop keeps going until it covers ``min_span``.
    """
    n = len(ids)
    for p in range(1, min(max_period, n) + 1):
        span = p * max(min_repeats, -(-min_span // p))
        if span > n or ids[-1] != ids[-1 - p]:   # the last id settles most periods at once
            continue
        tail = ids[n - span:]
        if all(tail[i] == tail[i - p] for i in range(p, span)):
            return p, span
    return None


def loop_start(ids: Sequence[int], period: int, span: int) -> int:
    """Where the loop that ``find_loop`` found at the end of ``ids`` begins: its span, extended
    back for as long as the ids keep the period (a loop may have started before the guard acts)."""
    start = len(ids) - span
    while start > 0 and ids[start - 1] == ids[start - 1 + period]:
        start -= 1
    return start

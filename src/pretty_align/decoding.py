"""Backend-independent decoding settings and stopping rules (stop strings, loop guard)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
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
class StopState:
    """Per-row stopping rule shared by all backends.

    A stop string ends the row once it appears in the decoded continuation. Without a prior,
    leading whitespace is not content (a model may start its answer on a new line), so stops are
    looked for after it; with a prior, a newline right after the prior ends the row (an empty
    continuation is a real failure mode that must show in the results).
    """

    stops: tuple[str, ...]
    tokenizer: Tokenizer
    loop_guard: bool = True
    loop_max_period: int = 16
    loop_min_repeats: int = 4
    lead_ok: bool = True

    def check(self, new_ids: Sequence[int]) -> str | None:
        """Return the stop reason for a row's continuation so far, or None to go on."""
        if self.stops and new_ids:
            text = self.tokenizer.decode(list(new_ids), skip_special_tokens=True)
            if self.lead_ok:
                text = text.lstrip()
            if any(s in text for s in self.stops):
                return "stop"
        if self.loop_guard and loop_period(new_ids, self.loop_max_period, self.loop_min_repeats):
            return "loop"
        return None

    @classmethod
    def for_request(cls, decoding: "Decoding", tokenizer: Tokenizer, has_prior: bool) -> "StopState":
        return cls(decoding.stop, tokenizer, decoding.loop_guard, decoding.loop_max_period,
                   decoding.loop_min_repeats, lead_ok=not has_prior)


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

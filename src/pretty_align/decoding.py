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
    loop_max_period: int = 8
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
    """Per-row stopping state shared by all backends."""

    stops: tuple[str, ...]
    tokenizer: Tokenizer
    loop_guard: bool = True
    loop_max_period: int = 8
    loop_min_repeats: int = 4
    _tail: int = field(init=False)

    def __post_init__(self) -> None:
        # A stop of L characters spans at most L tokens (+ a few byte-fallback pieces).
        self._tail = max((len(s) for s in self.stops), default=0) + 3

    def check(self, new_ids: Sequence[int]) -> str | None:
        """Return the stop reason for a row's continuation so far, or None to go on."""
        if self.stops and new_ids:
            tail = self.tokenizer.decode(list(new_ids[-self._tail:]), skip_special_tokens=True)
            if any(s in tail for s in self.stops):
                return "stop"
        if self.loop_guard and loop_period(new_ids, self.loop_max_period, self.loop_min_repeats):
            return "loop"
        return None


def loop_period(ids: Sequence[int], max_period: int = 8, min_repeats: int = 4) -> int | None:
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

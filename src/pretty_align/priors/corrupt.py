"""Corrupted priors: the prior-quality curve (issue 13.2, the paper's open question 2).

``CorruptedPrior`` wraps any prior strategy: with probability ``p`` an example's prior is replaced
by a random word of the target language with the same number of base-model tokens. The words come
from the references of the run's *other* examples of that language (never the example's own, so
a corrupted prior carries no gold), split at spaces; for scripts written without spaces, runs of
characters between punctuation, cut to the prior's token length.

Each example draws one number ``u`` from ``seeded_rng(seed, example id | target)`` and is corrupted
when ``u < p``: the choice is stable across runs and resumes, and for one seed the corrupted
examples at p = 0.25 are a subset of those at p = 0.5 (a sweep over p is a nested family). The
provenance records whether the prior was replaced, the original ids and text, and the word.
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable, Sequence

from ..boundary import Tokenizer, answer_ids, prior_text
from ..errors import InputError
from ..languages import Language
from .ablation import seeded_rng
from .base import Prior, PriorItem, PriorResult

MAX_TRIES = 200   # candidate words tried for an exact token length before cutting a longer one


def words_of(texts: Sequence[str], tgt: Language) -> list[str]:
    """Distinct words of ``texts`` in first-seen order: space-separated, or (scripts written
    without spaces) runs between punctuation; punctuation-only tokens dropped."""
    seen: dict[str, None] = {}
    for text in texts:
        if not tgt.spaced:   # runs between punctuation: cut to the prior's length later
            units = re.split(r"[\s\W]+", text)
        else:
            units = text.split()
        for unit in units:
            word = unit.strip(".,;:!?\"'()[]«»“”„‘’。、，！？「」")
            if word and any(ch.isalnum() for ch in word):
                seen.setdefault(word, None)
    return list(seen)


class CorruptedPrior(Prior):
    """``inner``'s priors, each replaced with probability ``p`` (see the module docstring).
    ``pool(tgt)`` gives the reference texts of the run's examples of ``tgt``."""

    registry_name = "corrupt"

    def __init__(self, inner: Prior, p: float, *, seed: int = 0,
                 pool: Callable[[Language], Sequence[tuple[str, str]]]) -> None:
        if not 0.0 <= p <= 1.0:
            raise InputError(f"corrupt must be a probability in [0, 1], got {p}", field="priors.corrupt")
        super().__init__(k=inner.k)
        self.inner, self.p, self.seed, self._pool = inner, float(p), int(seed), pool
        self._cache: dict[str, list[tuple[str, list[str]]]] = {}
        self._pool_hashes: dict[str, str] = {}
        self.needs_model, self.needs_step_hook = inner.needs_model, inner.needs_step_hook

    def check_languages(self, pairs: Sequence[tuple[Language, Language]]) -> None:
        self.inner.check_languages(pairs)

    def signature(self, src: Language, tgt: Language) -> dict:
        """The inner prior's signature, ``p`` and the seed, and (for ``p > 0``) a hash of the word
        pool: the replacement drawn for an example depends on every reference of the run's examples
        of ``tgt``, so another ``task.n``, offset or data file must not share these keys."""
        sig = {**self.inner.signature(src, tgt), "corrupt": self.p, "corrupt_seed": self.seed}
        if self.p > 0:
            sig["corrupt_pool_sha256"] = self._pool_hash(tgt)
        return sig

    def _pool_hash(self, tgt: Language) -> str:
        """sha256 (16 hex digits) over the pool's (example id, reference) pairs, in pool order."""
        if tgt.code not in self._pool_hashes:
            h = hashlib.sha256()
            for ex_id, ref in self._pool(tgt):
                h.update(ex_id.encode("utf-8") + b"\0" + (ref or "").encode("utf-8") + b"\0")
            self._pool_hashes[tgt.code] = h.hexdigest()[:16]
        return self._pool_hashes[tgt.code]

    def build(self, items: Sequence[PriorItem], tokenizer: Tokenizer) -> list[PriorResult]:
        built = self.inner.build(items, tokenizer)
        return [self._maybe_replace(it, res, tokenizer) for it, res in zip(items, built)]

    def _words(self, tgt: Language) -> list[tuple[str, list[str]]]:
        """(example id, words of its reference) for every example of ``tgt``, computed once."""
        if tgt.code not in self._cache:
            self._cache[tgt.code] = [(ex_id, words_of([ref], tgt)) for ex_id, ref in self._pool(tgt) if ref]
        return self._cache[tgt.code]

    @staticmethod
    def _same_length(candidates: list[str], n: int, tokenizer: Tokenizer, item: PriorItem) -> tuple[str, list[int]]:
        """The first candidate of exactly ``n`` base tokens (as the answer's start); failing that
        within ``MAX_TRIES``, the first longer one cut to ``n``; failing that, the first one."""
        longer: tuple[str, list[int]] | None = None
        for cand in candidates[:MAX_TRIES]:
            ids = answer_ids(tokenizer, item.prompt, cand)
            if len(ids) == n:
                return cand, ids
            if longer is None and len(ids) > n:
                longer = (cand, ids[:n])
        return longer or (candidates[0], answer_ids(tokenizer, item.prompt, candidates[0]))

    def _maybe_replace(self, item: PriorItem, res: PriorResult, tokenizer: Tokenizer) -> PriorResult:
        ex = item.example
        rng = seeded_rng(self.seed, f"{ex.id}|{ex.tgt.code}")
        u = rng.random()
        info = {"p": self.p, "seed": self.seed, "replaced": False}
        if not res.ids or u >= self.p:   # nothing to corrupt (no prior, or a decoding-time prior)
            return PriorResult(res.ids, res.text, res.fell_back, {**res.provenance, "corrupt": info}, res.hook)
        own = set(words_of([ex.reference or ""], ex.tgt))
        candidates = [w for ref_id, words in self._words(ex.tgt) if ref_id != ex.id for w in words if w not in own]
        if not candidates:
            raise InputError(f"corrupt: no words of {ex.tgt.code} to draw from (the run's other examples have no "
                             "references)", field="priors.corrupt")
        rng.shuffle(candidates)
        word, ids = self._same_length(candidates, len(res.ids), tokenizer, item)
        info.update(replaced=True, word=word, original_ids=list(res.ids), original_text=res.text)
        return PriorResult(list(ids), prior_text(tokenizer, item.prompt, ids), res.fell_back,
                           {**res.provenance, "corrupt": info})

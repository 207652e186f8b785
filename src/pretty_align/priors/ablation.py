"""Ablation and upper-bound priors (paper §5.2, SPEC §3): ``gold``, ``random``, ``function-word``.

Every choice that looks random is seeded from a stable hash of (seed, example id), never from
Python's salted ``hash`` or global state, so a rerun (or a resumed run) gives identical priors.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Sequence

from ..boundary import Tokenizer
from ..errors import InputError
from ..languages import Language
from . import PRIORS
from .base import Prior, PriorItem, PriorResult
from .dictionary import DictionarySpec
from .pseudo import DictionaryPrior

# ~5 frequent stand-alone function words per language (ISO 639-1), most frequent first.
FUNCTION_WORDS: dict[str, list[str]] = {
    "en": ["the", "of", "and", "to", "in"],
    "de": ["die", "der", "und", "in", "den"],
    "fr": ["de", "la", "le", "et", "les"],
    "es": ["de", "la", "que", "el", "en"],
    "it": ["di", "e", "il", "la", "che"],
    "pt": ["de", "a", "o", "que", "e"],
    "nl": ["de", "en", "van", "het", "een"],
    "ru": ["и", "в", "не", "на", "что"],
    "zh": ["的", "是", "在", "了", "和"],
    "ja": ["の", "に", "は", "を", "た"],
    "vi": ["của", "và", "các", "là", "có"],
    "sw": ["na", "ya", "wa", "kwa", "za"],
    "id": ["yang", "dan", "di", "ini", "itu"],
    "th": ["ที่", "และ", "ใน", "ของ", "การ"],
    "ko": ["이", "그", "그리고", "및", "또한"],
    "ar": ["في", "من", "على", "إلى", "أن"],
    "hi": ["के", "में", "की", "है", "और"],
}


def seeded_rng(seed: int, example_id: str) -> random.Random:
    """A generator that depends only on (seed, example id): stable across processes and runs."""
    digest = hashlib.sha256(f"{seed}\x00{example_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@PRIORS.register("gold")
class GoldPrior(Prior):
    """First k base tokens of the reference: an upper bound for analysis, never a real setting.
    ``fell_back`` (and no prior) when the example has no reference."""

    def __init__(self, k: int = 1, **unknown: Any) -> None:
        super().__init__(k=k, **unknown)

    def build(self, items: Sequence[PriorItem], tokenizer: Tokenizer) -> list[PriorResult]:
        return [self.from_text(tokenizer, it.prompt, it.example.reference,
                               {"strategy": "gold", "has_reference": bool(it.example.reference)},
                               fell_back=not it.example.reference)
                for it in items]


@PRIORS.register("random")
class RandomPrior(DictionaryPrior):
    """A random target-script word from the dictionary (non-identity targets only), chosen per
    example with ``seeded_rng(seed, example.id)``. Params: ``dictionary`` (as for ``pseudo``),
    ``seed``, ``strict``."""

    def __init__(self, k: int = 1, *, dictionary: DictionarySpec | None = None, seed: int = 0,
                 strict: bool = False, **unknown: Any) -> None:
        super().__init__(k=k, **unknown)
        self.dictionary, self.seed, self.strict = dictionary, int(seed), strict

    def build(self, items: Sequence[PriorItem], tokenizer: Tokenizer) -> list[PriorResult]:
        out = []
        for it in items:
            ex = it.example
            d = self.dictionary_for(ex.src, ex.tgt)
            pool = d.all_targets(ex.tgt.script)
            word = seeded_rng(self.seed, ex.id).choice(pool) if pool else None
            prov = {"strategy": "random", "target_word": word, "pool_size": len(pool),
                    "seed": self.seed, "dictionary_sha256": d.sha256}
            out.append(self.from_text(tokenizer, it.prompt, word, prov, fell_back=word is None))
        return out

    def signature(self, src: Language, tgt: Language) -> dict:
        d = self.dictionary_for(src, tgt)
        return {"strategy": "random", "k": self.k, "dictionary_sha256": d.sha256, "seed": self.seed}


@PRIORS.register("function-word")
class FunctionWordPrior(Prior):
    """A frequent function word of the target language (``FUNCTION_WORDS[tgt.iso1]``).
    ``choice="first"``: the most frequent one for every example; ``"random"``: one of the list,
    chosen with ``seeded_rng(seed, example.id)``."""

    def __init__(self, k: int = 1, *, choice: str = "first", seed: int = 0, **unknown: Any) -> None:
        super().__init__(k=k, **unknown)
        if choice not in ("first", "random"):
            raise InputError(f"unknown choice '{choice}'; expected 'first' or 'random'",
                             field="priors.choice")
        self.choice, self.seed = choice, int(seed)

    @staticmethod
    def words(tgt: Language) -> list[str]:
        """The word list for ``tgt``; an unsupported language lists the supported codes."""
        try:
            return FUNCTION_WORDS[tgt.iso1]
        except KeyError:
            raise InputError(f"the function-word prior has no word list for {tgt.code}; supported "
                             "ISO 639-1 codes: " + ", ".join(sorted(FUNCTION_WORDS)),
                             field="priors.strategy") from None

    def build(self, items: Sequence[PriorItem], tokenizer: Tokenizer) -> list[PriorResult]:
        out = []
        for it in items:
            words = self.words(it.example.tgt)
            word = words[0] if self.choice == "first" else seeded_rng(self.seed, it.example.id).choice(words)
            prov = {"strategy": "function-word", "target_word": word, "choice": self.choice}
            out.append(self.from_text(tokenizer, it.prompt, word, prov))
        return out

    def signature(self, src: Language, tgt: Language) -> dict:
        sig = {"strategy": "function-word", "k": self.k, "choice": self.choice, "words": self.words(tgt)}
        if self.choice == "random":
            sig["seed"] = self.seed
        return sig

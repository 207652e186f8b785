"""The summarization ``pseudo`` prior (strategy ``pseudo`` in a summarization config, registered as
``summarization-pseudo``): the first content word of the article's lead, translated with the
bilingual dictionary when the summary's language differs from the article's (CrossSum), taken as
it is when they are the same (XL-Sum, monolingual: the dictionary translation of a word into its
own language is the word).

"Content word" = not a stop word. Cross-lingually the stop words are the source-language list of
``PseudoPrior`` (built-in English by default). Monolingually there is usually no list for the
language (Vietnamese, Thai, Indonesian...), so by default the stop words are the words that occur
in at least ``max_df`` of the language's articles of the task, and in two at least (document
frequency, computed from the articles only, never the reference summaries); ``stopwords`` (a file, ``{tgt_iso1}`` allowed)
replaces that. Scripts written without spaces (Thai) give long "words": the prior is cut to k
tokens anyway.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import Any, Sequence

from ..boundary import Tokenizer
from ..errors import InputError
from ..languages import Language
from . import PRIORS
from .base import PriorItem, PriorResult
from .pseudo import WORD_RE, PseudoPrior, _stopwords

# The lead: the article up to its first sentence end or newline. Latin and Devanagari marks end a
# sentence before whitespace ("3.5" does not); CJK full-width marks end it wherever they are.
_LEAD_END = re.compile(r"(?<=[.!?\u0964])\s|(?<=[\u3002\uff01\uff1f])|\n")
MAX_LEAD_CHARS = 400


def lead(article: str) -> str:
    """The article's first sentence (at most ``MAX_LEAD_CHARS`` characters)."""
    text = article.strip()
    m = _LEAD_END.search(text)
    return (text[:m.start()] if m else text)[:MAX_LEAD_CHARS]


@PRIORS.register("summarization-pseudo")
class SummarizationPseudoPrior(PseudoPrior):
    """Params: those of ``pseudo`` plus ``max_df`` (document-frequency threshold of the
    monolingual stop words). Invariant: the prior of an article depends on that article and, in the
    monolingual case, on the task's articles of its language (their document frequencies)."""

    def __init__(self, k: int = 1, *, task=None, max_df: float = 0.3, **params: Any) -> None:
        if task is None or getattr(task, "registry_name", None) != "summarization":
            raise InputError("the summarization-pseudo prior works with the summarization task only",
                             field="priors.strategy")
        if not 0 < max_df <= 1:
            raise InputError(f"max_df must be in (0, 1], got {max_df}", field="priors.params.max_df")
        super().__init__(k=k, **params)
        self.task, self.max_df = task, max_df
        self._df_stop: dict[str, frozenset[str]] = {}

    def _monolingual_stopwords(self, tgt: Language) -> frozenset[str]:
        """Words in at least ``max_df`` (and two) of the task's articles in ``tgt``, or the given list."""
        if self.stopwords_path is not None:
            return _stopwords(self.stopwords_path.format(tgt=tgt.code, tgt_iso1=tgt.iso1))[0]
        if tgt.code not in self._df_stop:
            docs = [{m.group().lower() for m in WORD_RE.finditer(ex.source)} for ex in self.task.examples(tgt)]
            df = Counter(w for d in docs for w in d)
            self._df_stop[tgt.code] = frozenset(w for w, c in df.items() if c >= max(2.0, self.max_df * len(docs)))
        return self._df_stop[tgt.code]

    def find_monolingual(self, text: str, tgt: Language) -> tuple[dict[str, Any], str | None]:
        stop = self._monolingual_stopwords(tgt)
        prov: dict[str, Any] = {"strategy": "summarization-pseudo", "source_word": None, "target_word": None,
                                "word_index": None, "candidates_tried": 0, "monolingual": True}
        for i, m in enumerate(WORD_RE.finditer(text)):
            prov["candidates_tried"] += 1
            if m.group().lower() not in stop:
                prov.update(source_word=m.group(), target_word=m.group(), word_index=i)
                return prov, m.group()
        return prov, None

    def build(self, items: Sequence[PriorItem], tokenizer: Tokenizer) -> list[PriorResult]:
        out = []
        for item in items:
            ex = item.example
            text = lead(ex.source)
            prov, word = (self.find_monolingual(text, ex.tgt) if ex.src.code == ex.tgt.code
                          else self.find(text, ex.src, ex.tgt))
            prov["lead"] = text[:120]
            out.append(self.from_text(tokenizer, item.prompt, word, prov, fell_back=word is None))
        return out

    def signature(self, src: Language, tgt: Language) -> dict:
        if src.code != tgt.code:
            return {**super().signature(src, tgt), "strategy": "summarization-pseudo"}
        if self.stopwords_path is not None:
            stop = {"stopwords_sha256": _stopwords(self.stopwords_path.format(tgt=tgt.code, tgt_iso1=tgt.iso1))[1]}
        else:   # the derived list itself, so a change of articles or threshold changes the key
            words = "\n".join(sorted(self._monolingual_stopwords(tgt)))
            stop = {"max_df": self.max_df, "df_stopwords_sha256": hashlib.sha256(words.encode()).hexdigest()[:16]}
        return {"strategy": "summarization-pseudo", "k": self.k, "monolingual": True, **stop}

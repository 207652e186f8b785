"""ROUGE-1/2/L for any script (summarization, SPEC §4).

Google's ``rouge-score`` computes the n-gram and LCS statistics, but its default tokenizer keeps
only ``[a-z0-9]``: Chinese, Japanese, Thai, Tamil, Russian... become empty strings and every such
summary silently scores 0. We give it ``MultilingualTokenizer`` instead:

* text is NFKC-normalized and case-folded;
* scripts written without spaces between words (Han, kana, Thai, Lao, Khmer, Myanmar) are split
  into grapheme clusters (a Thai vowel sign stays with its consonant);
* everything else is split into runs of letters, combining marks and digits (``\\p{L}\\p{M}\\p{N}``),
  so Cyrillic, Devanagari or Tamil words (whose vowel signs are combining marks) stay whole;
* no stemming (Porter stemming is English-only).

Aggregation: the mean over summaries of the per-summary F-measure, x100 (the convention of the
ROUGE literature and of XL-Sum/CrossSum), so unlike BLEU this is an average of sentence scores.
"""

from __future__ import annotations

import unicodedata
from importlib import metadata

from ..errors import MissingDependencyError
from ..languages import Language
from . import METRICS
from .base import Metric, Score

TOKENIZER_VERSION = "multi-v1"
_NO_SPACE_SCRIPTS = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"


class MultilingualTokenizer:
    """The ``tokenize(text) -> list[str]`` interface ``rouge_score`` expects."""

    def __init__(self) -> None:
        import regex

        self._pattern = regex.compile(rf"(?=[{_NO_SPACE_SCRIPTS}])\X|[\p{{L}}\p{{M}}\p{{N}}]+")
        self._nospace = regex.compile(rf"[{_NO_SPACE_SCRIPTS}]")

    def tokenize(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFKC", text).casefold()
        out = []
        for tok in self._pattern.findall(text):
            # A letter run that contains a no-space-script character (e.g. "abc中") is split further.
            if len(tok) > 1 and self._nospace.search(tok):
                out += [t for t in self._split_mixed(tok) if t]
            else:
                out.append(tok)
        return out

    def _split_mixed(self, tok: str) -> list[str]:
        import regex

        return regex.findall(rf"(?=[{_NO_SPACE_SCRIPTS}])\X|[^{_NO_SPACE_SCRIPTS}]+", tok)


class Rouge(Metric):
    """One ROUGE variant (``rouge1``, ``rouge2`` or ``rougeL``) with the multilingual tokenizer."""

    def __init__(self, variant: str = "rouge1") -> None:
        if variant not in {"rouge1", "rouge2", "rougeL"}:
            raise ValueError(f"unknown ROUGE variant {variant!r}; expected rouge1, rouge2 or rougeL")
        try:
            from rouge_score import rouge_scorer
        except ImportError:
            raise MissingDependencyError("ROUGE", "rouge-score") from None
        self.variant = variant
        self.name = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}[variant]
        self.tokenizer = MultilingualTokenizer()
        self._scorer = rouge_scorer.RougeScorer([variant], use_stemmer=False, tokenizer=self.tokenizer)

    def sentence_f(self, hyp: str, ref: str) -> float:
        return self._scorer.score(ref, hyp)[self.variant].fmeasure

    def corpus_score(self, hyps: list[str], refs: list[str], tgt: Language, *,
                     sources: list[str] | None = None) -> Score:
        self.check_args(hyps, refs, sources=sources)
        per = [self.sentence_f(h, r) for h, r in zip(hyps, refs)]
        return Score(self.name, 100 * sum(per) / len(per), self.signature(tgt), {"per_example": per})

    def signature(self, tgt: Language) -> str:
        try:
            version = metadata.version("rouge-score")
        except metadata.PackageNotFoundError:  # pragma: no cover
            version = "?"
        return f"{self.variant}|tok:{TOKENIZER_VERSION}|nfkc|casefold|stem:no|agg:mean-f|rouge-score:{version}"


@METRICS.register("rouge1")
class Rouge1(Rouge):
    def __init__(self) -> None:
        super().__init__("rouge1")


@METRICS.register("rouge2")
class Rouge2(Rouge):
    def __init__(self) -> None:
        super().__init__("rouge2")


@METRICS.register("rougeL")
class RougeL(Rouge):
    def __init__(self) -> None:
        super().__init__("rougeL")

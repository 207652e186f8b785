"""POS tagging token accuracy (SPEC §4): the answer is aligned to the gold words
(``tasks.conll.parse_tags``); missing, extra, garbled and non-UPOS tags count as wrong."""

from __future__ import annotations

from collections import Counter

from ..languages import Language
from ..tasks.conll import parse_tags
from . import METRICS
from .base import Metric, Score


def gold_from_reference(ref: str) -> tuple[list[str], list[str], str]:
    """(words, tags, format) of a reference written by the POS task: ``w/TAG ...`` or ``TAG ...``."""
    items = ref.split()
    if items and all("/" in it for it in items):
        words, tags = zip(*(it.rsplit("/", 1) for it in items))
        return list(words), list(tags), "word/tag"
    return [str(i) for i in range(len(items))], items, "tags"


@METRICS.register("pos-accuracy")
class POSAccuracy(Metric):
    name = "accuracy"

    def corpus_score(self, hyps: list[str], refs: list[str], tgt: Language, *,
                     sources: list[str] | None = None) -> Score:
        self.check_args(hyps, refs, sources=sources)
        correct = total = 0
        counts: Counter = Counter()
        confusion: Counter = Counter()   # (gold, predicted or "-") -> n
        for hyp, ref in zip(hyps, refs):
            words, tags, fmt = gold_from_reference(ref)
            parsed = parse_tags(hyp, words, fmt=fmt)
            for gold, pred in zip(tags, parsed.tags):
                confusion[(gold, pred or "-")] += 1
                correct += gold == pred
            total += len(tags)
            counts.update(missing=parsed.missing, extra=parsed.extra, invalid=parsed.invalid, garbled=parsed.garbled)
        return Score(self.name, 100 * correct / max(total, 1), self.signature(tgt),
                     {"tokens": total, **counts, "confusion": {f"{g}>{p}": n for (g, p), n in sorted(confusion.items())}})

    def signature(self, tgt: Language) -> str:
        return "pos-accuracy|upos17|align:difflib-words|missing=wrong|invalid=wrong"

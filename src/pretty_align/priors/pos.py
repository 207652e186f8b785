"""POS-tagging priors (SPEC §3): the expected answer (``word/TAG ...`` or ``TAG ...``) predicted
without a large model, cut to the first k base-model tokens like every other prior.

* ``pos-pseudo`` (strategy ``pseudo`` in a POS config): a word -> most frequent UPOS lexicon built
  from another split of the language's XGLUE treebank (``lexicon_split``, default ``dev``); unknown
  words get the lexicon's most frequent tag (recorded as a fallback per word).
* ``pos-refined`` (strategy ``refined``): an averaged-perceptron tagger (NLTK's, trained here on that
  other split; ``iterations``), i.e. the paper's "small task model".

The split used to build them must differ from the evaluation file; the runner picks ``pos-<name>``
over ``<name>`` when the task is ``pos``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Sequence

from ..boundary import Tokenizer
from ..errors import InputError, MissingDependencyError
from ..languages import Language
from ..models import file_sha256
from ..tasks.conll import TaggedSentence, read_conllu
from ..tasks.pos import display_word, treebank_path
from . import PRIORS
from .base import Prior, PriorItem, PriorResult


class _POSPrior(Prior):
    def __init__(self, k: int = 1, *, task=None, lexicon_split: str = "dev", **params: Any) -> None:
        if task is None or getattr(task, "registry_name", None) != "pos":
            raise InputError(f"the {self.registry_name} prior works with the pos task only", field="priors.strategy")
        super().__init__(k=k, **params)
        self.task, self.lexicon_split = task, lexicon_split
        self._models: dict[str, Any] = {}
        self._files: dict[str, Path] = {}

    def _training_file(self, tgt: Language) -> Path:
        """The treebank file the lexicon/tagger of ``tgt`` is trained on (checked once per language)."""
        if tgt.code not in self._files:
            self._files[tgt.code] = self._find_training_file(tgt)
        return self._files[tgt.code]

    def _find_training_file(self, tgt: Language) -> Path:
        path = treebank_path(self.task.data, tgt, "xglue", self.lexicon_split)
        evaluated = treebank_path(self.task.data, tgt, self.task.treebank, self.task.split)
        if path.resolve() == evaluated.resolve():
            raise InputError(f"the {self.registry_name} prior would be built from the evaluation file itself "
                             f"({path.name}); set params.lexicon_split to another split", field="priors.params")
        return path

    def _model(self, tgt: Language):
        if tgt.code not in self._models:
            self._models[tgt.code] = self.train(read_conllu(self._training_file(tgt)))
        return self._models[tgt.code]

    def train(self, sentences: list[TaggedSentence]) -> Any:
        raise NotImplementedError

    def predict(self, model: Any, words: list[str]) -> tuple[list[str], int]:
        """(tags, number of words the model had not seen)."""
        raise NotImplementedError

    def build(self, items: Sequence[PriorItem], tokenizer: Tokenizer) -> list[PriorResult]:
        out = []
        for item in items:
            ex = item.example
            words = ex.meta["words"]
            tags, unknown = self.predict(self._model(ex.tgt), words)
            text = " ".join(tags) if self.task.answer_format == "tags" else \
                " ".join(f"{w}/{t}" for w, t in zip(words, tags))
            prov = {"strategy": self.registry_name, "predicted": text[:300], "unknown_words": unknown,
                    "trained_on": self._training_file(ex.tgt).name}
            out.append(self.from_text(tokenizer, item.prompt, text, prov, fell_back=bool(words) and unknown == len(words)))
        return out

    def signature(self, src: Language, tgt: Language) -> dict:
        path = self._training_file(tgt)
        digest = file_sha256(path) if path.is_file() else None   # cached by path, size and mtime
        return {"strategy": self.registry_name, "k": self.k, "trained_on_sha256": digest, **self._extra_signature()}

    def _extra_signature(self) -> dict:
        return {}


@PRIORS.register("pos-pseudo")
class POSLexiconPrior(_POSPrior):
    def train(self, sentences: list[TaggedSentence]) -> tuple[dict[str, str], str]:
        counts: dict[str, Counter] = defaultdict(Counter)
        overall: Counter = Counter()
        for s in sentences:
            for w, t in zip(s.words, s.tags):
                counts[display_word(w).lower()][t] += 1
                overall[t] += 1
        # ties broken by tag name, so the lexicon does not depend on dict order
        lexicon = {w: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for w, c in counts.items()}
        return lexicon, overall.most_common(1)[0][0] if overall else "NOUN"

    def predict(self, model, words: list[str]) -> tuple[list[str], int]:
        lexicon, default = model
        tags = [lexicon.get(w.lower()) for w in words]
        return [t or default for t in tags], sum(t is None for t in tags)


@PRIORS.register("pos-refined")
class POSTaggerPrior(_POSPrior):
    def __init__(self, k: int = 1, *, iterations: int = 5, **params: Any) -> None:
        self.iterations = iterations
        super().__init__(k=k, **params)

    def train(self, sentences: list[TaggedSentence]):
        try:
            from nltk.tag.perceptron import PerceptronTagger
        except ImportError:
            raise MissingDependencyError("the refined POS prior (averaged perceptron)", "nltk") from None
        import random

        tagger = PerceptronTagger(load=False)
        state = random.getstate()
        random.seed(0)   # NLTK shuffles the sentences between iterations with the global RNG
        try:
            tagger.train([[(display_word(w), t) for w, t in zip(s.words, s.tags)] for s in sentences],
                         nr_iter=self.iterations)
        finally:
            random.setstate(state)
        return tagger, {display_word(w) for s in sentences for w in s.words}

    def predict(self, model, words: list[str]) -> tuple[list[str], int]:
        tagger, seen = model
        return [t for _, t in tagger.tag(words)], sum(w not in seen for w in words)

    def _extra_signature(self) -> dict:
        return {"tagger": "nltk-averaged-perceptron", "iterations": self.iterations}

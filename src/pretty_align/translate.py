"""One-off PRETTY translation: ``translate(backend, texts, tgt, prior=...)``."""

from __future__ import annotations

from typing import Sequence

from .backends import Backend
from .decoding import Decoding
from .experiment.answerer import Answer, Answerer
from .languages import get_language
from .priors import Prior, PriorItem
from .tasks.translation import DEFAULT_TEMPLATE, TranslationTask


def translate(backend: Backend, texts: Sequence[str], tgt: str, *, src: str = "eng_Latn",
              prior: Prior | None = None, decoding: Decoding | None = None,
              template: str = DEFAULT_TEMPLATE) -> list[tuple[Answer, dict]]:
    """Translate ``texts`` into ``tgt`` with ``backend`` primed by ``prior``.

    Returns (answer, prior provenance) pairs; ``answer.text`` is prior + continuation.
    """
    task = TranslationTask(src, texts=list(texts), template=template)
    answerer = Answerer(backend, task, decoding or Decoding(), chat=False)
    examples = list(task.examples(get_language(tgt, field="to")))
    if prior is None:
        return [(a, {}) for a in answerer.answer(examples)]
    results = prior.build([PriorItem(ex, answerer.prompt(ex)[0]) for ex in examples], backend.tokenizer)
    answers = answerer.answer(examples, [r.ids for r in results])
    return [(a, {**r.provenance, "prior": r.text, "fell_back": r.fell_back}) for a, r in zip(answers, results)]

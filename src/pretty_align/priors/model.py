"""Priors from another model's answer: ``model`` (any model, any tokenizer) and ``sft``
(a counterpart that shares the base tokenizer: id-level, no re-tokenization).

The other model answers the same task prompt (through its chat template when it has one) via an
``Answerer``; its answer's first ``k`` base-model tokens become the prior. When tokenizers match
and both see the same plain prompt, the answer's own token ids are cut directly (``path: ids``);
otherwise the answer text is re-encoded as a continuation of the base prompt (``path: text``).
"""

from __future__ import annotations

from typing import Sequence

from ..boundary import Tokenizer, cut_prior, prior_text, tokenizer_fingerprint
from ..errors import InputError
from ..languages import Language
from . import PRIORS
from .base import Prior, PriorItem, PriorResult


@PRIORS.register("model")
class ModelPrior(Prior):
    require_ids = False
    needs_model = True

    def __init__(self, k: int = 1, *, answerer=None, **params) -> None:
        super().__init__(k=k, **params)
        if answerer is None:
            raise InputError("the model prior needs a model: set `model` (a model or 'reference') in the prior",
                             field="priors.model")
        self.answerer = answerer

    def _same_tokenizer(self, tokenizer: Tokenizer) -> bool:
        return tokenizer_fingerprint(tokenizer) == self.answerer.fingerprint

    def _id_level(self, tokenizer: Tokenizer, item: PriorItem, ans) -> bool:
        if self.answerer.chat or item.prompt.chat or ans.prompt.sep != item.prompt.sep:
            return False
        if ans.text != ans.raw_text or not ans.new_ids:
            return False  # the answer was cleaned (e.g. a label dropped): its ids are not the prior
        head = tokenizer.decode(ans.new_ids[:1], skip_special_tokens=True)
        return head.startswith(item.prompt.sep) and not head[len(item.prompt.sep):][:1].isspace()

    def build(self, items: Sequence[PriorItem], tokenizer: Tokenizer) -> list[PriorResult]:
        answers = self.answerer.answer([it.example for it in items])
        same = self._same_tokenizer(tokenizer)
        if self.require_ids and not same:
            raise InputError("the sft prior needs a model with the base model's tokenizer; use the `model` "
                             "prior for a model of another family", field="priors.model")
        out = []
        for item, ans in zip(items, answers):
            prov = {"strategy": self.registry_name, "answer": ans.text[:300], "answer_stop": ans.stop_reason}
            if same and self._id_level(tokenizer, item, ans):
                ids = cut_prior(ans.new_ids, self.k)
                out.append(PriorResult(ids, prior_text(tokenizer, item.prompt, ids), False, {**prov, "path": "ids"}))
            else:
                out.append(self.from_text(tokenizer, item.prompt, ans.text, {**prov, "path": "text"},
                                          fell_back=not ans.text.strip()))
        return out

    def signature(self, src: Language, tgt: Language) -> dict:
        return {"strategy": self.registry_name, "k": self.k, "model": self.answerer.signature(),
                "decoding": self.answerer.decoding.signature(), "task": self.answerer.task.signature(tgt)}


@PRIORS.register("sft")
class SFTPrior(ModelPrior):
    """The paper's SFT prior: the SFT counterpart's first k tokens, passed as ids."""

    require_ids = True

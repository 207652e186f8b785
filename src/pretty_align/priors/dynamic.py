"""The ``dynamic`` prior (issue 13, beyond the paper): the base model decodes, and wherever it is
uncertain a helper model (the SFT counterpart or any instruct model) supplies the next token.

"Uncertain" at a step: the base model's top-1 probability is below ``tau``, or its top-1/top-2
margin is below ``margin``. The first ``k`` positions are always the helper's (in text mode, the
helper's words that cover them), so ``tau = 0``,
``margin = 0`` is the paper's static k-token prior decoded step by step (with the same tokenizer
it gives the ``sft`` prior's output, tested).

Two modes, chosen per example:

* ``ids``: the helper shares the base tokenizer and answers the same plain prompt; it picks the
  next token id itself.
* ``text`` (as in Nudging, arXiv 2410.09300): any other helper (another family, or a chat
  template). Interventions happen only where the base model starts a new word; the helper writes
  its next word (at most ``word_tokens`` of its tokens) after the answer so far, and the word is
  re-tokenized for the base model and forced token by token.

Cost: each row's helper is a ``backends.base.Session`` fed incrementally, so its KV cache follows
the base model's output: one prefill plus the tokens fed, not a second full decode (a helper fed
only at interventions catches up in one pass). Per row the provenance records every position the
helper supplied, both models' probabilities there and the helper's share of the output tokens.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..boundary import Prompt, Tokenizer, answer_ids, tokenizer_fingerprint
from ..errors import CapabilityError, InputError
from ..languages import Language
from . import PRIORS
from .base import Prior, PriorItem, PriorResult


def top2(logits: Any) -> tuple[int, float, float]:
    """(argmax, its probability, the runner-up's probability) of unnormalised ``logits``."""
    x = np.asarray(logits, dtype=np.float64)
    i1 = int(x.argmax())
    z = np.exp(x - x[i1])
    total = z.sum()
    z[i1] = -1.0
    return i1, float(1.0 / total), float(z.max() / total)


class Trace:
    """What the helper did in one row: positions it supplied (0-based in the row's new tokens)
    and, per intervention, the base model's top-1/top-2 probabilities, the helper's probability
    of its own first token and whether that token differs from the base model's greedy one
    (``changed``: where it does not, the base model would have written the same token).

    ``helper_share`` counts every position the helper supplied (the issue's measure of its
    tokens); ``changed_share`` counts only the supplied tokens that differ from the base model's
    greedy choice at their own step: the part of the output the helper actually rewrote. (An
    intervention's own ``changed`` flag is its first token's.)"""

    def __init__(self, mode: str) -> None:
        self.mode, self.interventions = mode, []
        self.positions: list[tuple[int, bool]] = []   # (position, changed) per helper-supplied token

    def add(self, pos: int, n: int, base: tuple[float, float], helper_p: float, changed: bool,
            text: str | None = None) -> None:
        """An intervention at ``pos`` of ``n`` tokens (text mode: a word), the first supplied now;
        the rest are recorded by ``supply`` as each is forced."""
        self.positions.append((pos, changed))
        item = {"pos": pos, "tokens": n, "base_p1": round(base[0], 5), "base_p2": round(base[1], 5),
                "helper_p": round(helper_p, 5), "changed": changed}
        if text is not None:
            item["word"] = text
        self.interventions.append(item)

    def supply(self, pos: int, changed: bool) -> None:
        """A later token of the last intervention's word, forced at ``pos``."""
        self.positions.append((pos, changed))

    def summary(self, n_new: int) -> dict[str, Any]:
        """Provenance once the row has ``n_new`` tokens (a loop cut may have dropped some)."""
        helper = sum(p < n_new for p, _ in self.positions)
        changed = sum(p < n_new for p, c in self.positions if c)
        return {"mode": self.mode, "helper_tokens": helper, "changed_tokens": changed, "output_tokens": n_new,
                "helper_share": round(helper / n_new, 5) if n_new else 0.0,
                "changed_share": round(changed / n_new, 5) if n_new else 0.0,
                "interventions": [i for i in self.interventions if i["pos"] < n_new]}


class _Hook:
    """Shared part of the two step hooks: the uncertainty rule and the trace."""

    def __init__(self, prior: "DynamicPrior", session: Any, helper_prompt: Prompt, mode: str) -> None:
        self.prior, self.session, self.helper_prompt = prior, session, helper_prompt
        self.trace = Trace(mode)

    def wants_help(self, pos: int, p1: float, p2: float) -> bool:
        return pos < self.prior.k or p1 < self.prior.tau or p1 - p2 < self.prior.margin

    def finish(self, n_new: int) -> dict[str, Any]:
        if self.session is not None:   # free the helper's KV cache (llama.cpp: its context) with the row
            self.session.close()
            self.session = None
        return self.trace.summary(n_new)


class IdHook(_Hook):
    """Same tokenizer, same prompt: the helper continues the row's own ids."""

    def __init__(self, prior: "DynamicPrior", session: Any, helper_prompt: Prompt, base_eos: int | None,
                 helper_eos: set[int]) -> None:
        super().__init__(prior, session, helper_prompt, "ids")
        self.base_eos, self.helper_eos = base_eos, helper_eos

    def pick(self, logits: Any, new: Sequence[int]) -> int:
        greedy, p1, p2 = top2(logits)
        if not self.wants_help(len(new), p1, p2):
            return greedy
        tok, hp, _ = top2(self.session.logits([*self.helper_prompt.ids, *new]))
        if tok in self.helper_eos and self.base_eos is not None:
            tok = self.base_eos   # the helper ends the answer (its end-of-turn may not be the base's EOS)
        self.trace.add(len(new), 1, (p1, p2), hp, tok != greedy)
        return tok


class TextHook(_Hook):
    """Another tokenizer or prompt format: the helper's next word, re-tokenized for the base model."""

    def __init__(self, prior: "DynamicPrior", session: Any, helper_prompt: Prompt, helper_tok: Tokenizer,
                 helper_eos: set[int], base_tok: Tokenizer, base_prompt: Prompt) -> None:
        super().__init__(prior, session, helper_prompt, "text")
        self.helper_tok, self.helper_eos = helper_tok, helper_eos
        self.base_tok, self.base_prompt = base_tok, base_prompt
        self.queue: list[int] = []

    def pick(self, logits: Any, new: Sequence[int]) -> int:
        pos = len(new)
        if self.queue:   # the rest of a word the helper wrote; changed or not, token by token
            tok = self.queue.pop(0)
            self.trace.supply(pos, tok != int(np.asarray(logits).argmax()))
            return tok
        greedy, p1, p2 = top2(logits)
        text = self.base_tok.decode(list(new), skip_special_tokens=True)
        # the first k positions are the helper's wherever they fall; after them, only word starts
        if pos >= self.prior.k and not self._starts_word(new, text, greedy):
            return greedy
        if not self.wants_help(pos, p1, p2):
            return greedy
        word, attached, hp = self._helper_word(text.strip())
        if word is None:   # the helper ends the answer here
            eos = self.base_tok.eos_token_id
            tok = greedy if eos is None else eos
            self.trace.add(pos, 1, (p1, p2), hp, tok != greedy, "")
            return tok
        ids = self._base_ids(new, text, word, attached) if word else []
        if not ids:   # no usable word within word_tokens: the base model goes on
            return greedy
        self.trace.add(pos, len(ids), (p1, p2), hp, ids[0] != greedy, word)
        self.queue = ids[1:]
        return ids[0]

    def _starts_word(self, new: Sequence[int], text: str, greedy: int) -> bool:
        """Whether the base model's ``greedy`` token would start a word, or end the answer (a token
        that adds no text by itself, like EOS: the helper may overrule an uncertain end). Never
        inside a character that byte tokens spell in pieces."""
        if not text.strip():
            return True
        if text.endswith("\ufffd"):
            return False
        if not self.base_tok.decode([greedy], skip_special_tokens=True):
            return True
        after = self.base_tok.decode([*new, greedy], skip_special_tokens=True)[len(text):]
        return text[-1:].isspace() or after[:1].isspace()

    def _helper_word(self, text: str) -> tuple[str | None, bool, float]:
        """The helper's next word after the answer ``text``, whether it continues the answer's last
        word (no space before it: punctuation, the rest of a word), and the helper's probability of
        its first token. The word is None where the helper ends the answer (its end of turn, or a
        newline after the answer's first words), "" where it wrote no usable word within
        ``word_tokens`` tokens (only spaces or special tokens, or a character cut by the cap): the
        base model then goes on."""
        hp_prompt = self.helper_prompt
        ids = [*hp_prompt.ids, *(answer_ids(self.helper_tok, hp_prompt, text) if text else [])]
        gen: list[int] = []
        first_p = 0.0
        piece = ""
        ended = False
        for _ in range(self.prior.word_tokens):
            tok, p, _ = top2(self.session.logits(ids + gen))
            if not gen:
                first_p = p
            if tok in self.helper_eos:
                ended = True
                break
            gen.append(tok)
            piece = self.helper_tok.decode(gen, skip_special_tokens=True)
            if piece.endswith("\ufffd"):   # inside a character that byte-level tokens spell in pieces
                continue
            # before the answer's first word, line breaks are the helper's layout, not an end
            body = piece.lstrip(" \t") if text else piece.lstrip()
            if body.startswith("\n"):
                return None, False, first_p
            if body and any(ch.isspace() for ch in body):   # a space or newline after the word: it is whole
                break
        body = piece.strip().rstrip("\ufffd").strip()   # the cap may fall inside a character: drop its part
        if not body:
            return (None if ended else ""), False, first_p
        return body.split()[0], bool(text) and not piece[:1].isspace(), first_p

    def _base_ids(self, new: Sequence[int], text: str, word: str, attached: bool = False) -> list[int]:
        """Base-model ids that append ``word`` to the row (decoded so far as ``text``), after a space
        unless ``attached`` (the helper wrote none) or the row already ends in one (a lone space
        token): the tail of the whole answer's ids when they start with the row's own ids, else the
        word encoded on its own."""
        body = text.strip()
        joined = body + word if attached else f"{body} {word}" if body else word
        whole = answer_ids(self.base_tok, self.base_prompt, joined)
        if whole[:len(new)] == list(new) and len(whole) > len(new):
            return whole[len(new):]
        glue = "" if attached or text[-1:].isspace() else " " if text or self.base_prompt.sep else ""
        return self.base_tok.encode(glue + word, add_special_tokens=False)


@PRIORS.register("dynamic")
class DynamicPrior(Prior):
    """Parameters: ``tau`` (intervene when the base top-1 probability is below it, 0..1),
    ``margin`` (or when top-1 minus top-2 is below it, 0..1), ``word_tokens`` (text mode: helper
    tokens per word, 1..64); ``k`` positions at the start are always the helper's."""

    needs_model = True
    needs_step_hook = True

    def __init__(self, k: int = 0, *, answerer=None, tau: float = 0.5, margin: float = 0.0, word_tokens: int = 8,
                 **params) -> None:
        super().__init__(k=k, **params)
        for name, value, lo, hi in (("tau", tau, 0.0, 1.0), ("margin", margin, 0.0, 1.0)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
                raise InputError(f"dynamic prior: {name} must be a number in [{lo}, {hi}], got {value!r}",
                                 field=f"priors.params.{name}")
        if not isinstance(word_tokens, int) or isinstance(word_tokens, bool) or not 1 <= word_tokens <= 64:
            raise InputError(f"dynamic prior: word_tokens must be an integer in [1, 64], got {word_tokens!r}",
                             field="priors.params.word_tokens")
        if answerer is None:
            raise InputError("the dynamic prior needs a helper model: set `model` (a model or 'reference') in the "
                             "prior", field="priors.model")
        if not answerer.backend.capabilities.sessions:
            raise CapabilityError(f"the dynamic prior's helper runs on backend '{answerer.backend.registry_name}', "
                                  "which cannot follow another model's output token by token; use 'hf' or "
                                  "'llamacpp' for the helper")
        self.answerer, self.tau, self.margin, self.word_tokens = answerer, float(tau), float(margin), word_tokens

    def mode(self, tokenizer: Tokenizer, base_prompt: Prompt, helper_prompt: Prompt) -> str:
        """``ids`` when the helper can continue the base model's own ids, else ``text``."""
        same = tokenizer_fingerprint(tokenizer) == self.answerer.fingerprint
        plain = not helper_prompt.chat and not base_prompt.chat and helper_prompt.sep == base_prompt.sep
        return "ids" if same and plain and helper_prompt.ids == base_prompt.ids else "text"

    def build(self, items: Sequence[PriorItem], tokenizer: Tokenizer) -> list[PriorResult]:
        """No prior ids: each result carries a fresh step hook (``hook``) for its row."""
        helper = self.answerer.backend
        out = []
        for item in items:
            hprompt = self.answerer.prompt(item.example)[0]
            if self.mode(tokenizer, item.prompt, hprompt) == "ids":
                hook: _Hook = IdHook(self, helper.session(), hprompt, tokenizer.eos_token_id, helper.eos_ids())
            else:
                hook = TextHook(self, helper.session(), hprompt, helper.tokenizer, helper.eos_ids(), tokenizer,
                                item.prompt)
            out.append(PriorResult([], "", False, {"strategy": "dynamic", "mode": hook.trace.mode}, hook=hook))
        return out

    def signature(self, src: Language, tgt: Language) -> dict:
        return {"strategy": self.registry_name, "k": self.k, "tau": self.tau, "margin": self.margin,
                "word_tokens": self.word_tokens, "model": self.answerer.signature(),
                "task": self.answerer.task.signature(tgt)}

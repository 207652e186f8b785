"""A fake backend for logic tests and dry runs: no weights, deterministic, character tokenizer.

Models (the ``model`` string):

* ``fake:echo``  answers with the source line of the prompt (the last ``Name: text`` line before
  the final label), then runs on with ``\\nEnglish: ...`` like a base model that ignores the stop;
* ``fake:upper`` the same, upper-cased;
* ``fake:loop``  answers ``ab ab ab ...`` forever (exercises the loop guard and length cap);
* ``fake:empty`` answers with a newline at once.

``batch_dependent=True`` prefixes the size of the ``generate`` call to each answer, like bfloat16
kernels whose results depend on the batch (``capabilities.batch_invariant`` is then False).

A prior steers it like a real model: when the answer starts with the prior, it continues it; when
not, it writes the prior followed by its answer. ``delay`` (seconds per request) lets tests
kill a run part-way.
"""

from __future__ import annotations

import time
from typing import Sequence

from ..boundary import Tokenizer
from ..decoding import Decoding, RowState
from ..errors import CapabilityError
from . import BACKENDS
from .base import Backend, Capabilities, Generation, GenerationRequest, OnDone, refuse_hooks

PAD, BOS, EOS, OFFSET = 0, 1, 2, 3


class CharTokenizer:
    """One token per character (id = code point + 3), plus pad/bos/eos. Lossless and exact."""

    pad_token_id, bos_token_id, eos_token_id = PAD, BOS, EOS

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [ord(ch) + OFFSET for ch in text]
        return [BOS, *ids] if add_special_tokens else ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        special = {PAD: "<pad>", BOS: "<bos>", EOS: "<eos>"}
        return "".join(("" if skip_special_tokens else special[i]) if i < OFFSET else chr(i - OFFSET)
                       for i in ids)

    def __len__(self) -> int:
        return 0x110000 + OFFSET


def _source_line(prompt: str) -> str:
    lines = [ln for ln in prompt.split("\n") if ln.strip()]
    for line in reversed(lines[:-1]):
        if ":" in line:
            return line.split(":", 1)[1].strip()
    return lines[-1] if lines else ""


@BACKENDS.register("fake")
class FakeBackend(Backend):
    def __init__(self, model: str = "fake:echo", *, adapter: str | None = None, dtype: str = "float32",
                 delay: float = 0.0, chat: bool = False, batch_dependent: bool = False) -> None:
        if adapter:
            raise CapabilityError("the fake backend has no weights to adapt; drop `adapter`")
        self.model = model
        self.behaviour = model.split(":", 1)[1] if ":" in model else model
        if self.behaviour not in {"echo", "upper", "loop", "empty"}:
            raise ValueError(f"unknown fake model '{model}'; expected fake:echo, fake:upper, fake:loop or fake:empty")
        self.delay = delay
        self.chat = chat
        # batch_dependent mimics bfloat16 kernels: the answer depends on the other rows of the call
        self.batch_dependent = batch_dependent
        self.capabilities = Capabilities(batched=True, token_ids_in=True, chat_template=chat,
                                         batch_invariant=not batch_dependent)
        self._tok = CharTokenizer()

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tok

    def render_chat(self, user_text: str) -> str:
        return f"<user>{user_text}<assistant>"

    def _answer(self, prompt: str) -> str:
        if self.behaviour == "loop":
            return " ab" * 1000
        if self.behaviour == "empty":
            return "\n"
        src = _source_line(prompt.replace("<assistant>", ""))
        if self.behaviour == "upper":
            src = src.upper()
        return f" {src}\nEnglish: {src}\n"

    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding,
                 on_done: OnDone | None = None) -> list[Generation]:
        refuse_hooks(self, requests)
        out = []
        for i, req in enumerate(requests):
            if self.delay:
                time.sleep(self.delay)  # per request: lets tests kill a run part-way
            out.append(self._one(req, decoding, len(requests)))
            if on_done:
                on_done(i, out[-1])
        return out

    def _one(self, req: GenerationRequest, decoding: Decoding, batch: int) -> Generation:
        prompt = self._tok.decode(req.prompt_ids, skip_special_tokens=True)
        prior = self._tok.decode(req.prior_ids, skip_special_tokens=True)
        answer = self._answer(prompt)
        if self.batch_dependent:
            answer = f" (batch of {batch}){answer}"
        if prior and not answer.startswith(prior):
            answer = prior + answer.lstrip(" ")
        cont = self._tok.encode(answer[len(prior):], add_special_tokens=False) + [EOS]
        row = RowState.for_request(decoding, self._tok, req.max_new_tokens, has_prior=bool(req.prior_ids))
        for tok in cont:
            reason = row.push(tok, {EOS})
            if reason:
                return Generation(row.new, reason)
        return Generation(row.new, "length")

    def signature(self) -> dict:
        return {"backend": "fake", "model": self.model, "chat": self.chat, "batch_dependent": self.batch_dependent}

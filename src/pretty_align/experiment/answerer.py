"""A model answering a task's prompts, with or without priors: the one generation path.

Every generation in pretty-align goes through ``Answerer.answer``: base-model conditions, the
reference model's own answers and the ``model`` prior alike. It renders prompts (plain or through
the chat template), truncates over-long sources with a warning, appends prior ids at the boundary,
calls the backend in batches and renders the text once. Raw generations are cached by a content
hash of (model, prompt ids, prior ids, decoding, package versions, code) in an optional store, so a model prior reuses the
reference model's answers and a killed run does not redo them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from ..backends.base import Backend, Generation, GenerationRequest
from ..boundary import Prompt, encode_prompt, render_output, tokenizer_fingerprint
from ..decoding import Decoding, StepHook
from ..errors import InputError
from ..tasks.base import Example, Task
from .signature import code_signature, content_hash, package_versions
from .store import Store

log = logging.getLogger(__name__)


class PromptTooLong(InputError):
    """A prompt over ``max_prompt_tokens`` where the caller asked not to truncate it."""


@dataclass
class Answer:
    text: str                     # cleaned output (prior + continuation), what gets scored
    raw_text: str                 # the same before task.clean_answer
    prior_ids: list[int]
    new_ids: list[int]
    stop_reason: str
    truncated: bool
    prompt: Prompt = field(repr=False)


class Answerer:
    def __init__(self, backend: Backend, task: Task, decoding: Decoding, *, chat: bool | None = None,
                 max_prompt_tokens: int = 1024, store: Store | None = None) -> None:
        self.backend, self.task, self.store = backend, task, store
        self.chat = backend.has_chat_template if chat is None else chat
        if self.chat and not backend.has_chat_template:
            raise InputError(f"model '{backend.signature().get('model')}' has no chat template; set chat = false",
                             field="chat")
        # An instruct model answers in a turn that ends with EOS, often after a preamble line
        # ("Here is the translation:"); stopping at its first newline would keep only the preamble.
        # So chat answers run to EOS (within the budget) and task.clean_answer extracts the answer.
        self.decoding = replace(decoding, stop=()) if self.chat else decoding
        self.max_prompt_tokens = max_prompt_tokens
        self._prompts: dict[str, tuple[Prompt, int, bool]] = {}
        self.truncated_count = 0

    @property
    def tokenizer(self):
        return self.backend.tokenizer

    @property
    def fingerprint(self) -> str:
        return tokenizer_fingerprint(self.tokenizer)   # memoized per tokenizer object

    def signature(self) -> dict:
        sig = {**self.backend.signature(), "chat": self.chat, "max_prompt_tokens": self.max_prompt_tokens}
        if not self.backend.capabilities.batch_invariant:
            sig["batch_size"] = self.decoding.batch_size  # outputs depend on batch composition
        return sig

    # -- prompts ------------------------------------------------------------------------------
    def prompt(self, example: Example, *, truncate: bool = True) -> tuple[Prompt, int, bool]:
        """(prompt, source length in tokens, truncated?) for ``example``, computed once.
        ``truncate=False`` (a server): an over-long prompt raises ``PromptTooLong`` instead, and
        nothing is logged, counted or cached."""
        key = f"{example.id}|{example.tgt.code}"
        if key not in self._prompts:
            self._prompts[key] = self._build_prompt(example, truncate)
        return self._prompts[key]

    def forget(self, example: Example) -> None:
        """Drop ``example``'s prompt (a server sees each example once: its cache must not grow)."""
        self._prompts.pop(f"{example.id}|{example.tgt.code}", None)

    def _encode(self, example: Example, source: str) -> Prompt:
        text = self.task.render(example, source)
        if self.chat:
            text = self.backend.render_chat(text)
        return encode_prompt(self.tokenizer, text, chat=self.chat)

    def _build_prompt(self, example: Example, truncate: bool = True) -> tuple[Prompt, int, bool]:
        if not example.source.strip():
            raise InputError(f"example {example.id}: empty source text; every example needs one", field="source")
        src_ids = self.tokenizer.encode(example.source, add_special_tokens=False)
        prompt = self._encode(example, example.source)
        excess = len(prompt.ids) - self.max_prompt_tokens
        if excess <= 0:
            return prompt, len(src_ids), False
        if not truncate:
            raise PromptTooLong(f"example {example.id}: the prompt has {len(prompt.ids)} tokens, over "
                                f"max_prompt_tokens={self.max_prompt_tokens}", field="prompt")
        keep = max(1, len(src_ids) - excess)
        log.warning("example %s: prompt has %d tokens, over max_prompt_tokens=%d; source truncated to %d tokens",
                    example.id, len(prompt.ids), self.max_prompt_tokens, keep)
        self.truncated_count += 1
        short = self.tokenizer.decode(src_ids[:keep], skip_special_tokens=True)
        return self._encode(example, short), keep, True

    # -- generation ---------------------------------------------------------------------------
    def answer(self, examples: Sequence[Example], priors: Sequence[Sequence[int]] | None = None,
               on_answer: Callable[[int, Answer], None] | None = None,
               hooks: Sequence[StepHook | None] | None = None,
               budgets: Sequence[int | None] | None = None) -> list[Answer]:
        """Answers for ``examples``, each primed with its prior ids (none when ``priors`` is None)
        and decoded through its step hook where ``hooks`` gives one (such rows are never cached:
        their output depends on the hook's helper). ``budgets`` caps a row's new tokens below the
        decoding budget (a server's ``max_tokens``). ``on_answer(i, answer)`` is called as each one
        is ready (cached ones first)."""
        priors = priors if priors is not None else [()] * len(examples)
        hooks = hooks if hooks is not None else [None] * len(examples)
        budgets = budgets if budgets is not None else [None] * len(examples)
        prompts = [self.prompt(ex) for ex in examples]
        reqs = [GenerationRequest(p.ids, tuple(prior), min(self.decoding.budget(n_src), cap) if cap
                                  else self.decoding.budget(n_src), hook=hook)
                for (p, n_src, _), prior, hook, cap in zip(prompts, priors, hooks, budgets)]
        out: list[Answer | None] = [None] * len(examples)

        def done(i: int, new_ids: list[int], reason: str) -> None:
            (p, _, truncated), ex, req = prompts[i], examples[i], reqs[i]
            text = render_output(self.tokenizer, p, req.prior_ids, new_ids, self.decoding.stop)
            out[i] = Answer(self.task.clean_answer(text, ex), text, list(req.prior_ids), new_ids, reason,
                            truncated, p)
            if on_answer:
                on_answer(i, out[i])

        self._generate_cached(reqs, done)
        return out  # type: ignore[return-value]

    def _gen_key(self, req: GenerationRequest) -> str:
        # the code is in the key: a backend's decode loop or the stopping rule may change outputs
        return content_hash({"model": self.signature(), "decoding": self.decoding.signature(),
                             "input": req.input_ids, "budget": req.max_new_tokens,
                             "packages": package_versions(), "code": code_signature()})

    def _generate_cached(self, reqs: list[GenerationRequest], done: Callable[[int, list[int], str], None]) -> None:
        keys = [self._gen_key(r) if r.hook is None else None for r in reqs]
        cached = self.store.get_generations([k for k in keys if k]) if self.store else {}
        if len(cached) < len(keys) and not self.backend.capabilities.batch_invariant:
            # Outputs depend on what shares the batch: regenerate the whole group as it was, so a
            # resumed run reproduces the uninterrupted one (same values, stored once).
            cached = {}
        todo = []
        for i, k in enumerate(keys):
            if k in cached:
                done(i, cached[k]["new_ids"], cached[k]["stop_reason"])
            else:
                todo.append(i)
        if not todo:
            return

        def fresh(j: int, gen: Generation) -> None:
            i = todo[j]
            if self.store and keys[i]:
                self.store.put_generations({keys[i]: {"new_ids": gen.new_ids, "stop_reason": gen.stop_reason}})
            done(i, gen.new_ids, gen.stop_reason)

        self.backend.generate([reqs[i] for i in todo], self.decoding, on_done=fresh)

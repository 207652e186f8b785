"""Task contract: data loader + prompt template + answer post-processing + metrics (SPEC §4)."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterator

from ..errors import InputError
from ..languages import Language


@dataclass(frozen=True)
class Example:
    """One input. ``id`` is stable across runs (e.g. ``flores/dev/17``); ``source_hash`` in the
    result key comes from the text itself, so editing a data file never reuses stale rows."""

    id: str
    source: str
    reference: str | None
    src: Language
    tgt: Language
    meta: dict = field(default_factory=dict, hash=False, compare=False)


def check_template(template: str, allowed: set[str], required: set[str], *, field: str = "task.template") -> str:
    """``template`` if its ``{placeholders}`` are all in ``allowed`` and include one of ``required``;
    else an InputError naming the field (a typo would otherwise fail later, at render time)."""
    names = set(re.findall(r"{(\w+)}", template))
    unknown = names - allowed
    if unknown:
        raise InputError(f"unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(allowed)}", field=field)
    if not names & required:
        raise InputError(f"template must contain {' or '.join('{' + r + '}' for r in sorted(required))}", field=field)
    return template


def first_answer_line(text: str, label: str | None = None) -> str:
    """The answer in a model's output: the first line that is not a preamble ending in a colon
    ("Here is the translation:"), without an echoed ``label`` ("German:") at its start. A base
    model's one-line answer only loses the label."""
    lines = [ln.strip() for ln in text.strip().split("\n") if ln.strip()]
    while len(lines) > 1 and lines[0].endswith((":", "：")):
        lines.pop(0)
    line = lines[0] if lines else ""
    return line[len(label):].strip() if label and line.startswith(label) else line


class Task(ABC):
    """A task owns its data, prompts and metric set. ``metrics`` are (report column label, metric
    registry name) pairs: names, not classes, because metrics sit above tasks in the layering; the
    report builds them (``metrics.report_metrics``) and never branches on the task's name.
    ``ratio_metrics`` are the labels that get a "% of the reference model" column."""

    registry_name = "?"
    metrics: tuple[tuple[str, str], ...] = ()
    ratio_metrics: tuple[str, ...] = ()

    @abstractmethod
    def source_language(self, tgt: Language) -> Language:
        """The source language of the examples for target ``tgt`` (e.g. English for en->X
        translation; ``tgt`` itself for monolingual XL-Sum and POS tagging)."""

    @abstractmethod
    def examples(self, tgt: Language) -> Iterator[Example]:
        """The examples for one target language, in a fixed order."""

    @abstractmethod
    def render(self, example: Example, source: str | None = None) -> str:
        """The prompt text for ``example`` (``source`` overrides it, e.g. after truncation).
        Plain text ending where the answer starts, without the answer separator."""

    def check_data(self, targets: list[Language]) -> None:
        """Raise InputError naming every data file missing for ``targets``, before any model is
        loaded. Tasks whose data is checked when they are built need nothing here."""

    def clean_answer(self, text: str, example: Example) -> str:
        """Post-process a model answer (e.g. drop an echoed "German:" label)."""
        return text.strip()

    def streamable(self, partial: str, example: Example, *, one_line: bool) -> str:
        """What of the cleaned answer is certain when the output so far is ``partial``: a prefix of
        ``clean_answer(partial + more)`` for whatever ``more`` follows (with ``one_line``, ``more``
        holds no line break: decoding stops at one). A server streams it. Default: ``partial``
        without its trailing whitespace where the answer is ``strip``ped only, which any
        continuation extends."""
        if type(self).clean_answer is not Task.clean_answer:
            return ""   # a task that post-processes more must say what is certain
        return partial.strip()

    @abstractmethod
    def signature(self, tgt: Language | None = None) -> dict:
        """Task name, template and data identity, for result keys. With ``tgt``, also everything
        the prompts for that target depend on besides the example itself (POS demonstrations)."""

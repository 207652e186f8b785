"""Task contract: data loader + prompt template + answer post-processing + metrics (SPEC §4)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterator

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


class Task(ABC):
    registry_name = "?"
    #: the source language of every example (set by the task's constructor)
    src: Language
    #: stop strings applied to base-model continuations (plain prompts)
    stops: tuple[str, ...] = ("\n",)

    def source_language(self, tgt: Language) -> Language:
        """The source language of the examples for target ``tgt`` (``src`` unless the task says
        otherwise, e.g. monolingual XL-Sum where it is ``tgt`` itself)."""
        return self.src

    @abstractmethod
    def examples(self, tgt: Language) -> Iterator[Example]:
        """The examples for one target language, in a fixed order."""

    @abstractmethod
    def render(self, example: Example, source: str | None = None) -> str:
        """The prompt text for ``example`` (``source`` overrides it, e.g. after truncation).
        Plain text ending where the answer starts, without the answer separator."""

    def clean_answer(self, text: str, example: Example) -> str:
        """Post-process a model answer (e.g. drop an echoed "German:" label)."""
        return text.strip()

    @abstractmethod
    def signature(self) -> dict:
        """Task name, template and data identity, for result keys."""

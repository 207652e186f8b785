"""POS tagging (SPEC §4): XGLUE POS = Universal Dependencies v2.5 UPOS, read from CoNLL-U.

Default template (ours), answer format ``word/TAG``::

    Tag each word of the following {tgt_name} sentence with its Universal POS tag (ADJ, ADP, ...).
    {demos}Words: {words}
    Tagged:

``{demos}`` is empty (zero-shot, ``shots = 0``) or ``shots`` short ``Words:``/``Tagged:`` pairs from
another split of the language's XGLUE treebank (``shots_split``, default ``dev``): a small base
model does not produce the ``word/TAG`` format from the instruction alone.

With ``answer_format = "tags"`` the answer is the tags only, in order. Words that contain spaces
(Vietnamese syllables: "sinh viên") are shown joined by "_" so that whitespace separates words.
The sentence is in the target language; the source language is the target language itself.

Treebanks: ``task.data`` is the UD root (e.g. ``../shared/data/ud-2.5``); ``treebank`` picks the
XGLUE treebank of each language (``xglue``, default) or the parallel ``pud`` set, ``split`` is
``test`` or ``dev``. A path pattern ending in ``.conllu`` (with ``{tgt}``/``{tgt_iso1}``) also works.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

from ..errors import InputError
from ..languages import Language
from ..models import file_sha256
from . import TASKS
from .base import Example, Task, check_template, first_answer_line
from .conll import UPOS, TaggedSentence, read_conllu

DEFAULT_TEMPLATE = ("Tag each word of the following {tgt_name} sentence with its Universal POS tag "
                    f"({', '.join(UPOS)}).\n{{demos}}Words: {{words}}\nTagged:")
MAX_DEMO_WORDS = 12   # demonstrations are short sentences, so they cost few prompt tokens
# XGLUE POS treebanks (UD v2.5) by ISO 639-3 code: directory, file stem.
XGLUE_TREEBANKS = {"deu": ("UD_German-GSD", "de_gsd"), "fra": ("UD_French-GSD", "fr_gsd"),
                   "zho": ("UD_Chinese-GSDSimp", "zh_gsdsimp"), "jpn": ("UD_Japanese-GSD", "ja_gsd"),
                   "rus": ("UD_Russian-GSD", "ru_gsd"), "spa": ("UD_Spanish-GSD", "es_gsd"),
                   "vie": ("UD_Vietnamese-VTB", "vi_vtb"), "eng": ("UD_English-EWT", "en_ewt")}
PUD_LANGS = {"deu": "de", "fra": "fr", "zho": "zh", "jpn": "ja", "rus": "ru", "spa": "es", "eng": "en"}


def display_word(word: str) -> str:
    """A word as shown to the model: inner whitespace becomes "_" so spaces separate words."""
    return "_".join(word.split())


def treebank_path(root: str, tgt: Language, treebank: str, split: str) -> Path:
    if root.endswith(".conllu"):
        return Path(root.format(tgt=tgt.code, tgt_iso1=tgt.iso1, split=split))
    if treebank == "pud":
        if tgt.iso3 not in PUD_LANGS:
            raise InputError(f"no PUD treebank for {tgt.code}; PUD languages: {sorted(PUD_LANGS)}", field="task.treebank")
        name = {"zho": "Chinese"}.get(tgt.iso3, tgt.name)
        return Path(root) / f"UD_{name}-PUD" / f"{PUD_LANGS[tgt.iso3]}_pud-ud-test.conllu"
    if tgt.iso3 not in XGLUE_TREEBANKS:
        raise InputError(f"no XGLUE POS treebank for {tgt.code}; languages: {sorted(XGLUE_TREEBANKS)}; give a .conllu "
                         "path pattern in task.data instead", field="task.targets")
    directory, stem = XGLUE_TREEBANKS[tgt.iso3]
    return Path(root) / directory / f"{stem}-ud-{split}.conllu"


@TASKS.register("pos")
class POSTask(Task):
    metrics = (("accuracy", "pos-accuracy"),)   # tags are language-independent: no off-target rate
    ratio_metrics = ("accuracy",)

    def __init__(self, source: str = "same", *, data: str | None = None, treebank: str = "xglue",
                 split: str = "test", answer_format: str = "word/tag", n: int | None = None, offset: int = 0,
                 template: str = DEFAULT_TEMPLATE, shots: int = 0, shots_split: str = "dev") -> None:
        if not data:
            raise InputError("POS tagging needs task.data: the UD v2.5 root (e.g. ../shared/data/ud-2.5) or a "
                             ".conllu path pattern", field="task.data")
        if treebank not in {"xglue", "pud"}:
            raise InputError(f"treebank '{treebank}' is not 'xglue' or 'pud'", field="task.treebank")
        if split not in {"test", "dev", "train"}:
            raise InputError(f"split '{split}' is not test, dev or train", field="task.split")
        if answer_format not in {"word/tag", "tags"}:
            raise InputError(f"answer_format '{answer_format}' is not 'word/tag' or 'tags'", field="task.answer_format")
        check_template(template, {"tgt_name", "src_name", "tgt", "words", "demos"}, {"words"})
        self.data, self.treebank, self.split, self.answer_format = data, treebank, split, answer_format
        if shots < 0:
            raise InputError("shots must be >= 0", field="task.shots")
        if shots and "{demos}" not in template:
            raise InputError("task.shots > 0 needs a {demos} placeholder in the template", field="task.template")
        self.n, self.offset, self.template = n, offset, template
        self.shots, self.shots_split = shots, shots_split
        self._sentences: dict[str, list[TaggedSentence]] = {}
        self._demos: dict[str, str] = {}

    def source_language(self, tgt: Language) -> Language:
        return tgt

    def sentences(self, tgt: Language) -> list[TaggedSentence]:
        if tgt.code not in self._sentences:
            self._sentences[tgt.code] = read_conllu(treebank_path(self.data, tgt, self.treebank, self.split))  # type: ignore[arg-type]
        return self._sentences[tgt.code]

    def reference(self, sent: TaggedSentence) -> str:
        if self.answer_format == "tags":
            return " ".join(sent.tags)
        return " ".join(f"{display_word(w)}/{t}" for w, t in zip(sent.words, sent.tags))

    def examples(self, tgt: Language) -> Iterator[Example]:
        sents = self.sentences(tgt)
        stop = len(sents) if self.n is None else min(len(sents), self.offset + self.n)
        for s in sents[self.offset:stop]:
            words = [display_word(w) for w in s.words]
            yield Example(f"ud/{self.treebank}/{self.split}/{s.sent_id}", " ".join(words), self.reference(s), tgt, tgt,
                          {"words": words, "tags": list(s.tags), "origin": s.origin})

    def demos(self, tgt: Language) -> str:
        """``shots`` demonstrations (the first short sentences of the XGLUE treebank's
        ``shots_split``, never the evaluated file), each a ``Words:``/``Tagged:`` pair."""
        if not self.shots:
            return ""
        if tgt.code not in self._demos:
            path = treebank_path(self.data, tgt, "xglue", self.shots_split)  # type: ignore[arg-type]
            if path.resolve() == treebank_path(self.data, tgt, self.treebank, self.split).resolve():  # type: ignore[arg-type]
                raise InputError(f"demonstrations would come from the evaluated file {path.name}; set task.shots_split "
                                 "to another split", field="task.shots_split")
            short = [s for s in read_conllu(path) if len(s.words) <= MAX_DEMO_WORDS][:self.shots]
            self._demos[tgt.code] = "".join(f"Words: {' '.join(display_word(w) for w in s.words)}\n"
                                            f"Tagged: {self.reference(s)}\n" for s in short)
        return self._demos[tgt.code]

    def render(self, example: Example, source: str | None = None) -> str:
        return self.template.format(tgt_name=example.tgt.name, src_name=example.src.name, tgt=example.tgt.code,
                                    words=example.source if source is None else source, demos=self.demos(example.tgt))

    def clean_answer(self, text: str, example: Example) -> str:
        return first_answer_line(text)

    def signature(self, tgt: Language | None = None) -> dict:
        sig = {"task": "pos", "treebank": self.treebank, "split": self.split, "answer_format": self.answer_format,
               "shots": self.shots, "shots_split": self.shots_split if self.shots else None,
               "template": self.template, "template_sha256": hashlib.sha256(self.template.encode()).hexdigest()[:16]}
        if tgt is not None and self.shots:   # the demonstrations are in every prompt: their text and file
            path = treebank_path(self.data, tgt, "xglue", self.shots_split)  # type: ignore[arg-type]
            sig["demos"] = {"file": f"{path.parent.name}/{path.name}", "file_sha256": file_sha256(path)[:16],
                            "sha256": hashlib.sha256(self.demos(tgt).encode()).hexdigest()[:16]}
        return sig

"""Translation (SPEC §4): FLORES-200/101 directories, plain line-aligned files, or hub datasets.

Default template (ours, zero-shot)::

    Translate the following sentence from {src_name} to {tgt_name}.
    {src_name}: {source}
    {tgt_name}:

The answer starts after ``{tgt_name}:``; the space before it belongs to the answer (boundary.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

from ..errors import InputError, MissingDependencyError, PrettyAlignError
from ..languages import Language, get_language
from . import TASKS
from .base import Example, Task, check_template, first_answer_line

QUOTE_PAIRS = ('""', "“”", "「」")   # quotes around a whole answer line, dropped by clean_answer

DEFAULT_TEMPLATE = ("Translate the following sentence from {src_name} to {tgt_name}.\n"
                    "{src_name}: {source}\n{tgt_name}:")
FIELDS = {"src_name", "tgt_name", "source", "src", "tgt"}


def read_lines(path: Path, *, what: str) -> list[str]:
    """Lines of a one-sentence-per-line file; a missing file or an empty line is an InputError."""
    if not path.is_file():
        raise InputError(f"{what} file not found; expected one sentence per line", path=str(path))
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            raise InputError(f"empty line in {what} file; every line must hold one sentence", path=str(path), line=i)
    return lines


@TASKS.register("translation")
class TranslationTask(Task):
    # spBLEU only with its SPM model local, COMET only with a checkpoint (Metric.for_report)
    metrics = (("BLEU", "bleu"), ("chrF++", "chrf++"), ("spBLEU", "spbleu"), ("off-target %", "off-target"),
               ("COMET", "comet"))
    ratio_metrics = ("BLEU", "chrF++")

    def __init__(self, source: str = "eng_Latn", *, flores: str | None = None, split: str = "dev",
                 src_file: str | None = None, ref_file: str | None = None, hub: str | None = None,
                 texts: list[str] | None = None, n: int | None = None, offset: int = 0, template: str = DEFAULT_TEMPLATE) -> None:
        self.src = get_language(source, field="task.source")
        if split not in {"dev", "devtest"} and flores:
            raise InputError(f"split '{split}' is not 'dev' or 'devtest'", field="task.split")
        if sum(x is not None for x in (flores, src_file, hub, texts)) != 1:
            raise InputError("give exactly one data source: flores (a FLORES directory), src_file (+ref_file), "
                             "hub (a dataset id) or texts (in memory)", field="task")
        self.flores, self.split, self.src_file, self.ref_file, self.hub = flores, split, src_file, ref_file, hub
        self.texts = texts
        self.n, self.offset = n, offset
        self.template = check_template(template, FIELDS, {"source"})

    # -- data ---------------------------------------------------------------------------------
    def _flores_path(self, lang: Language) -> Path:
        root = Path(self.flores)  # type: ignore[arg-type]
        if not root.is_dir():
            raise InputError("FLORES directory not found; point task.flores (or --flores, or PRETTY_DATA) at a "
                             "directory holding dev/ and devtest/, e.g. ../shared/data/flores200",
                             path=str(root))
        for name in (f"{lang.code}.{self.split}", f"{lang.iso3}.{self.split}"):  # FLORES-200, FLORES-101
            if (root / self.split / name).is_file():
                return root / self.split / name
        return root / self.split / f"{lang.code}.{self.split}"

    def _pairs(self, tgt: Language) -> tuple[list[str], list[str] | None, str]:
        if self.flores:
            sp, rp = self._flores_path(self.src), self._flores_path(tgt)
            return read_lines(sp, what="source"), read_lines(rp, what="reference"), f"flores/{self.split}"
        if self.src_file:
            sp = Path(self.src_file.format(src=self.src.code, tgt=tgt.code))
            src = read_lines(sp, what="source")
            ref = None
            if self.ref_file:
                rp = Path(self.ref_file.format(src=self.src.code, tgt=tgt.code))
                ref = read_lines(rp, what="reference")
                if len(ref) != len(src):
                    raise InputError(f"reference has {len(ref)} lines but the source {sp} has {len(src)}; "
                                     "files must be line-aligned", path=str(rp))
            return src, ref, f"file/{sp.name}"
        if self.texts is not None:
            for i, text in enumerate(self.texts, 1):
                if not text.strip():
                    raise InputError("empty source text", path="<input>", line=i)
            return list(self.texts), None, "input"
        return self._hub_pairs(tgt)

    def _hub_pairs(self, tgt: Language) -> tuple[list[str], list[str], str]:
        try:
            import datasets
        except ImportError:
            raise MissingDependencyError("hub datasets", "'pretty-align[datasets]'") from None
        try:
            ds = datasets.load_dataset(self.hub, f"{self.src.code}-{tgt.code}", split=self.split)
        except Exception as e:  # hub unreachable, gated, unknown config...
            raise PrettyAlignError(f"could not load hub dataset '{self.hub}' ({self.src.code}-{tgt.code}): {e}; "
                                   "use task.flores with a local copy instead") from e
        return (list(ds[f"sentence_{self.src.code}"]), list(ds[f"sentence_{tgt.code}"]), f"hub/{self.hub}")

    def examples(self, tgt: Language) -> Iterator[Example]:
        src, ref, origin = self._pairs(tgt)
        if ref is not None and len(ref) != len(src):
            raise InputError(f"{origin}: {self.src.code} has {len(src)} lines, {tgt.code} has {len(ref)}")
        stop = len(src) if self.n is None else min(len(src), self.offset + self.n)
        for i in range(self.offset, stop):
            yield Example(f"{origin}/{i}", src[i], ref[i] if ref is not None else None, self.src, tgt)

    # -- prompts ------------------------------------------------------------------------------
    def render(self, example: Example, source: str | None = None) -> str:
        return self.template.format(src_name=example.src.name, tgt_name=example.tgt.name,
                                    src=example.src.code, tgt=example.tgt.code,
                                    source=example.source if source is None else source)

    def source_language(self, tgt: Language) -> Language:
        return self.src

    def clean_answer(self, text: str, example: Example) -> str:
        """``first_answer_line`` without the echoed target label ("German: ..."), and without quotes
        around the whole line."""
        text = first_answer_line(text, example.tgt.name + ":")
        for left, right in QUOTE_PAIRS:
            if len(text) > 2 and text[0] == left and text[-1] == right:
                text = text[1:-1].strip()
        return text

    def streamable(self, partial: str, example: Example, *, one_line: bool) -> str:
        """See ``Task.streamable``. Held back: everything while the answer line could still turn out
        to be a preamble (without ``one_line``, a line is certain once complete and not ending in a
        colon), become the echoed label, or lose a pair of quotes (an opening quote: until the end)."""
        label = example.tgt.name + ":"
        lines = [ln.strip() for ln in partial.strip().split("\n")]
        if not one_line:
            complete = [ln for ln in lines[:-1] if ln]
            answer = next((ln for ln in complete if not ln.endswith((":", "："))), None)
            return self.clean_answer(answer, example) if answer is not None else ""
        line = lines[0]
        if label.startswith(line):
            return ""
        if line.startswith(label):
            line = line[len(label):].strip()
        if line[:1] in {left for left, _ in QUOTE_PAIRS}:
            return ""
        return line

    def signature(self, tgt: Language | None = None) -> dict:
        return {"task": "translation", "template_sha256": hashlib.sha256(self.template.encode()).hexdigest()[:16],
                "template": self.template, "split": self.split}

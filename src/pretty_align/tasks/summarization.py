"""Cross-lingual summarization (SPEC §4): CrossSum JSONL and XL-Sum JSONL.

Default template (ours, zero-shot)::

    Summarize the following {src_name} article in {tgt_name}.
    Article: {article}
    Summary:

Data (``task.data``, a path pattern with ``{src}``/``{tgt}`` (FLORES codes) and
``{src_iso1}``/``{tgt_iso1}``, e.g. ``.../xlsum/{tgt_iso1}_xlsum_100sample.jsonl``):

* XL-Sum (``format = "xlsum"``): ``id``, ``label`` (the summary), ``prompts[0].text`` (the article),
  ``metadata``; some fields are Python-literal strings (``"[{'text': ...}]"``) and are parsed with
  ``ast.literal_eval``. XL-Sum is monolingual: the article's language is the target language, so
  ``task.source = "same"`` (the default for this format).
* CrossSum (``format = "crosssum"``): ``text`` (article in the source language) and ``summary`` (in the
  target language), one file per language pair.

Articles longer than ``task.max_prompt_tokens`` are truncated by the answerer (with a warning) and
every truncated row is counted in the report, never silently.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError
from ..languages import Language, get_language
from . import TASKS
from .base import Example, Task, check_template, first_answer_line

DEFAULT_TEMPLATE = "Summarize the following {src_name} article in {tgt_name}.\nArticle: {article}\nSummary:"
_FIELDS = {"src_name", "tgt_name", "article", "source", "src", "tgt"}
SAME = "same"


def _literal(value: Any) -> Any:
    """XL-Sum stores some fields as Python-literal strings; decode those, leave the rest."""
    if isinstance(value, str) and value[:1] in "[{" and value[-1:] in "]}":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def read_jsonl(path: Path, fmt: str) -> list[tuple[str, str, str, dict]]:
    """(id, article, summary, meta) of every line; errors name the file, line and field."""
    if not path.is_file():
        raise InputError(f"{fmt} file not found", path=str(path))
    out = []
    for no, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise InputError(f"not valid JSON: {e}", path=str(path), line=no) from None
        if not isinstance(row, dict):
            raise InputError("expected a JSON object per line", path=str(path), line=no)
        row = {k: _literal(v) for k, v in row.items()}
        if fmt == "xlsum":
            prompts = row.get("prompts")
            article = prompts[0].get("text") if isinstance(prompts, list) and prompts and \
                isinstance(prompts[0], dict) else None
            summary, ident, meta = row.get("label"), row.get("id", str(no)), row.get("metadata") or {}
            where = "prompts[0].text"
        else:
            article, summary, ident, meta = row.get("text"), row.get("summary"), row.get("id", str(no)), {}
            where = "text"
        if not isinstance(article, str) or not article.strip():
            raise InputError(f"missing or empty article (field '{where}')", path=str(path), line=no)
        if not isinstance(summary, str) or not summary.strip():
            raise InputError(f"missing or empty summary (field '{'label' if fmt == 'xlsum' else 'summary'}')",
                             path=str(path), line=no)
        out.append((str(ident), article.strip(), summary.strip(), meta if isinstance(meta, dict) else {}))
    return out


@TASKS.register("summarization")
class SummarizationTask(Task):
    metrics = (("ROUGE-1", "rouge1"), ("ROUGE-2", "rouge2"), ("ROUGE-L", "rougeL"), ("off-target %", "off-target"))
    ratio_metrics = ("ROUGE-1", "ROUGE-L")

    def __init__(self, source: str = SAME, *, data: str | None = None, format: str = "xlsum", n: int | None = None,
                 offset: int = 0, template: str = DEFAULT_TEMPLATE) -> None:
        if format not in {"xlsum", "crosssum"}:
            raise InputError(f"format '{format}' is not 'xlsum' or 'crosssum'", field="task.format")
        if not data:
            raise InputError("summarization needs task.data: a JSONL path pattern such as "
                             "'.../xlsum/{tgt_iso1}_xlsum_100sample.jsonl'", field="task.data")
        if source == SAME and format == "crosssum":
            raise InputError("CrossSum pairs need a source language (task.source)", field="task.source")
        self.fixed_src = None if source == SAME else get_language(source, field="task.source")
        self.data, self.format, self.n, self.offset = data, format, n, offset
        self.template = check_template(template, _FIELDS, {"article", "source"})

    def source_language(self, tgt: Language) -> Language:
        return self.fixed_src or tgt

    def data_path(self, tgt: Language) -> Path:
        src = self.source_language(tgt)
        return Path(self.data.format(src=src.code, tgt=tgt.code, src_iso1=src.iso1, tgt_iso1=tgt.iso1))

    def check_data(self, targets: list[Language]) -> None:
        paths = {t.code: self.data_path(t) for t in targets}
        missing = [f"{code}: {path}" for code, path in paths.items() if not path.is_file()]
        if missing:
            hint = (" (CrossSum: one JSONL file per language pair with 'text' and 'summary'; link or rename your "
                    "copy to match the pattern)") if self.format == "crosssum" else ""
            raise InputError("no data file for " + "; ".join(missing) + hint, field="task.data")

    def examples(self, tgt: Language) -> Iterator[Example]:
        src, path = self.source_language(tgt), self.data_path(tgt)
        rows = read_jsonl(path, self.format)
        stop = len(rows) if self.n is None else min(len(rows), self.offset + self.n)
        for ident, article, summary, meta in rows[self.offset:stop]:
            yield Example(f"{self.format}/{path.name}/{ident}", article, summary, src, tgt, meta)

    def render(self, example: Example, source: str | None = None) -> str:
        article = example.source if source is None else source
        return self.template.format(src_name=example.src.name, tgt_name=example.tgt.name, src=example.src.code,
                                    tgt=example.tgt.code, article=article, source=article)

    def clean_answer(self, text: str, example: Example) -> str:
        return first_answer_line(text, "Summary:")

    def signature(self, tgt: Language | None = None) -> dict:
        return {"task": "summarization", "format": self.format, "template": self.template,
                "template_sha256": hashlib.sha256(self.template.encode()).hexdigest()[:16]}

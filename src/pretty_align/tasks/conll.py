"""CoNLL-U reading and POS-answer parsing for the POS tagging task (XGLUE POS = UD v2.5 UPOS).

Reading (``read_conllu``), with the ``conllu`` package:

* a sentence is its *syntactic words* (integer ids) with their UPOS tags: a multiword token such as
  French "du" (``3-4  du``) contributes its words "de" and "le", not the surface form;
* empty nodes (``8.1``, enhanced dependencies) are not words and are skipped;
* a malformed line or a word without a valid UPOS tag is an ``InputError`` naming ``file:line``.

Parsing a model's answer (``parse_tags``) never raises: the answer is aligned to the gold words and
every gold word gets a predicted tag or ``None``; missing, extra, garbled and non-UPOS items are
counted (the task scores them as wrong).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
        "SCONJ", "SYM", "VERB", "X")
_UPOS_SET = frozenset(UPOS)


@dataclass(frozen=True)
class TaggedSentence:
    sent_id: str
    text: str
    words: tuple[str, ...]
    tags: tuple[str, ...]
    origin: str            # "file:line" of the sentence's first line


def read_conllu(path: str | Path) -> list[TaggedSentence]:
    """All sentences of a CoNLL-U file, in order (see the module docstring for the rules)."""
    import conllu

    p = Path(path)
    if not p.is_file():
        raise InputError("CoNLL-U file not found", path=str(p))
    out = []
    for first, block in _blocks(p.read_text(encoding="utf-8")):
        bad = _bad_line(block, first)
        if bad is not None:  # conllu itself accepts short lines, filling the missing fields with None
            raise InputError("malformed CoNLL-U line: expected 10 tab-separated fields", path=str(p), line=bad)
        try:
            [sent] = conllu.parse(block + "\n\n")
        except Exception as e:  # conllu raises ParseException and ValueError subclasses
            raise InputError(f"malformed CoNLL-U sentence: {e}", path=str(p), line=first) from None
        words, tags = [], []
        for tok in sent:
            if not isinstance(tok["id"], int):
                continue   # multiword token range (the words follow) or empty node
            if tok["upos"] not in _UPOS_SET:
                at = next((first + i for i, line in enumerate(block.split("\n"))
                           if line.startswith(f"{tok['id']}\t")), first)
                raise InputError(f"word {tok['id']} ({tok['form']!r}) has UPOS {tok['upos']!r}; expected one of "
                                 f"{', '.join(UPOS)}", path=str(p), line=at)
            words.append(tok["form"])
            tags.append(tok["upos"])
        if words:
            meta = sent.metadata
            out.append(TaggedSentence(meta.get("sent_id", f"{p.name}:{first}"), meta.get("text", " ".join(words)),
                                      tuple(words), tuple(tags), f"{p}:{first}"))
    return out


def _blocks(text: str) -> list[tuple[int, str]]:
    """(1-based number of its first line, text) of every sentence block; blank lines separate them."""
    out, lines, start = [], [], 1
    for no, line in enumerate(text.split("\n"), 1):
        if line.strip():
            if not lines:
                start = no
            lines.append(line)
        elif lines:
            out.append((start, "\n".join(lines)))
            lines = []
    if lines:
        out.append((start, "\n".join(lines)))
    return out


def _bad_line(block: str, first: int) -> int | None:
    """The first non-comment line of ``block`` without 10 tab-separated fields, or None."""
    for i, line in enumerate(block.split("\n")):
        if line and not line.startswith("#") and len(line.split("\t")) != 10:
            return first + i
    return None


@dataclass
class ParsedTags:
    tags: list[str | None]          # one per gold word; None = no usable prediction
    missing: int = 0                # gold words the answer did not tag
    extra: int = 0                  # answer items that match no gold word
    invalid: int = 0                # items whose tag is not a UPOS tag
    garbled: int = 0                # items that are neither "word/TAG" nor a bare tag
    notes: list[str] = field(default_factory=list)


_ITEM = re.compile(r"^(?P<word>.+)[/_](?P<tag>[A-Za-z]+)$")


def parse_tags(answer: str, gold_words: list[str] | tuple[str, ...], *, fmt: str = "word/tag") -> ParsedTags:
    """Align ``answer`` to the gold words. ``fmt`` is ``"word/tag"`` (``Je/PRON sens/VERB ...``;
    words are matched to the gold words by sequence alignment, so a skipped or an added word shifts
    nothing) or ``"tags"`` (``PRON VERB ...``, matched by position). Tags are upper-cased; anything
    that is not one of the 17 UPOS tags counts as invalid and is scored wrong."""
    if fmt not in {"word/tag", "tags"}:
        raise InputError(f"unknown POS answer format {fmt!r}; expected 'word/tag' or 'tags'", field="format")
    items = answer.split()
    n = len(gold_words)
    res = ParsedTags([None] * n)
    if fmt == "tags":
        for i, item in enumerate(items):
            tag = item.strip(".,;:").upper()
            if i >= n:
                res.extra += 1
            elif tag in _UPOS_SET:
                res.tags[i] = tag
            else:
                res.invalid += 1
        res.missing = max(0, n - len(items))
        return res
    pairs: list[tuple[str, str | None, bool]] = []     # (word, tag or None, garbled?)
    for item in items:
        m = _ITEM.match(item)
        if m is None:
            res.garbled += 1
            pairs.append((item, None, True))
            continue
        tag = m.group("tag").upper()
        if tag not in _UPOS_SET:
            res.invalid += 1
            tag = None
        pairs.append((m.group("word"), tag, False))
    matcher = difflib.SequenceMatcher(a=[w for w, _, _ in pairs], b=list(gold_words), autojunk=False)
    used: set[int] = set()
    for a0, b0, size in matcher.get_matching_blocks():
        for k in range(size):
            res.tags[b0 + k] = pairs[a0 + k][1]
            used.add(a0 + k)
    res.extra = sum(1 for i, (_, _, garbled) in enumerate(pairs) if i not in used and not garbled)
    res.missing = n - len(used)
    return res

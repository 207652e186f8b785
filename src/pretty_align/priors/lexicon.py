"""Bilingual lexicons induced from parallel text (issue 15.2), for pseudo priors where no dictionary
such as MUSE exists.

``induce_lexicon`` word-aligns line-aligned sentence pairs with eflomal (a Bayesian IBM-style
aligner from PyPI, ``pip install eflomal``), keeps the links that both directions agree on
(intersection), and counts word pairs. A source word's translations are its aligned target words
seen at least ``min_count`` times, most frequent first, down to ``min_share`` of the top one's
count. The result is a MUSE-format file (``source<TAB>target`` per line, best first), so it plugs
into every dictionary-based prior; its sha256 enters the prior's signature like any dictionary's.

Tokens are lower-cased words (``\\w+``); scripts written without spaces (Chinese, Japanese, Thai...)
are split into characters, which aligns but gives character "words". The lexicon is cached under
the pretty-align cache, keyed by the content of both files, the languages, the parameters and the
eflomal version: the same input is aligned once.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

import regex

from ..errors import InputError, MissingDependencyError
from ..languages import Language
from ..models import cache_dir

log = logging.getLogger(__name__)
WORD = regex.compile(r"\w+")


def words(line: str, lang: Language) -> list[str]:
    """Lower-cased word tokens of ``line`` (characters of word runs for unspaced scripts)."""
    found = WORD.findall(line.lower())
    return [ch for w in found for ch in w] if not lang.spaced else found


def _read(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise InputError(f"{what} file not found; expected one sentence per line, line-aligned with the other",
                         path=str(path))
    return path.read_text(encoding="utf-8").splitlines()


def _links(path: Path) -> Iterable[list[tuple[int, int]]]:
    for line in path.read_text(encoding="utf-8").splitlines():
        yield [tuple(int(x) for x in pair.split("-")) for pair in line.split()]   # type: ignore[misc]


def lexicon_key(src_file: Path, tgt_file: Path, src: Language, tgt: Language, min_count: int,
                min_share: float) -> str:
    from importlib.metadata import version   # eflomal's version is part of the key

    h = hashlib.sha256()
    for p in (src_file, tgt_file):
        h.update(hashlib.sha256(p.read_bytes()).digest())
    h.update(f"{src.code}|{tgt.code}|{min_count}|{min_share}|eflomal-{version('eflomal')}".encode())
    return h.hexdigest()[:16]


def induce_lexicon(src_file: str | Path, tgt_file: str | Path, src: Language, tgt: Language, *,
                   min_count: int = 2, min_share: float = 0.2, out: str | Path | None = None) -> Path:
    """Induce (or take from the cache) the lexicon of ``src_file`` -> ``tgt_file``; returns the
    MUSE-format file (``out`` when given: a copy of the cached one)."""
    try:
        import eflomal
    except ImportError:
        raise MissingDependencyError("inducing a lexicon from parallel text", "eflomal") from None
    if min_count < 1 or not 0 < min_share <= 1:
        raise InputError("min_count must be >= 1 and min_share in (0, 1]", field="min_count")
    src_file, tgt_file = Path(src_file), Path(tgt_file)
    src_lines, tgt_lines = _read(src_file, "source"), _read(tgt_file, "target")
    if len(src_lines) != len(tgt_lines):
        raise InputError(f"{len(src_lines)} source lines but {len(tgt_lines)} target lines; the files must be "
                         "line-aligned", path=str(tgt_file))
    cached = cache_dir() / "lexicons" / f"{lexicon_key(src_file, tgt_file, src, tgt, min_count, min_share)}.tsv"
    if not cached.is_file():
        pairs = [(words(a, src), words(b, tgt)) for a, b in zip(src_lines, tgt_lines)]
        pairs = [(a, b) for a, b in pairs if a and b]   # eflomal needs a token on each side
        if not pairs:
            raise InputError("no sentence pair has words on both sides", path=str(src_file))
        log.info("aligning %d sentence pairs with eflomal (cached in %s)", len(pairs), cached)
        counts: dict[str, Counter] = defaultdict(Counter)
        with tempfile.TemporaryDirectory() as tmp:
            fwd, rev = Path(tmp) / "fwd", Path(tmp) / "rev"
            eflomal.Aligner().align([" ".join(a) for a, _ in pairs], [" ".join(b) for _, b in pairs],
                                    links_filename_fwd=str(fwd), links_filename_rev=str(rev))
            for (a, b), f, r in zip(pairs, _links(fwd), _links(rev)):
                for i, j in set(f) & set(r):   # intersection: links both directions agree on
                    counts[a[i]][b[j]] += 1
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = cached.with_suffix(".tmp")
        with tmp_out.open("w", encoding="utf-8") as fh:
            for word in sorted(counts):
                ranked = counts[word].most_common()
                top = ranked[0][1]
                for target, n in ranked:
                    if n >= min_count and n >= min_share * top:
                        fh.write(f"{word}\t{target}\n")
        tmp_out.replace(cached)
    if out is None:
        return cached
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(cached.read_bytes())
    return out


def precision_at_1(induced: dict[str, list[str]], gold: dict[str, list[str]]) -> tuple[float, int]:
    """(share of source words in both lexicons whose first induced translation is a gold one, how many)."""
    shared = [w for w in induced if w in gold and induced[w]]
    if not shared:
        return 0.0, 0
    hits = sum(induced[w][0] in set(gold[w]) for w in shared)
    return 100.0 * hits / len(shared), len(shared)


def read_lexicon(path: str | Path) -> dict[str, list[str]]:
    """A MUSE-format file as {source word: [targets, in file order]} (lower-cased sources)."""
    out: dict[str, list[str]] = defaultdict(list)
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) >= 2:
            out[parts[0].lower()].append(parts[1])
    return dict(out)

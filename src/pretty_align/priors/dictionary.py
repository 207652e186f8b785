"""Bilingual dictionaries for the ``pseudo`` and ``random`` priors (SPEC §3).

File format: one pair per line, ``source<TAB>target`` (MUSE, Wiktionary TSV). A line without a tab
is split on whitespace and must then have exactly two fields. Blank lines are skipped.

Invariants of a loaded ``BilingualDictionary``:

* keys are lower-cased, stripped source entries; ``lookup`` lower-cases its argument the same way;
* each key's targets keep file order and hold no duplicates (after any script conversion);
* for a ``zho_Hans`` target, every target has been converted Traditional -> Simplified (MUSE en-zh
  is mostly Traditional; a Traditional prior would steer a Simplified answer the wrong way);
* ``sha256`` is the hash of the file's bytes, so result signatures change when the file does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Mapping, Union

from ..errors import InputError
from ..languages import Language, get_language, in_script

log = logging.getLogger(__name__)

#: a path (pattern) or a {FLORES code: path} table, as the ``dictionary`` prior parameter takes it
DictionarySpec = Union[str, "os.PathLike[str]", Mapping[str, str]]

_EXPECTED = "one 'source<TAB>target' pair per line (or exactly two whitespace-separated fields)"
_MAX_REPORTED = 10

# (resolved path, tgt code, strict, mtime_ns, size) -> dictionary; stat fields make an edited file reload.
_CACHE: dict[tuple, "BilingualDictionary"] = {}


def _same(a: str, b: str) -> bool:
    """An identity pair (``was -> was``): MUSE noise, never a translation."""
    return a.casefold() == b.casefold()


class BilingualDictionary:
    """Source word -> ordered, de-duplicated target words. Build with ``load``."""

    def __init__(self, entries: dict[str, list[str]], *, path: str, sha256: str,
                 malformed_count: int = 0, malformed_lines: list[int] | None = None,
                 converted_count: int = 0) -> None:
        self.entries = entries
        self.path = path
        self.sha256 = sha256
        self.malformed_count = malformed_count
        self.malformed_lines = malformed_lines or []   # first 10 malformed line numbers, 1-based
        self.converted_count = converted_count         # targets changed by Traditional->Simplified
        self._by_script: dict[str, list[str]] = {}

    @classmethod
    def load(cls, path: str | os.PathLike, *, tgt: Language | None = None,
             strict: bool = False) -> "BilingualDictionary":
        """Parse ``path`` (cached per file, target language and strictness).

        Malformed lines raise ``InputError`` (file, line, what was expected) when ``strict``;
        otherwise they are skipped, counted and reported in one warning.
        """
        p = Path(path)
        try:
            st = p.stat()
        except OSError:
            raise InputError(f"dictionary file not found; expected a file with {_EXPECTED}",
                             path=str(path)) from None
        key = (str(p.resolve()), tgt.code if tgt else None, strict, st.st_mtime_ns, st.st_size)
        if key not in _CACHE:
            _CACHE[key] = cls._parse(p, tgt, strict)
        return _CACHE[key]

    @classmethod
    def _parse(cls, p: Path, tgt: Language | None, strict: bool) -> "BilingualDictionary":
        try:
            data = p.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read dictionary ({e.strerror}); expected a readable file with {_EXPECTED}",
                             path=str(p)) from None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise InputError("not valid UTF-8; expected a UTF-8 text file",
                             path=str(p), line=data[: e.start].count(b"\n") + 1) from None
        pairs: list[tuple[str, str]] = []
        bad: list[int] = []
        for no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
                if strict:
                    raise InputError(f"malformed line {line!r}; expected {_EXPECTED}", path=str(p), line=no)
                bad.append(no)
                continue
            pairs.append((fields[0].strip().lower(), fields[1].strip()))
        if bad:
            log.warning("%s: skipped %d malformed line(s) (first at line(s) %s); expected %s",
                        p, len(bad), ", ".join(map(str, bad[:_MAX_REPORTED])), _EXPECTED)
        converted = 0
        if tgt is not None and tgt.code == "zho_Hans":
            from opencc import OpenCC
            # One convert() call over all distinct targets: ~40x faster than one call per word.
            # Targets never contain a newline, and no conversion phrase spans one.
            uniq = list(dict.fromkeys(t for _, t in pairs))
            simp = dict(zip(uniq, OpenCC("t2s").convert("\n".join(uniq)).split("\n")))
            converted = sum(1 for _, t in pairs if simp[t] != t)
            pairs = [(s, simp[t]) for s, t in pairs]
        entries: dict[str, list[str]] = {}
        for s, t in pairs:
            targets = entries.setdefault(s, [])
            if t not in targets:
                targets.append(t)
        return cls(entries, path=str(p), sha256=hashlib.sha256(data).hexdigest(),
                   malformed_count=len(bad), malformed_lines=bad[:_MAX_REPORTED], converted_count=converted)

    def __len__(self) -> int:
        """Number of distinct (lower-cased) source entries."""
        return len(self.entries)

    def lookup(self, word: str) -> list[str]:
        """All targets of ``word`` (case-insensitive), in file order; [] when absent."""
        return list(self.entries.get(word.strip().lower(), ()))

    def targets_in_script(self, word: str, script: str, skip_identity: bool = True) -> list[str]:
        """Targets of ``word`` written in ``script`` (``languages.in_script``), identity pairs
        dropped when ``skip_identity``."""
        return [t for t in self.lookup(word)
                if in_script(t, script) and not (skip_identity and _same(t, word))]

    def all_targets(self, script: str) -> list[str]:
        """Every distinct target in ``script`` that occurs at least once as a non-identity
        translation, in file order (deterministic, for the ``random`` ablation)."""
        if script not in self._by_script:
            seen: dict[str, None] = {}
            for s, targets in self.entries.items():
                for t in targets:
                    if not _same(t, s) and in_script(t, script):
                        seen.setdefault(t, None)
            self._by_script[script] = list(seen)
        return self._by_script[script]


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


INDUCE = "induce:"


def resolve_path(spec: DictionarySpec, src: Language, tgt: Language,
                 *, field: str = "priors.dictionary") -> Path:
    """The dictionary file for ``src -> tgt``: a mapping {FLORES code: path}, or a path pattern
    with ``{tgt_iso1}``, ``{src_iso1}``, ``{tgt}``, ``{src}``, ``{tgt_iso3}``, ``{src_iso3}``; a
    path ``induce:SRC_FILE|TGT_FILE`` is a lexicon induced from that parallel text (``lexicon``).
    Errors name ``field``; a file that does not exist is an error here, naming the resolved path."""
    if isinstance(spec, Mapping):
        for code in spec:
            get_language(code, field=field)  # a typo in a key is reported as such, not as "missing"
        if tgt.code not in spec:
            raise InputError(f"no dictionary configured for {tgt.code}; configured: "
                             + (", ".join(sorted(spec)) or "none"), field=field)
        path = str(spec[tgt.code])
    else:
        values = {"tgt_iso1": tgt.iso1, "src_iso1": src.iso1, "tgt": tgt.code, "src": src.code,
                  "tgt_iso3": tgt.iso3, "src_iso3": src.iso3}
        unknown = [n for n in _PLACEHOLDER.findall(str(spec)) if n not in values]
        if unknown:
            raise InputError(f"unknown placeholder {{{unknown[0]}}} in '{spec}'; expected one of "
                             + ", ".join("{" + n + "}" for n in values), field=field)
        path = _PLACEHOLDER.sub(lambda m: values[m.group(1)], str(spec))
    if path.startswith(INDUCE):   # induce:SRC_FILE|TGT_FILE: a lexicon aligned from parallel text (cached)
        from .lexicon import induce_lexicon

        files = path[len(INDUCE):].split("|")
        if len(files) != 2 or not all(files):
            raise InputError(f"'{path}' should be induce:SOURCE_FILE|TARGET_FILE (line-aligned sentences)",
                             field=field)
        return induce_lexicon(files[0], files[1], src, tgt)
    if not Path(path).is_file():
        raise InputError(f"dictionary for {src.code} -> {tgt.code} not found; expected a file "
                         f"with {_EXPECTED}", path=path, field=field)
    return Path(path)

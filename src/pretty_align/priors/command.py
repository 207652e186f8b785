"""``command`` prior: a refined prior from an external program reading stdin (e.g. Apertium).

``command`` is a command line with language placeholders (``apertium {src_iso3}-{tgt_iso3}``) or a
table {target FLORES code: command line}. Each example runs the command expanded for its own
(source, target) pair, so one prior serves a multi-target run. A command that names no target
(``apertium eng-spa``) is refused by ``check_languages`` when a run has several targets.

Per batch, each distinct expanded command runs once with all its sources, one per line; the program
must print one line per input line (Apertium does). If the line count differs, each source is sent
on its own instead and its output lines are joined with spaces: one source, one output line.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import subprocess
from typing import Mapping, Sequence

from ..boundary import Tokenizer
from ..errors import InputError, PrettyAlignError
from ..languages import Language, get_language
from . import PRIORS
from .base import Prior, PriorItem, PriorResult

FIELD = "priors.command"
PLACEHOLDERS = ("src", "tgt", "src_iso1", "tgt_iso1", "src_iso3", "tgt_iso3")
_TARGET_PLACEHOLDERS = {"tgt", "tgt_iso1", "tgt_iso3"}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
CommandSpec = str | Mapping[str, str]


def _placeholders(command: str) -> list[str]:
    """The placeholder names in ``command``; an unknown one is an InputError naming the field."""
    names = _PLACEHOLDER.findall(command)
    unknown = [n for n in names if n not in PLACEHOLDERS]
    if unknown:
        raise InputError(f"unknown placeholder {{{unknown[0]}}} in '{command}'; allowed: "
                         + ", ".join("{" + n + "}" for n in PLACEHOLDERS), field=FIELD)
    return names


def _split(line: str) -> list[str]:
    """``line`` as argv (shell quoting rules, no shell); at least one word, else an InputError."""
    try:
        argv = shlex.split(line)
    except ValueError as e:
        raise InputError(f"cannot parse the command line '{line}': {e}", field=FIELD) from None
    if not argv:
        raise InputError(f"empty command line '{line}'", field=FIELD)
    return argv


def expand(command: str, src: Language, tgt: Language) -> str:
    """``command`` with its placeholders replaced by the codes of ``src`` and ``tgt``."""
    values = {"src": src.code, "tgt": tgt.code, "src_iso1": src.iso1, "tgt_iso1": tgt.iso1,
              "src_iso3": src.iso3, "tgt_iso3": tgt.iso3}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], command)


@PRIORS.register("command")
class CommandPrior(Prior):
    """Params: ``command`` (a command line with placeholders {src} {tgt} {src_iso1} {tgt_iso1}
    {src_iso3} {tgt_iso3}, or a {target FLORES code: command line} table), ``timeout`` (seconds per
    process).

    Invariants: every placeholder and table key is valid once constructed; an executable is checked
    and hashed once per ``argv[0]`` (at construction when ``argv[0]`` has no placeholder, else at
    first expansion), so the hash in a signature is the program that produced the rows."""

    def __init__(self, k: int = 1, *, command: CommandSpec | None = None, timeout: float = 60.0,
                 **params) -> None:
        super().__init__(k=k, **params)
        if not command:
            raise InputError("the command prior needs `command`, e.g. \"apertium {src_iso3}-{tgt_iso3}\" "
                             "or a {target code: command} table", field=FIELD)
        if isinstance(command, Mapping):
            for code, line in command.items():
                get_language(code, field=FIELD)
                if not isinstance(line, str) or not line.strip():
                    raise InputError(f"the command for {code} must be a non-empty string", field=FIELD)
            templates = list(command.values())
        elif isinstance(command, str):
            templates = [command]
        else:
            raise InputError(f"expected a command line or a {{target code: command}} table, got "
                             f"{type(command).__name__}", field=FIELD)
        self.command: str | dict[str, str] = command if isinstance(command, str) else dict(command)
        self.timeout = timeout
        self._sha256: dict[str, str] = {}  # argv[0] as written -> sha256 of the executable (16 hex)
        for t in templates:
            _placeholders(t)
            argv = _split(t)
            if not _placeholders(argv[0]):
                self._exe_sha256(argv[0])

    def _exe_sha256(self, name: str) -> str:
        """sha256 (16 hex) of the executable ``name`` resolves to on PATH; checked once per name."""
        if name not in self._sha256:
            exe = shutil.which(name)
            if exe is None:
                raise InputError(f"command not found: '{name}' (for Apertium: apt-get install apertium "
                                 "apertium-eng-spa)", field=FIELD)
            with open(exe, "rb") as f:
                self._sha256[name] = hashlib.sha256(f.read()).hexdigest()[:16]
        return self._sha256[name]

    @property
    def names_target(self) -> bool:
        """True when the command differs per target: a table, or a target placeholder."""
        return not isinstance(self.command, str) or bool(_TARGET_PLACEHOLDERS & set(_placeholders(self.command)))

    def command_for(self, src: Language, tgt: Language) -> str:
        """The expanded command line for ``src -> tgt``; its executable is checked and hashed."""
        if isinstance(self.command, str):
            template = self.command
        elif tgt.code in self.command:
            template = self.command[tgt.code]
        else:
            raise InputError(f"no command configured for {tgt.code}; configured: "
                             + ", ".join(sorted(self.command)), field=FIELD)
        line = expand(template, src, tgt)
        self._exe_sha256(_split(line)[0])
        return line

    def check_languages(self, pairs: Sequence[tuple[Language, Language]]) -> None:
        """Refuse a command that names no target for a run with several targets, and expand (so
        check) the command of every pair."""
        targets = sorted({tgt.code for _, tgt in pairs})
        if len(targets) > 1 and not self.names_target:
            raise InputError(f"the command '{self.command}' is the same for every target, but the run has "
                             f"{len(targets)} targets ({', '.join(targets)}); use placeholders such as "
                             "\"apertium {src_iso3}-{tgt_iso3}\" or \"{tgt_iso1}\", or a per-target table "
                             "{target code: command}", field=FIELD)
        for src, tgt in pairs:
            self.command_for(src, tgt)

    def _run(self, line: str, text: str) -> str:
        try:
            proc = subprocess.run(_split(line), input=text, capture_output=True, text=True,
                                  timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise PrettyAlignError(f"prior command '{line}' took longer than {self.timeout}s") from None
        if proc.returncode != 0:
            raise PrettyAlignError(f"prior command '{line}' exited with {proc.returncode}: "
                                   f"{proc.stderr.strip()[:500]}")
        return proc.stdout

    def translate(self, sources: Sequence[str], src: Language, tgt: Language) -> list[str]:
        """One output line per source, from the command expanded for ``src -> tgt``."""
        line = self.command_for(src, tgt)
        flat = [" ".join(s.split()) for s in sources]  # one line per source
        lines = self._run(line, "\n".join(flat) + "\n").rstrip("\n").split("\n")
        if len(lines) == len(flat):
            return lines
        return [" ".join(self._run(line, s + "\n").split()) for s in flat]  # lines joined: one per source

    def build(self, items: Sequence[PriorItem], tokenizer: Tokenizer) -> list[PriorResult]:
        groups: dict[tuple[Language, Language], list[int]] = {}
        for i, it in enumerate(items):
            groups.setdefault((it.example.src, it.example.tgt), []).append(i)
        results: list[PriorResult | None] = [None] * len(items)
        for (src, tgt), idx in groups.items():
            line = self.command_for(src, tgt)
            outs = self.translate([items[i].example.source for i in idx], src, tgt)
            for i, out in zip(idx, outs):
                results[i] = self.from_text(tokenizer, items[i].prompt, out,
                                            {"strategy": "command", "command": line, "output": out[:300]},
                                            fell_back=not out.strip())
        return [r for r in results if r is not None]

    def signature(self, src: Language, tgt: Language) -> dict:
        line = self.command_for(src, tgt)
        return {"strategy": "command", "k": self.k, "command": line,
                "exe_sha256": self._exe_sha256(_split(line)[0])}

"""``command`` prior: a refined prior from an external program reading stdin (e.g. Apertium).

All sources of a batch go to one process, one per line; the program must print one line per input
line (Apertium does). If the line count differs, each source is sent on its own instead.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
from typing import Sequence

from ..boundary import Tokenizer
from ..errors import InputError, PrettyAlignError
from ..languages import Language
from . import PRIORS
from .base import Prior, PriorItem, PriorResult


@PRIORS.register("command")
class CommandPrior(Prior):
    def __init__(self, k: int = 1, *, command: str | None = None, timeout: float = 60.0, **params) -> None:
        super().__init__(k=k, **params)
        if not command:
            raise InputError("the command prior needs `command`, e.g. \"apertium eng-spa\"", field="priors.command")
        self.argv = shlex.split(command)
        self.command, self.timeout = command, timeout
        exe = shutil.which(self.argv[0])
        if exe is None:
            raise InputError(f"command not found: '{self.argv[0]}' (for Apertium: apt-get install apertium "
                             "apertium-eng-spa)", field="priors.command")
        with open(exe, "rb") as f:
            self.exe_sha256 = hashlib.sha256(f.read()).hexdigest()[:16]

    def _run(self, text: str) -> str:
        try:
            proc = subprocess.run(self.argv, input=text, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise PrettyAlignError(f"prior command '{self.command}' took longer than {self.timeout}s") from None
        if proc.returncode != 0:
            raise PrettyAlignError(f"prior command '{self.command}' exited with {proc.returncode}: "
                                   f"{proc.stderr.strip()[:500]}")
        return proc.stdout

    def translate(self, sources: Sequence[str]) -> list[str]:
        flat = [" ".join(s.split()) for s in sources]  # one line per source
        lines = self._run("\n".join(flat) + "\n").rstrip("\n").split("\n")
        if len(lines) == len(flat):
            return lines
        return [self._run(s + "\n").strip() for s in flat]

    def build(self, items: Sequence[PriorItem], tokenizer: Tokenizer) -> list[PriorResult]:
        outs = self.translate([it.example.source for it in items])
        return [self.from_text(tokenizer, it.prompt, out, {"strategy": "command", "command": self.command,
                                                           "output": out[:300]}, fell_back=not out.strip())
                for it, out in zip(items, outs)]

    def signature(self, src: Language, tgt: Language) -> dict:
        return {"strategy": "command", "k": self.k, "command": self.command, "exe_sha256": self.exe_sha256}

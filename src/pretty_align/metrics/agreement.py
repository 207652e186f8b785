"""Free-running agreement (issue 13.3): how much of the SFT model's own output a base model
reproduces when it decodes freely, with or without a prior.

The teacher-forced analysis (``analysis.decision``) asks where the SFT model's tokens rank in the
base model's distribution along the SFT answer. This asks what the base model actually writes.
Both outputs are split with the sacrebleu tokenizer BLEU uses for the target language (13a words,
or characters for Chinese, Japanese, Thai...), so the figure does not depend on either model's
vocabulary and compares models of different families too. Per example and position i of the SFT
output:

* ``exact``: the base output has the same token at the same position i;
* ``aligned``: the token is in the longest matching blocks of the two sequences (``difflib``,
  no junk heuristic), so an insertion early in the output does not count every later token wrong.

Shares are over SFT positions (every SFT token counts once), per position and overall.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from functools import lru_cache
from typing import Sequence

from ..languages import Language
from .bleu import bleu_tokenizer


@lru_cache(maxsize=None)
def _tokenizer(name: str):
    from sacrebleu.metrics.bleu import BLEU

    return BLEU(tokenize=name).tokenizer


def tokens(text: str, tgt: Language) -> list[str]:
    """``text`` split as sacrebleu's BLEU tokenizer for ``tgt`` splits it (made once per tokenizer)."""
    return _tokenizer(bleu_tokenizer(tgt))(text.strip()).split()


def aligned_positions(hyp: Sequence[str], ref: Sequence[str]) -> set[int]:
    """Positions of ``ref`` matched by ``hyp`` in difflib's matching blocks."""
    matcher = difflib.SequenceMatcher(a=list(hyp), b=list(ref), autojunk=False)
    return {j for block in matcher.get_matching_blocks() for j in range(block.b, block.b + block.size)}


def agreement(hyps: Sequence[str], sft: Sequence[str], tgt: Language, *, max_positions: int = 24) -> dict:
    """Free-running agreement of ``hyps`` with the SFT outputs ``sft`` (paired by index):
    ``exact %`` and ``aligned %`` over all SFT tokens, ``first %`` (the first token), the number
    of SFT ``tokens``, and ``by_position`` {1-based position: {"exact %", "aligned %", "n"}} for
    the first ``max_positions`` positions."""
    if len(hyps) != len(sft):
        raise ValueError(f"{len(hyps)} outputs against {len(sft)} SFT outputs")
    exact_at: dict[int, list[int]] = defaultdict(list)
    aligned_at: dict[int, list[int]] = defaultdict(list)
    total = exact = aligned = 0
    for hyp_text, ref_text in zip(hyps, sft):
        hyp, ref = tokens(hyp_text, tgt), tokens(ref_text, tgt)
        matched = aligned_positions(hyp, ref)
        for j, tok in enumerate(ref):
            same = int(j < len(hyp) and hyp[j] == tok)
            exact, aligned, total = exact + same, aligned + int(j in matched), total + 1
            if j < max_positions:
                exact_at[j + 1].append(same)
                aligned_at[j + 1].append(int(j in matched))
    pct = lambda xs, n: round(100.0 * xs / n, 1) if n else None   # noqa: E731
    return {"tokens": total, "exact %": pct(exact, total), "aligned %": pct(aligned, total),
            "first %": pct(sum(exact_at.get(1, [])), len(exact_at.get(1, []))),
            "by_position": {p: {"exact %": pct(sum(exact_at[p]), len(exact_at[p])),
                                "aligned %": pct(sum(aligned_at[p]), len(aligned_at[p])), "n": len(exact_at[p])}
                            for p in sorted(exact_at)}}

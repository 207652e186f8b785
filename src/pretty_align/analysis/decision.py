"""Decision-space analysis (paper §2, SPEC §5): where does the base model disagree with its SFT
counterpart, and how much of that disagreement is gone once one or two prior tokens are given?

For each example the SFT model's greedy answer ``a_1..a_n`` is teacher-forced through both models.
At every answer position t we record, over the full vocabulary:

- ``rank_base``: the 1-based rank of ``a_t`` in the base distribution (1 = the base model would
  have chosen it too; <= 10 = it is in the base model's "silent majority");
- ``p_base``, ``p_sft``: both models' probability of ``a_t``;
- ``kl``: KL(P_sft || P_base) in nats;
- ``overlap``: |top-k(base) ∩ top-k(sft)| / k.

Priors: under teacher forcing, giving the base model the first k SFT tokens as a prior does not
change its distributions at positions > k (the same tokens precede them either way), so the
analysis "with k prior tokens" is the positions t > k of the same single pass. This is exact
(tested against a separate pass with the prior appended to the prompt).

Invariant: full-vocabulary log-probs exist for at most one chunk of positions per model at a time;
each chunk is reduced to the per-position numbers above immediately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Sequence

from ..backends.base import Backend, token_stats


@dataclass(frozen=True)
class PositionRecord:
    position: int       # 1-based position in the SFT answer
    token_id: int       # the SFT model's token there
    rank_base: int      # 1-based rank of that token under the base model
    rank_sft: int       # 1-based rank under the SFT model (1 for a greedy answer, up to ties)
    p_base: float
    p_sft: float
    kl: float           # KL(P_sft || P_base), nats
    overlap: float      # top-k overlap of both distributions, in [0, 1]


def reduce_chunk(lp_base, lp_sft, targets, first: int, top_k: int = 10) -> list[PositionRecord]:
    """Per-position records from two ``[n, vocab]`` log-prob tensors and the ``n`` target ids;
    ``first`` is the 0-based answer position of row 0."""
    targets = list(targets)
    chosen_b, rank_b, top_b = token_stats(lp_base, targets, top_k)
    chosen_s, rank_s, top_s = token_stats(lp_sft, targets, top_k)
    kl = (lp_sft.exp() * (lp_sft - lp_base)).sum(dim=1)
    overlap = (top_b[:, :, None] == top_s[:, None, :]).any(dim=2).sum(dim=1).float() / top_k
    return [PositionRecord(first + i + 1, targets[i], int(rank_b[i]), int(rank_s[i]), float(chosen_b[i].exp()),
                           float(chosen_s[i].exp()), float(kl[i]), float(overlap[i])) for i in range(len(targets))]


def compare(base: Backend, sft: Backend, items: Sequence[tuple[Sequence[int], Sequence[int]]], *,
            top_k: int = 10, batch_size: int = 8, chunk: int = 256) -> Iterator[tuple[int, list[PositionRecord]]]:
    """For each ``(prompt_ids, sft_answer_ids)`` (same tokenizer for both models): one batched
    teacher-forced pass per model, yielding ``(item index, records)`` in item order."""
    pending: dict[int, list[PositionRecord]] = {}
    stream_b = base.answer_logprobs(items, batch_size=batch_size, chunk=chunk)
    stream_s = sft.answer_logprobs(items, batch_size=batch_size, chunk=chunk)
    expected = 0
    for (i, first, lp_b), (j, first_s, lp_s) in zip(stream_b, stream_s):
        assert (i, first) == (j, first_s), "backends yielded misaligned chunks"
        answer = items[i][1]
        pending.setdefault(i, []).extend(reduce_chunk(lp_b, lp_s, answer[first:first + len(lp_b)], first, top_k))
        del lp_b, lp_s
        while expected in pending and len(pending[expected]) == len(items[expected][1]):
            yield expected, pending.pop(expected)
            expected += 1
    for i in range(expected, len(items)):   # empty answers yield no chunks
        yield i, pending.pop(i, [])


def naive_records(base: Backend, sft: Backend, prompt_ids: Sequence[int], answer_ids: Sequence[int],
                  top_k: int = 10) -> list[PositionRecord]:
    """The reference implementation the one-pass path is tested and benchmarked against: one full
    forward pass per answer position, the prefix recomputed every time (as public code does); to
    be fair to it, only the last position's logits are computed (``logits_to_keep=1``)."""
    import torch

    out = []
    for t in range(len(answer_ids)):
        prefix = list(prompt_ids) + list(answer_ids[:t])
        lps = []
        for backend in (base, sft):
            with torch.inference_mode():
                logits = backend.model(input_ids=torch.tensor([prefix]),  # type: ignore[attr-defined]
                                        logits_to_keep=1).logits[0, -1].float()
            lps.append(torch.log_softmax(logits, dim=-1)[None])
        out += reduce_chunk(lps[0], lps[1], [answer_ids[t]], t, top_k)
    return out


# -- text-level approximate mode (models with different tokenizers) -----------------------------

# A "word" starts at a non-space character after whitespace or at the start, and every CJK /
# kana / hangul character is a word of its own (those scripts do not separate words by spaces).
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def word_starts(text: str) -> list[int]:
    """Character offsets in ``text`` where a word starts (see ``_CJK``)."""
    out = []
    for i, ch in enumerate(text):
        if ch.isspace():
            continue
        if i == 0 or text[i - 1].isspace() or _CJK.match(ch) or _CJK.match(text[i - 1]):
            out.append(i)
    return out


def token_word_starts(tokenizer, ids: Sequence[int]) -> dict[int, int]:
    """{character offset of a word start in the decoded, left-stripped answer: index of the token
    that begins exactly there}. Tokens that start inside a word (or inside a character) are absent."""
    text = tokenizer.decode(list(ids), skip_special_tokens=True).lstrip()
    starts = set(word_starts(text))
    out: dict[int, int] = {}
    prev = ""
    for i in range(len(ids)):
        cur = tokenizer.decode(list(ids[:i + 1]), skip_special_tokens=True).lstrip()
        if not cur.startswith(prev) or "\ufffd" in cur[len(prev):]:
            prev = cur   # the decoding of the prefix changed (a character completed): no clean start here
            continue
        piece = cur[len(prev):]
        at = len(prev) + len(piece) - len(piece.lstrip())
        if piece.strip() and at in starts and at not in out:
            out[at] = i
        prev = cur
    return out


def compare_text(base: Backend, sft: Backend, items: Sequence[tuple[Sequence[int], Sequence[int], Sequence[int]]],
                 *, top_k: int = 10, batch_size: int = 8,
                 chunk: int = 256) -> Iterator[tuple[int, list[PositionRecord]]]:
    """APPROXIMATE analysis for models with different tokenizers: each model teacher-forces the SFT
    answer in its own tokenization (``items``: base prompt ids, base answer ids, SFT prompt ids and
    SFT answer ids are given as ``(base_prompt, base_answer, sft_prompt, sft_answer)``), and the two
    are compared at word starts where both tokenizers begin a token. ``position`` is the word's
    1-based index; ``rank_base``/``p_base`` are the base model's for its own first token of that word;
    ``kl`` is NaN (the distributions live on different vocabularies); ``overlap`` compares the
    top-k tokens as stripped strings."""
    tb, ts = base.tokenizer, sft.tokenizer
    b_items = [(it[0], it[1]) for it in items]
    s_items = [(it[2], it[3]) for it in items]
    per: dict[int, dict[str, list]] = {}

    def collect(backend: Backend, pairs, side: str) -> None:
        for i, first, lp in backend.answer_logprobs(pairs, batch_size=batch_size, chunk=chunk):
            answer = pairs[i][1]
            chosen, ranks, top = token_stats(lp, answer[first:first + len(lp)], top_k)
            tops = top.tolist()
            rec = per.setdefault(i, {}).setdefault(side, [])
            rec += [(float(chosen[j].exp()), int(ranks[j]), tops[j]) for j in range(len(lp))]
            del lp

    collect(base, b_items, "base")
    collect(sft, s_items, "sft")
    for i, (_, b_ans, _, s_ans) in enumerate(items):
        wb, ws = token_word_starts(tb, b_ans), token_word_starts(ts, s_ans)
        order = {c: n + 1 for n, c in enumerate(sorted(set(word_starts(
            ts.decode(list(s_ans), skip_special_tokens=True).lstrip()))))}
        out = []
        for c in sorted(set(wb) & set(ws)):
            pb, rb, topb = per[i]["base"][wb[c]]
            ps, rs, tops = per[i]["sft"][ws[c]]
            strb = {tb.decode([t]).strip() for t in topb}
            strs = {ts.decode([t]).strip() for t in tops}
            out.append(PositionRecord(order.get(c, 0), int(s_ans[ws[c]]), rb, rs, pb, ps, float("nan"),
                                      len(strb & strs) / top_k))
        yield i, out

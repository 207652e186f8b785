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

from dataclasses import dataclass
from typing import Iterator, Sequence

from ..backends.base import Backend
from ..errors import CapabilityError


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
    import torch

    tgt = torch.as_tensor(list(targets), dtype=torch.long)[:, None]
    chosen_b, chosen_s = lp_base.gather(1, tgt)[:, 0], lp_sft.gather(1, tgt)[:, 0]
    rank_b = (lp_base > chosen_b[:, None]).sum(dim=1) + 1
    rank_s = (lp_sft > chosen_s[:, None]).sum(dim=1) + 1
    kl = (lp_sft.exp() * (lp_sft - lp_base)).sum(dim=1)
    top_b, top_s = lp_base.topk(top_k, dim=1).indices, lp_sft.topk(top_k, dim=1).indices
    overlap = (top_b[:, :, None] == top_s[:, None, :]).any(dim=2).sum(dim=1).float() / top_k
    return [PositionRecord(first + i + 1, int(tgt[i, 0]), int(rank_b[i]), int(rank_s[i]), float(chosen_b[i].exp()),
                           float(chosen_s[i].exp()), float(kl[i]), float(overlap[i])) for i in range(len(tgt))]


def _check(backend: Backend, role: str) -> None:
    if not backend.capabilities.exact_scoring:
        raise CapabilityError(f"the {role} model's backend ('{backend.registry_name}') does not give full-vocabulary "
                              "log-probs (exact_scoring=False); the exact analysis needs one that does (hf), or use "
                              "the text-level approximate mode with top-N log-probs")


def compare(base: Backend, sft: Backend, items: Sequence[tuple[Sequence[int], Sequence[int]]], *,
            top_k: int = 10, batch_size: int = 8, chunk: int = 256) -> Iterator[tuple[int, list[PositionRecord]]]:
    """For each ``(prompt_ids, sft_answer_ids)`` (same tokenizer for both models): one batched
    teacher-forced pass per model, yielding ``(item index, records)`` in item order."""
    _check(base, "base")
    _check(sft, "SFT")
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
    forward pass per answer position, the prefix recomputed every time (as public code does)."""
    import torch

    out = []
    for t in range(len(answer_ids)):
        prefix = list(prompt_ids) + list(answer_ids[:t])
        lps = []
        for backend in (base, sft):
            with torch.inference_mode():
                logits = backend.model(input_ids=torch.tensor([prefix])).logits[0, -1].float()  # type: ignore[attr-defined]
            lps.append(torch.log_softmax(logits, dim=-1)[None])
        out += reduce_chunk(lps[0], lps[1], [answer_ids[t]], t, top_k)
    return out

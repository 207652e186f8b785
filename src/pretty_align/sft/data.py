"""SFT training data (SPEC §7): line-aligned parallel files rendered through the task template,
with the loss on the answer only.

Data come from Tatoeba-style pairs (``eng-XXX.eng`` / ``eng-XXX.XXX``, optional ``.labels`` with
the variety/script of each line), never from FLORES: FLORES is the evaluation set. Languages are
mixed, shuffled deterministically by seed, length-filtered and split into train/validation.

Each example is encoded exactly as experiments see it (``boundary``): the prompt ids, then the
answer as it continues the prompt (separator on the answer side), then the task's stop string and
EOS so the SFT model learns to stop. Labels are -100 on the prompt: the loss is on the answer only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..boundary import Tokenizer, answer_ids, encode_prompt
from ..errors import InputError
from ..languages import Language
from ..tasks.base import Example, Task
from ..tasks.translation import read_lines

IGNORE = -100  # label of positions without loss (the prompt)
# Tatoeba file codes where they differ from the FLORES ISO 639-3 code.
TATOEBA_CODE = {"swh": "swa"}
# Which .labels values count as the FLORES language variety (language, accepted scripts).
LABEL_FILTER = {"zho_Hans": ("cmn", {"Hans"}), "zho_Hant": ("cmn", {"Hant"}),
                "jpn_Jpan": ("jpn", {"Hira", "Kana", "Hani", "Jpan"})}


@dataclass(frozen=True)
class Pair:
    source: str
    target: str
    tgt: Language
    origin: str      # "file:line", for provenance and error messages


@dataclass(frozen=True)
class SFTExample:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]      # IGNORE on prompt positions, the token id on answer positions
    origin: str

    @property
    def answer_length(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def _keep_by_label(label: str, tgt: Language) -> bool:
    rule = LABEL_FILTER.get(tgt.code)
    if rule is None:
        return True
    lang, scripts = rule
    head, _, script = label.partition("_")
    return head == lang and script in scripts


def load_pairs(data_dir: str | Path, src: Language, tgt: Language) -> list[Pair]:
    """All usable pairs for ``src -> tgt`` from ``data_dir`` (Tatoeba layout), in file order.

    Lines whose ``.labels`` entry is another variety or script (e.g. Cantonese or Traditional
    Chinese for ``zho_Hans``) are dropped; empty lines are an error naming the file and line.
    """
    code = TATOEBA_CODE.get(tgt.iso3, tgt.iso3)
    stem = Path(data_dir) / f"{src.iso3}-{code}"
    if "flores" in str(stem).lower():
        raise InputError("SFT data must not come from FLORES (it is the evaluation set)", path=str(stem))
    sp, tp = stem.with_suffix(f".{src.iso3}"), stem.with_suffix(f".{code}")
    sources, targets = read_lines(sp, what="source"), read_lines(tp, what="target")
    if len(sources) != len(targets):
        raise InputError(f"{len(targets)} lines but the source {sp.name} has {len(sources)}; files must be "
                         "line-aligned", path=str(tp))
    labels_path = tp.with_name(tp.name + ".labels")
    labels = read_lines(labels_path, what="labels") if labels_path.is_file() else [""] * len(targets)
    return [Pair(s, t, tgt, f"{tp}:{i}") for i, (s, t, lab) in enumerate(zip(sources, targets, labels), 1)
            if not lab or _keep_by_label(lab, tgt)]


def encode_pair(tokenizer: Tokenizer, task: Task, pair: Pair, src: Language, stop: str = "\n") -> SFTExample:
    """Prompt ids + answer ids (+ stop + EOS) with the prompt masked out of the loss."""
    example = Example(pair.origin, pair.source, pair.target, src, pair.tgt)
    prompt = encode_prompt(tokenizer, task.render(example))
    answer = answer_ids(tokenizer, prompt, pair.target)
    answer += tokenizer.encode(stop, add_special_tokens=False) if stop else []
    if tokenizer.eos_token_id is not None:
        answer.append(tokenizer.eos_token_id)
    return SFTExample(prompt.ids + tuple(answer), (IGNORE,) * len(prompt.ids) + tuple(answer), pair.origin)


@dataclass
class SFTSplit:
    train: list[SFTExample]
    validation: list[SFTExample]
    dropped_too_long: int


def build_split(tokenizer: Tokenizer, task: Task, pairs_by_lang: Sequence[list[Pair]], src: Language, *,
                per_language: int, validation_share: float = 0.05, max_tokens: int = 256,
                seed: int = 0, stop: str = "\n") -> SFTSplit:
    """Mix languages: take ``per_language`` pairs of each (after a seeded shuffle), drop examples
    longer than ``max_tokens``, split off ``validation_share`` of each language for validation, and
    shuffle the training mix. The same arguments always give the same split and order."""
    rng = random.Random(seed)
    train: list[SFTExample] = []
    validation: list[SFTExample] = []
    dropped = 0
    for pairs in pairs_by_lang:
        pool = list(pairs)
        rng.shuffle(pool)
        kept = []
        for pair in pool:
            if len(kept) == per_language:
                break
            ex = encode_pair(tokenizer, task, pair, src, stop)
            if len(ex.input_ids) > max_tokens:
                dropped += 1
                continue
            kept.append(ex)
        n_val = max(1, round(validation_share * len(kept))) if kept else 0
        validation += kept[:n_val]
        train += kept[n_val:]
    rng.shuffle(train)
    return SFTSplit(train, validation, dropped)

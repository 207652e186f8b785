"""The prompt/prior boundary: the one place that decides which token ids a model sees.

Rules (SPEC §3), enforced here and nowhere else:

* The prompt is encoded once (``encode_prompt``); the prior's ids are appended to those ids. The
  model input is always ``prompt.ids + prior_ids``; prompt and prior are never re-tokenized as
  one string for the model.
* The separator between prompt and answer (the space after ``German:``) belongs to the *answer*
  side, for every strategy and for the unprimed baseline alike: the prompt text never ends with it,
  and prior ids are computed as the tokens of ``sep + prior_text`` *as they continue the prompt*.
  That is how SentencePiece tokenizers spell an answer's first word (``▁Der``), so a primed base
  model sees exactly the ids it would have produced itself.
* ``k`` counts tokens of the model that receives the prior; a prior cut at ``k`` may end inside a
  word or inside a multi-byte character. Ids are cut, never strings.
* The output is decoded once from ``prior_ids + new_ids`` (``render_output``), so a character split
  across the prior/continuation boundary comes out whole.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

log = logging.getLogger(__name__)


class Tokenizer(Protocol):
    """What pretty-align needs of a tokenizer (a Hugging Face tokenizer satisfies it)."""

    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt and its ids. ``sep`` is what starts the answer (" " for plain prompts
    that end in "German:", "" for chat-rendered prompts whose answer starts a new turn)."""

    text: str
    ids: tuple[int, ...]
    sep: str
    chat: bool = False


def encode_prompt(tokenizer: Tokenizer, text: str, *, chat: bool = False, sep: str | None = None) -> Prompt:
    """Encode a rendered prompt. Plain prompts get the tokenizer's special tokens (BOS); chat
    prompts already contain them as text. A trailing separator is moved to the answer side."""
    if sep is None:
        sep = "" if chat else " "
    if sep and text.endswith(sep):
        text = text[: -len(sep)]
    ids = tokenizer.encode(text, add_special_tokens=not chat)
    return Prompt(text=text, ids=tuple(ids), sep=sep, chat=chat)


def answer_ids(tokenizer: Tokenizer, prompt: Prompt, answer_text: str) -> list[int]:
    """Token ids of ``answer_text`` as the beginning of the answer to ``prompt``.

    Computed as ``encode(prompt + sep + answer) - encode(prompt)`` (the lm-evaluation-harness
    rule), which spells the first word the way the model would after the prompt. When the
    tokenizer merges across the boundary (the prefix ids differ), the answer is encoded on its own
    instead, and that is logged.
    """
    text = answer_text.lstrip()
    if not text:
        return []
    whole = tokenizer.encode(prompt.text + prompt.sep + text, add_special_tokens=not prompt.chat)
    n = len(prompt.ids)
    if tuple(whole[:n]) == prompt.ids:
        return list(whole[n:])
    log.debug("prompt/answer merge at the boundary; encoding the answer on its own")
    return tokenizer.encode(prompt.sep + text, add_special_tokens=False)


def cut_prior(ids: Sequence[int], k: int) -> list[int]:
    """The first ``k`` ids (k counted in the receiving model's tokens). k=0 means no prior."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return list(ids[:k])


def model_input(prompt: Prompt | Sequence[int], prior_ids: Sequence[int]) -> list[int]:
    """The ids the model is conditioned on: prompt ids, then prior ids, nothing re-tokenized."""
    return list(prompt.ids if isinstance(prompt, Prompt) else prompt) + list(prior_ids)


def render_output(tokenizer: Tokenizer, prompt: Prompt, prior_ids: Sequence[int],
                  new_ids: Sequence[int], stops: Sequence[str] = ()) -> str:
    """Decode prior + continuation once; drop the answer separator; cut at the first stop string
    that occurs after the prior; strip surrounding whitespace."""
    text = tokenizer.decode(list(prior_ids) + list(new_ids), skip_special_tokens=True)
    if prompt.sep and text.startswith(prompt.sep):
        text = text[len(prompt.sep):]
    # Stops are looked for in the continuation only: after the prior, and (with no prior) after
    # leading whitespace, mirroring decoding.RowState so the text ends where generation ended.
    prior_len = len(tokenizer.decode(list(prior_ids), skip_special_tokens=True).rstrip("\ufffd"))
    if prompt.sep and prior_ids:
        prior_len = max(0, prior_len - len(prompt.sep))
    start = prior_len if prior_ids else len(text) - len(text.lstrip())
    cut = len(text)
    for stop in stops:
        pos = text.find(stop, start)
        if pos != -1:
            cut = min(cut, pos)
    # A length cut can end inside a multi-byte character: drop its replacement character.
    return text[:cut].strip().rstrip("\ufffd").rstrip()


_FINGERPRINTS: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()
# Encoded by tokenizers without ``get_vocab``: scripts, digits, spacing and emoji that vocabularies
# (and normalizers, byte fallback, BOS handling) tend to treat differently.
FINGERPRINT_PROBE = ("The quick brown fox, 1234567890 & ÄÖÜ ß é ñ.\n\n  Tabs\tand   spaces\r\n"
                     "猫坐在垫子上。日本語のテキスト、한국어 문장. Съешь же ещё этих мягких булок. "
                     "مرحبا بالعالم. नमस्ते दुनिया। ٣٤٥ १२३ 😀🚀👍🏽 <bos></s>")


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """16 hex digits identifying how a tokenizer maps text to ids: a hash of its vocabulary
    (``get_vocab``), so two models share token ids iff their fingerprints match; for a tokenizer
    without ``get_vocab``, a hash of its ids (with and without special tokens) and their decoding
    for ``FINGERPRINT_PROBE``, so tokenizers that differ there differ. Computed once per tokenizer
    object (hashing a 262k vocabulary takes about 0.5 s)."""
    try:
        return _FINGERPRINTS[tokenizer]
    except (KeyError, TypeError):   # TypeError: an object that cannot be weakly referenced
        pass
    import hashlib
    import json

    get_vocab = getattr(tokenizer, "get_vocab", None)
    if get_vocab is not None:
        content: Any = sorted(get_vocab().items(), key=lambda kv: kv[1])
    else:
        ids = tokenizer.encode(FINGERPRINT_PROBE, add_special_tokens=True)
        bare = tokenizer.encode(FINGERPRINT_PROBE, add_special_tokens=False)
        content = {"probe": [list(ids), list(bare), tokenizer.decode(ids, skip_special_tokens=False)]}
    fp = hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()[:16]
    try:
        _FINGERPRINTS[tokenizer] = fp
    except TypeError:
        pass
    return fp


def prior_text(tokenizer: Tokenizer, prompt: Prompt, prior_ids: Sequence[int]) -> str:
    """Human-readable prior for provenance only (may end in U+FFFD when cut inside a character);
    never used to build model input or output."""
    text = tokenizer.decode(list(prior_ids), skip_special_tokens=True)
    if prompt.sep and text.startswith(prompt.sep):
        text = text[len(prompt.sep):]
    return text

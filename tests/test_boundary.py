"""The prompt/prior boundary (SPEC §3) on a SentencePiece-style tokenizer with byte fallback."""

from __future__ import annotations

import pytest

from pretty_align.boundary import (answer_ids, cut_prior, encode_prompt, model_input, prior_text,
                                   render_output, tokenizer_fingerprint)

PROMPT = "Translate the following sentence from English to German.\nEnglish: The cat sits on the mat.\nGerman:"


def toks(tok, ids):
    return tok.convert_ids_to_tokens(list(ids))


def test_separator_belongs_to_the_answer(tiny_tokenizer):
    p = encode_prompt(tiny_tokenizer, PROMPT + " ")  # a trailing space is moved to the answer side
    assert p.text == PROMPT and p.sep == " "
    assert tuple(tiny_tokenizer.encode(PROMPT)) == p.ids
    ids = answer_ids(tiny_tokenizer, p, "Der Katze")
    assert toks(tiny_tokenizer, ids) == ["▁Der", "▁Kat", "z", "e"]  # the first word spelled with "▁"
    # same ids as the natural tokenization of prompt + answer after the prompt ids
    whole = tiny_tokenizer.encode(PROMPT + " Der Katze")
    assert whole[: len(p.ids)] == list(p.ids) and whole[len(p.ids):] == ids


def test_prior_ids_are_appended_exactly(tiny_tokenizer):
    p = encode_prompt(tiny_tokenizer, PROMPT)
    prior = cut_prior(answer_ids(tiny_tokenizer, p, "Der Katze"), 2)
    assert model_input(p, prior) == list(p.ids) + prior
    assert toks(tiny_tokenizer, prior) == ["▁Der", "▁Kat"]


def test_k_counts_base_tokens(tiny_tokenizer):
    p = encode_prompt(tiny_tokenizer, PROMPT)
    full = answer_ids(tiny_tokenizer, p, "Der Kater sitzt")
    for k in range(0, 5):
        assert cut_prior(full, k) == full[:k]
    with pytest.raises(ValueError):
        cut_prior(full, -1)


def test_prior_ending_mid_word_is_completed_by_the_continuation(tiny_tokenizer):
    p = encode_prompt(tiny_tokenizer, PROMPT)
    full = answer_ids(tiny_tokenizer, p, "Der Katze sitzt.")
    prior, cont = cut_prior(full, 2), full[2:]  # "▁Der▁Kat" | "ze ..."
    assert prior_text(tiny_tokenizer, p, prior) == "Der Kat"
    out = render_output(tiny_tokenizer, p, prior, cont, stops=["\n"])
    assert out == "Der Katze sitzt."
    assert out.count("Der") == 1  # the prior appears once, at the start
    assert out.startswith(prior_text(tiny_tokenizer, p, prior))


def test_cjk_character_split_over_byte_tokens(tiny_tokenizer):
    p = encode_prompt(tiny_tokenizer, "English: The mat.\nChinese:")
    full = answer_ids(tiny_tokenizer, p, "垫子")  # 垫 is unknown to the vocabulary: 3 byte tokens
    assert toks(tiny_tokenizer, full)[:4] == ["▁", "<0xE5>", "<0x9E>", "<0xAB>"]
    prior = cut_prior(full, 2)  # separator + the first byte of 垫
    assert prior_text(tiny_tokenizer, p, prior) == "\ufffd"  # provenance shows the cut honestly
    # decoded once from ids: the character comes out whole, not as replacement characters
    assert render_output(tiny_tokenizer, p, prior, full[2:]) == "垫子"


def test_byte_fallback_newline_is_a_stop(tiny_tokenizer):
    p = encode_prompt(tiny_tokenizer, PROMPT)
    ids = answer_ids(tiny_tokenizer, p, "Der Kater.\nEnglish: more")
    assert "<0x0A>" in toks(tiny_tokenizer, ids)
    assert render_output(tiny_tokenizer, p, ids[:1], ids[1:], stops=["\n"]) == "Der Kater."


def test_newline_right_after_prior_gives_prior_only(tiny_tokenizer):
    p = encode_prompt(tiny_tokenizer, PROMPT)
    prior = answer_ids(tiny_tokenizer, p, "Der")
    nl = tiny_tokenizer.encode("\nEnglish:", add_special_tokens=False)
    assert render_output(tiny_tokenizer, p, prior, nl, stops=["\n"]) == "Der"


def test_leading_newline_without_prior_is_skipped(tiny_tokenizer):
    p = encode_prompt(tiny_tokenizer, PROMPT)
    cont = tiny_tokenizer.encode("\nDer Kater.\nEnglish:", add_special_tokens=False)
    assert render_output(tiny_tokenizer, p, [], cont, stops=["\n"]) == "Der Kater."


def test_chat_prompts_have_no_separator(tiny_tokenizer):
    p = encode_prompt(tiny_tokenizer, "<bos>German:", chat=True)
    assert p.sep == "" and p.ids[0] == tiny_tokenizer.bos_token_id and p.ids.count(1) == 1


def test_fingerprint_distinguishes_vocabularies(tiny_tokenizer):
    from pretty_align.backends.fake import CharTokenizer

    assert tokenizer_fingerprint(tiny_tokenizer) == tokenizer_fingerprint(tiny_tokenizer)
    assert tokenizer_fingerprint(tiny_tokenizer) != tokenizer_fingerprint(CharTokenizer())

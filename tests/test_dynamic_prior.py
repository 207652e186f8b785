"""The ``dynamic`` prior (issue 13): the base model decodes, a helper supplies the tokens where the
base model is uncertain. Logic on synthetic logits; decoding on tiny random models built in code
(their embeddings scaled so that next-token distributions are neither flat nor one-hot)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import LLAMA_THREADS, build_bytelevel_tokenizer, build_model, require_module
from pretty_align.backends import load_backend
from pretty_align.backends.base import GenerationRequest, Session
from pretty_align.decoding import Decoding
from pretty_align.errors import CapabilityError, InputError
from pretty_align.experiment.answerer import Answerer
from pretty_align.experiment.config import load_config
from pretty_align.experiment.runner import Runner
from pretty_align.languages import get_language
from pretty_align.priors import PriorItem, make_prior
from pretty_align.priors.dynamic import IdHook, top2
from pretty_align.tasks.translation import TranslationTask

SOURCES = ["The cat sits on the mat.", "The dog runs in the park.",
           "Scientists announced a new diagnostic tool on Monday.", "It rained all day in Paris.",
           "Der Hund läuft im Park.", "Chinese: 猫坐在垫子上。"]
DEC = Decoding(max_new_tokens=14, stop=("\n",), loop_guard=False, batch_size=8)


def _save(kind: str, tok, where: Path, scale: float, seed: int = 0) -> str:
    import torch

    model = build_model(kind, len(tok))
    model.get_input_embeddings().weight.data *= scale   # tied: also flattens the output distribution
    if seed:   # another model of the same family and tokenizer
        torch.manual_seed(seed)
        for name, w in model.named_parameters():
            if name.endswith("proj.weight"):
                w.data += 0.5 * w.data.std() * torch.randn_like(w)
    model.save_pretrained(where)
    tok.save_pretrained(where)
    return str(where)


@pytest.fixture(scope="module")
def models(tiny_tokenizer, tmp_path_factory):
    """base (Gemma 3), a helper with the same tokenizer (Gemma 3, other weights), a helper with another
    tokenizer (Qwen2 + byte-level BPE): hf backends, float32."""
    root = tmp_path_factory.mktemp("dynamic")
    base = _save("gemma3", tiny_tokenizer, root / "base", 0.6)
    same = _save("gemma3", tiny_tokenizer, root / "same", 0.6, seed=1)
    other = _save("qwen2", build_bytelevel_tokenizer(), root / "other", 0.6)
    return {name: load_backend("hf", path) for name, path in (("base", base), ("same", same), ("other", other))}


@pytest.fixture(scope="module")
def task():
    return TranslationTask("eng_Latn", texts=SOURCES)


def examples(task):
    return list(task.examples(get_language("deu_Latn")))


def dynamic_answers(base, helper, task, decoding=DEC, **params):
    a_base, a_helper = Answerer(base, task, decoding), Answerer(helper, task, decoding)
    prior = make_prior("dynamic", answerer=a_helper, **{"k": 0, **params})
    exs = examples(task)
    built = prior.build([PriorItem(e, a_base.prompt(e)[0]) for e in exs], base.tokenizer)
    answers = a_base.answer(exs, hooks=[r.hook for r in built])
    return answers, [r.hook.finish(len(a.new_ids)) for r, a in zip(built, answers)]


# -- the rule, on synthetic logits -------------------------------------------------------------
class ScriptedSession(Session):
    """A helper that always answers ``token`` with probability ~0.9, and counts its calls."""

    def __init__(self, token: int) -> None:
        self.token, self.calls = token, []

    def logits(self, ids):
        x = np.zeros(10, dtype=np.float32)
        x[self.token] = np.log(9 * 9)   # p = 81 / (81 + 9) = 0.9
        self.calls.append(list(ids))
        return x


class RuleOnly:
    def __init__(self, k=0, tau=0.0, margin=0.0):
        self.k, self.tau, self.margin = k, tau, margin


def logits_with(p1: float, p2: float, top: int = 3, second: int = 4) -> np.ndarray:
    rest = (1 - p1 - p2) / 8
    p = np.full(10, rest)
    p[top], p[second] = p1, p2
    return np.log(p)


def test_top2_reads_probabilities_from_logits():
    tok, p1, p2 = top2(logits_with(0.6, 0.3))
    assert tok == 3 and p1 == pytest.approx(0.6) and p2 == pytest.approx(0.3)


@pytest.mark.parametrize("rule, p1, p2, helped", [
    (RuleOnly(tau=0.5), 0.6, 0.3, False), (RuleOnly(tau=0.5), 0.4, 0.3, True),
    (RuleOnly(margin=0.2), 0.6, 0.3, False), (RuleOnly(margin=0.4), 0.6, 0.3, True),
    (RuleOnly(k=1), 0.9, 0.05, True),
])
def test_the_helper_speaks_exactly_where_the_base_model_is_uncertain(rule, p1, p2, helped):
    session = ScriptedSession(token=7)
    hook = IdHook(rule, session, type("P", (), {"ids": (1, 5)})(), base_eos=2, helper_eos={2})
    assert hook.pick(logits_with(p1, p2), []) == (7 if helped else 3)
    assert session.calls == ([[1, 5]] if helped else [])   # fed the prompt + the row's tokens so far
    summary = hook.finish(1)
    assert summary["helper_share"] == (1.0 if helped else 0.0)
    if helped:
        assert summary["interventions"] == [{"pos": 0, "tokens": 1, "base_p1": pytest.approx(p1, abs=1e-4),
                                             "base_p2": pytest.approx(p2, abs=1e-4),
                                             "helper_p": pytest.approx(0.9, abs=1e-4), "changed": True}]
        assert summary["changed_share"] == 1.0


def test_a_helper_end_of_turn_ends_the_base_row():
    hook = IdHook(RuleOnly(k=1), ScriptedSession(token=6), type("P", (), {"ids": (1,)})(), base_eos=2,
                  helper_eos={6})
    assert hook.pick(logits_with(0.9, 0.05), []) == 2


def test_a_helper_token_equal_to_the_base_models_own_counts_as_supplied_not_changed():
    """The helper's share counts every position it supplied; its changed share only those where the
    base model would have written another token."""
    hook = IdHook(RuleOnly(tau=0.7), ScriptedSession(token=3), type("P", (), {"ids": (1,)})(), base_eos=2,
                  helper_eos={2})
    assert hook.pick(logits_with(0.6, 0.3, top=3), []) == 3          # asked, agrees with the base model
    hook.session = ScriptedSession(token=7)
    assert hook.pick(logits_with(0.5, 0.3, top=3), [3]) == 7         # asked, disagrees
    assert hook.pick(logits_with(0.9, 0.05, top=3), [3, 7]) == 3     # not asked
    summary = hook.finish(3)
    assert (summary["helper_tokens"], summary["changed_tokens"]) == (2, 1)
    assert summary["helper_share"] == pytest.approx(2 / 3, abs=1e-4)
    assert summary["changed_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert [i["changed"] for i in summary["interventions"]] == [False, True]


# -- text mode, on the tiny tokenizer with a scripted helper ------------------------------------------
class ScriptedWords(Session):
    """A text-mode helper that writes ``script`` (its own ids), one token per call, p ~0.9."""

    def __init__(self, script: list[int], vocab: int) -> None:
        self.script, self.vocab, self.calls = script, vocab, 0

    def logits(self, ids):
        x = np.zeros(self.vocab, dtype=np.float32)
        x[self.script[min(self.calls, len(self.script) - 1)]] = np.log(9 * (self.vocab - 1))
        self.calls += 1
        return x


class WordRule(RuleOnly):
    def __init__(self, k=0, tau=1.0, margin=0.0, word_tokens=8):
        super().__init__(k, tau, margin)
        self.word_tokens = word_tokens


def text_hook(tok, script, **rule):
    from pretty_align.boundary import encode_prompt
    from pretty_align.priors.dynamic import TextHook

    prompt = encode_prompt(tok, "English: The dog runs in the park. German:")
    return TextHook(WordRule(**rule), ScriptedWords(script, len(tok)), prompt, tok, {tok.eos_token_id}, tok,
                    prompt), prompt


def greedy_at(tok, token: int, p: float = 0.05) -> np.ndarray:
    """Logits whose argmax is ``token`` with probability ~``p`` (uncertain for tau > p)."""
    x = np.zeros(len(tok), dtype=np.float32)
    x[token] = np.log(p * (len(tok) - 1) / (1 - p))
    return x


def decode_row(hook, tok, row: list[int], steps: int, greedy: int) -> list[int]:
    for _ in range(steps):
        row.append(hook.pick(greedy_at(tok, greedy), row))
    return row


def test_text_mode_a_row_ending_in_a_space_token_gets_the_word_without_a_second_space(tiny_tokenizer):
    from pretty_align.boundary import answer_ids

    tok = tiny_tokenizer
    space = tok.convert_tokens_to_ids("▁")
    hook, prompt = text_hook(tok, tok.encode(" Hund im", add_special_tokens=False))
    row = answer_ids(tok, prompt, "Der") + [space]
    word = hook.pick(greedy_at(tok, space), row)
    row = decode_row(hook, tok, [*row, word], len(hook.queue), space)
    assert tok.decode(row, skip_special_tokens=True) == " Der Hund"   # (the prompt's separator, then one space)


def test_text_mode_an_uncertain_end_mid_answer_is_a_word_start_the_helper_may_overrule(tiny_tokenizer):
    from pretty_align.boundary import answer_ids

    tok = tiny_tokenizer
    hook, prompt = text_hook(tok, tok.encode(" läuft", add_special_tokens=False))
    row = answer_ids(tok, prompt, "Der Hund")
    first = hook.pick(greedy_at(tok, tok.eos_token_id), row)
    assert first != tok.eos_token_id
    assert [i["word"] for i in hook.trace.interventions] == ["läuft"]


def test_text_mode_never_steps_in_inside_a_character_and_attaches_what_the_helper_writes_without_a_space(
        tiny_tokenizer):
    from pretty_align.boundary import answer_ids

    tok = tiny_tokenizer
    char = tok.encode(" 垫", add_special_tokens=False)   # a space, then three byte tokens
    hook, prompt = text_hook(tok, tok.encode(" Hund", add_special_tokens=False))
    row = answer_ids(tok, prompt, "Der") + char[:3]      # the character's last byte still to come
    assert hook.pick(greedy_at(tok, char[3]), row) == char[3] and not hook.trace.interventions
    # at an uncertain end, the helper writes the sentence's full stop: it joins the last word
    hook, prompt = text_hook(tok, tok.encode(". Er", add_special_tokens=False))
    row = answer_ids(tok, prompt, "Der Hund läuft im Park")
    row.append(hook.pick(greedy_at(tok, tok.eos_token_id), row))
    row = decode_row(hook, tok, row, len(hook.queue), tok.eos_token_id)
    assert tok.decode(row, skip_special_tokens=True).strip() == "Der Hund läuft im Park."


def test_text_mode_no_usable_word_lets_the_base_model_go_on_instead_of_ending(tiny_tokenizer):
    from pretty_align.boundary import answer_ids

    tok = tiny_tokenizer
    char = tok.encode(" 垫", add_special_tokens=False)   # a space, then the character's three byte tokens
    assert len(char) == 4
    script = char + tok.encode(" im", add_special_tokens=False)
    space, hund = tok.convert_tokens_to_ids("▁"), tok.encode(" Hund", add_special_tokens=False)[0]
    row = answer_ids(tok, prompt := text_hook(tok, script)[1], "Der")
    for word_tokens in (2, 3, 8):
        hook, _ = text_hook(tok, script, word_tokens=word_tokens)
        picked = hook.pick(greedy_at(tok, hund), row)
        if word_tokens < 4:   # the cap falls inside the character: no word, the base model's own token
            assert picked == hund and not hook.trace.interventions
        else:
            assert picked == space and [i["word"] for i in hook.trace.interventions] == ["垫"]
    # a helper that starts with a line break before the answer's first word is not ending the answer
    newline = tok.encode("\n", add_special_tokens=False)
    hook, _ = text_hook(tok, newline + tok.encode("Der Hund", add_special_tokens=False))
    first = hook.pick(greedy_at(tok, space), [])
    assert first != tok.eos_token_id and [i["word"] for i in hook.trace.interventions] == ["Der"]
    assert prompt.ids   # (the prompt the rows above continue)


def test_text_mode_the_first_k_positions_are_the_helpers_and_changed_is_counted_per_token(tiny_tokenizer):
    tok = tiny_tokenizer
    script = tok.encode("Der Hund", add_special_tokens=False)
    hook, prompt = text_hook(tok, script, k=3, tau=0.0)
    from pretty_align.boundary import answer_ids

    der = answer_ids(tok, prompt, "Der")
    assert len(der) < 3   # the helper's first word does not cover k = 3 positions by itself
    row: list[int] = []
    for _ in range(3):   # the base model is sure of another token, and still the helper writes
        row.append(hook.pick(greedy_at(tok, tok.convert_tokens_to_ids("e"), p=0.99), row))
    summary = hook.finish(len(row))
    assert summary["helper_tokens"] == 3
    assert tok.decode(row, skip_special_tokens=True).split() == ["Der", "Hund", "Hund"]
    # a word's later tokens count as changed only where they differ from the base model's own choice
    hook, prompt = text_hook(tok, tok.encode(" Hund", add_special_tokens=False))
    hund = tok.encode("Der Hund", add_special_tokens=False)[len(der):]
    assert len(hund) >= 2
    row = list(der)
    row.append(hook.pick(greedy_at(tok, tok.eos_token_id), row))      # changed: the base model would end
    for t in hund[1:]:
        row.append(hook.pick(greedy_at(tok, t), row))                 # the base model's own choice
    summary = hook.finish(len(row))
    assert (summary["helper_tokens"], summary["changed_tokens"]) == (len(hund), 1)


@pytest.mark.parametrize("params, field", [({"tau": 1.5}, "tau"), ({"margin": -0.1}, "margin"),
                                           ({"tau": "high"}, "tau"), ({"word_tokens": 0}, "word_tokens")])
def test_bad_parameters_name_their_field(models, task, params, field):
    with pytest.raises(InputError, match=f"priors.params.{field}"):
        make_prior("dynamic", answerer=Answerer(models["same"], task, DEC), **params)


# -- decoding on tiny models -------------------------------------------------------------------
def same_traces(a: list[dict], b: list[dict]) -> bool:
    """Equal traces: the same positions and words; probabilities equal to 1e-4 (float32 logits of
    a row differ in the last bits between batch shapes, its greedy picks do not)."""
    def exact(t):
        return {**t, "interventions": [{k: v for k, v in i.items() if not k.endswith(("_p", "_p1", "_p2"))}
                                       for i in t["interventions"]]}

    probs = [[(i["base_p1"], i["base_p2"], i["helper_p"]) for i in t["interventions"]] for t in a]
    other = [[(i["base_p1"], i["base_p2"], i["helper_p"]) for i in t["interventions"]] for t in b]
    return [exact(t) for t in a] == [exact(t) for t in b] and all(
        x == pytest.approx(y, abs=1e-4) for xs, ys in zip(probs, other) for x, y in zip(xs, ys))


def test_id_level_dynamic_decoding_is_the_same_batched_and_one_at_a_time(models, task):
    for params in ({"tau": 0.5}, {"margin": 0.3, "k": 1}):
        batched, tb = dynamic_answers(models["base"], models["same"], task, **params)
        single, ts = dynamic_answers(models["base"], models["same"], task, replace(DEC, batch_size=1), **params)
        assert [a.new_ids for a in batched] == [a.new_ids for a in single]
        assert same_traces(tb, ts)
        assert {t["mode"] for t in tb} == {"ids"}
        assert any(t["helper_tokens"] for t in tb)


def test_a_helper_that_is_the_base_model_changes_nothing(models, task):
    plain = Answerer(models["base"], task, DEC).answer(examples(task))
    for tau in (0.0, 0.5, 1.0):
        dyn, traces = dynamic_answers(models["base"], models["base"], task, tau=tau)
        assert [a.new_ids for a in dyn] == [a.new_ids for a in plain]
        if tau == 1.0:
            assert all(t["helper_share"] == 1.0 for t in traces if t["output_tokens"])


def test_intervening_at_the_first_k_positions_is_the_sft_prior(models, task):
    """tau = margin = 0 and k = 2: the helper's first two tokens, then the base model: the static
    ``sft`` prior's output (id path), the same tokens within the row's budget."""
    base, helper = models["base"], models["same"]
    exs = examples(task)
    a_base = Answerer(base, task, DEC)
    helper_ids = [a.new_ids[:2] for a in Answerer(helper, task, DEC).answer(exs)]
    static = a_base.answer(exs, priors=helper_ids)
    dyn, traces = dynamic_answers(base, helper, task, k=2, tau=0.0, margin=0.0)
    for s, d, t in zip(static, dyn, traces):
        whole = s.prior_ids + s.new_ids
        assert d.new_ids == whole[:len(d.new_ids)]
        # the same row, ended at the same token, unless the budget (which here counts the helper's
        # two tokens, while the static row gets it after its prior) cut the dynamic row first
        assert len(d.new_ids) == len(whole) or d.stop_reason == "length"
        assert [i["pos"] for i in t["interventions"]] == list(range(min(2, len(d.new_ids))))
    sft = make_prior("sft", k=2, answerer=Answerer(helper, task, DEC))
    built = sft.build([PriorItem(e, a_base.prompt(e)[0]) for e in exs], base.tokenizer)
    for b, ids in zip(built, helper_ids):   # where the sft prior takes the id path, its ids are these
        if b.provenance["path"] == "ids":
            assert b.ids == ids


def test_text_mode_forces_the_helpers_words_in_the_base_tokenizer(models, task):
    base, other = models["base"], models["other"]
    batched, traces = dynamic_answers(base, other, task, tau=0.6)
    single, ts = dynamic_answers(base, other, task, replace(DEC, batch_size=1), tau=0.6)
    assert [a.new_ids for a in batched] == [a.new_ids for a in single]
    assert same_traces(traces, ts)
    assert {t["mode"] for t in traces} == {"text"}
    words = [(a, i) for a, t in zip(batched, traces) for i in t["interventions"] if i.get("word")]
    assert words, "the helper never wrote a word"
    tok = base.tokenizer
    for answer, item in words:   # the forced ids spell the helper's word (where the row kept them all)
        if item["pos"] + item["tokens"] <= len(answer.new_ids):
            forced = answer.new_ids[item["pos"]:item["pos"] + item["tokens"]]
            assert tok.decode(forced, skip_special_tokens=True).strip() == item["word"]


# -- refusals and the runner -------------------------------------------------------------------
def test_backends_without_their_own_decode_loop_refuse_a_step_hook():
    fake = load_backend("fake", "fake:echo")
    with pytest.raises(CapabilityError, match="'hf' or 'llamacpp'"):
        fake.generate([GenerationRequest((1, 70), hook=IdHook(RuleOnly(), None, None, 2, set()))], DEC)
    with pytest.raises(CapabilityError, match="'hf' or 'llamacpp'"):
        fake.session()


CONFIG = """
name = "dyn"
store = "{store}"
[base]
model = "{base}"
[reference]
model = "{helper}"
[task]
targets = ["deu_Latn"]
flores = "{flores}"
n = 3
[decoding]
max_new_tokens = 10
[[priors]]
strategy = "dynamic"
model = "reference"
k = 0
params = {{ tau = 0.5 }}
"""


def test_the_runner_stores_each_rows_trace_and_resumes(models, shared_data, tmp_path):
    cfg = tmp_path / "dyn.toml"
    cfg.write_text(CONFIG.format(store=tmp_path / "dyn.sqlite", base=models["base"].resolved.spec,
                                 helper=models["same"].resolved.spec, flores=shared_data / "flores200"))
    first = Runner(load_config(cfg)).run(progress=False)
    assert first.produced == 6 and first.conditions == ["reference", "dynamic k=0"]
    rows = [r for r in first_rows(tmp_path / "dyn.sqlite") if r["condition"] == "dynamic k=0"]
    assert len(rows) == 3
    for r in rows:
        assert r["provenance"]["mode"] == "ids" and 0 <= r["provenance"]["helper_share"] <= 1
        assert r["provenance"]["output_tokens"] == r["new_tokens"]
        assert 0 <= r["provenance"]["changed_share"] <= r["provenance"]["helper_share"]
    assert Runner(load_config(cfg)).run(progress=False).produced == 0
    from pretty_align.experiment.report import write_report
    from pretty_align.experiment.store import Store

    _, res = write_report(Store(tmp_path / "dyn.sqlite"), "dyn", tmp_path / "report")
    means = res["means"]["dynamic k=0"]
    assert means["helper changed %"] == pytest.approx(100 * np.mean([r["provenance"]["changed_share"] for r in rows]))
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| condition | helper share % | helper changed % |" in md


def first_rows(store: Path) -> list[dict]:
    from pretty_align.experiment.store import Store

    return Store(store).rows("dyn")


def test_a_base_model_on_an_engine_backend_is_refused_before_decoding(models, shared_data, tmp_path):
    cfg = tmp_path / "dyn.toml"
    cfg.write_text(CONFIG.format(store=tmp_path / "dyn.sqlite", base="fake:echo", helper=models["same"].resolved.spec,
                                 flores=shared_data / "flores200").replace('model = "fake:echo"',
                                                                           'model = "fake:echo"\nbackend = "fake"'))
    with pytest.raises(CapabilityError, match="backend 'fake' decodes in its own engine"):
        Runner(load_config(cfg))



@pytest.mark.real_model
def test_llamacpp_runs_the_step_hook_and_its_helper_follows_incrementally(gemma_gguf):
    """gemma-3-270m on llama.cpp as base and as its own helper (two contexts), tau = 1: every token
    is the helper's, so the output is the plain greedy one, and the helper's session evaluated each
    prompt once and then one token per step (no second full decode)."""
    require_module("llama_cpp", "-e '.[llamacpp]'")
    base = load_backend("llamacpp", str(gemma_gguf), n_threads=LLAMA_THREADS, n_ctx=512)
    helper = load_backend("llamacpp", str(gemma_gguf), n_threads=LLAMA_THREADS, n_ctx=512)
    task = TranslationTask("eng_Latn", texts=SOURCES[:3])
    dec = replace(DEC, max_new_tokens=12)
    plain = Answerer(base, task, dec).answer(examples(task))
    a_base, a_helper = Answerer(base, task, dec), Answerer(helper, task, dec)
    prior = make_prior("dynamic", k=0, answerer=a_helper, tau=1.0)
    exs = examples(task)
    built = prior.build([PriorItem(e, a_base.prompt(e)[0]) for e in exs], base.tokenizer)
    sessions = [r.hook.session for r in built]
    dyn = a_base.answer(exs, hooks=[r.hook for r in built])
    assert [a.new_ids for a in dyn] == [a.new_ids for a in plain]
    assert any(a.new_ids for a in dyn)
    for r, a, s in zip(built, dyn, sessions):
        assert r.hook.finish(len(a.new_ids))["helper_share"] == 1.0
        picks = len(a.new_ids) + (a.stop_reason == "eos")   # an EOS pick is not in new_ids
        assert s.evaluated == len(a.prompt.ids) + picks - 1
    parallel = load_backend("llamacpp", str(gemma_gguf), n_threads=LLAMA_THREADS, n_ctx=512, parallel=3)
    built = prior.build([PriorItem(e, a_base.prompt(e)[0]) for e in exs], parallel.tokenizer)
    batched = Answerer(parallel, task, dec).answer(exs, hooks=[r.hook for r in built])
    assert sum(x.new_ids[:2] == y.new_ids[:2] for x, y in zip(batched, plain)) >= 2


@pytest.mark.real_model
def test_llamacpp_sessions_do_not_depend_on_other_rows_or_on_the_base_models_decoding(gemma_gguf):
    """Each llama.cpp session evaluates in a context of its own: its logits are the same whether or
    not other sessions, or the backend's own decoding, ran between its calls (the chunks it
    evaluates are a function of its own calls), and a helper that is the base backend object
    itself (what the runner hands a prior whose model settings equal the base's), tau = 1, leaves
    the plain greedy output."""
    require_module("llama_cpp", "-e '.[llamacpp]'")
    base = load_backend("llamacpp", str(gemma_gguf), n_threads=LLAMA_THREADS, n_ctx=512)
    task = TranslationTask("eng_Latn", texts=SOURCES[:3])
    dec = replace(DEC, max_new_tokens=12)
    exs = examples(task)
    a_base = Answerer(base, task, dec)
    plain = a_base.answer(exs)
    prior = make_prior("dynamic", k=0, answerer=a_base, tau=1.0)
    built = prior.build([PriorItem(e, a_base.prompt(e)[0]) for e in exs], base.tokenizer)
    assert [a.new_ids for a in a_base.answer(exs, hooks=[r.hook for r in built])] == [a.new_ids for a in plain]

    ids_a, ids_b = (list(a_base.prompt(e)[0].ids) for e in exs[:2])
    steps = min(4, len(plain[0].new_ids), len(plain[1].new_ids))
    alone = base.session()
    expected = [alone.logits(ids_a + plain[0].new_ids[:j]) for j in range(steps)]
    mixed, other = base.session(), base.session()
    for j in range(steps):
        other.logits(ids_b + plain[1].new_ids[:j])
        base.generate([GenerationRequest(tuple(ids_b))], Decoding(max_new_tokens=2, stop=(), loop_guard=False))
        assert np.array_equal(mixed.logits(ids_a + plain[0].new_ids[:j]), expected[j])
    assert mixed.evaluated == alone.evaluated == len(ids_a) + steps - 1
    for s in (alone, mixed, other):
        s.close()
    assert len(base._spare) == 3   # closed sessions hand their contexts back for the next ones

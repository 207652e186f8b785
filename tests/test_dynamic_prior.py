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
from pretty_align.backends.base import GenerationRequest
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
class ScriptedSession:
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

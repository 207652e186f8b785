"""Corrupted priors (issue 13.2): with probability p a prior becomes a random target-language word of
the same token length, seeded per example, nested across p, recorded in provenance."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretty_align.errors import InputError
from pretty_align.experiment.config import load_config
from pretty_align.experiment.runner import Runner
from pretty_align.languages import get_language
from pretty_align.priors.corrupt import words_of

CONFIG = """
name = "c"
store = "{store}"
[base]
model = "fake:echo"
backend = "fake"
[task]
targets = ["deu_Latn", "zho_Hans"]
flores = "{flores}"
n = 12
[[priors]]
strategy = "gold"
k = 3
corrupt = {corrupt}
corrupt_seed = 7
"""


def run(tmp_path: Path, data: Path, corrupt: str = "[0, 0.5, 1]") -> list[dict]:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(store=tmp_path / "c.sqlite", flores=data / "flores200", corrupt=corrupt))
    runner = Runner(load_config(cfg))
    runner.run(progress=False)
    return runner.store.rows("c")


def by(rows, cond):
    return {(r["tgt"], r["example_id"]): r for r in rows if r["condition"] == cond}


def test_the_corruption_sweep_is_seeded_nested_and_recorded(tmp_path, shared_data):
    rows = run(tmp_path, shared_data)
    assert sorted({r["condition"] for r in rows}) == ["gold k=3 corrupt=0", "gold k=3 corrupt=0.5",
                                                      "gold k=3 corrupt=1"]
    clean, half, full = by(rows, "gold k=3 corrupt=0"), by(rows, "gold k=3 corrupt=0.5"), by(rows, "gold k=3 corrupt=1")
    assert not any(r["provenance"]["corrupt"]["replaced"] for r in clean.values())
    assert all(r["provenance"]["corrupt"]["replaced"] for r in full.values())
    replaced_half = {key for key, r in half.items() if r["provenance"]["corrupt"]["replaced"]}
    assert 0 < len(replaced_half) < len(half)            # about half of 24 examples
    for key, r in full.items():
        info = r["provenance"]["corrupt"]
        assert info["original_ids"] == clean[key]["prior_ids"]   # the gold prior it replaced
        assert len(r["prior_ids"]) == len(info["original_ids"])  # the same token length
        tgt = get_language(key[0])
        assert info["word"] not in words_of([r["reference"]], tgt)   # never a word of the example's own gold
        if key not in replaced_half:
            assert half[key]["prior_ids"] == clean[key]["prior_ids"]
        else:
            assert half[key]["prior_ids"] == r["prior_ids"]      # one draw per example: p only sets the cut
    (tmp_path / "again").mkdir()
    again = run(tmp_path / "again", shared_data)   # a fresh store: the same draws
    assert {k: r["prior_ids"] for k, r in by(again, "gold k=3 corrupt=0.5").items()} == \
        {k: r["prior_ids"] for k, r in half.items()}


def test_unspaced_scripts_give_runs_and_punctuation_is_not_a_word():
    assert words_of(["猫坐在垫子上。狗，跑"], get_language("zho_Hans")) == ["猫坐在垫子上", "狗", "跑"]
    assert words_of(["Der Hund, der Hund!  — läuft."], get_language("deu_Latn")) == ["Der", "Hund", "der", "läuft"]


@pytest.mark.parametrize("corrupt, msg", [("[1.5]", "corrupt"), ("[0.5, 0.5]", "listed twice")])
def test_nonsense_probabilities_are_refused(tmp_path, shared_data, corrupt, msg):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(store=tmp_path / "c.sqlite", flores=shared_data / "flores200", corrupt=corrupt))
    with pytest.raises(InputError, match=msg):
        load_config(cfg)


def test_the_report_draws_the_prior_quality_curve_and_agreement(tmp_path, shared_data):
    from pretty_align.experiment.report import compute, to_markdown
    from pretty_align.experiment.html import render_html
    from pretty_align.experiment.store import Store

    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.format(store=tmp_path / "c.sqlite", flores=shared_data / "flores200",
                                 corrupt="[0, 1]").replace("[[priors]]", '[reference]\nmodel = "fake:upper"\n'
                                                           'backend = "fake"\n[[priors]]\nstrategy = "none"\n'
                                                           '[[priors]]', 1))
    Runner(load_config(cfg)).run(progress=False)
    store = Store(tmp_path / "c.sqlite")
    res = compute(store, "c")
    assert set(res["agreement"]) == {"none", "gold k=3 corrupt=0", "gold k=3 corrupt=1"}
    # gold priors make fake:echo write the reference's start, which fake:upper (the reference) never does
    assert all(0 <= per["all"]["aligned %"] <= 100 for per in res["agreement"].values())
    md = to_markdown(res)
    assert "## Free-running agreement with the reference output" in md
    page = render_html(res, store.rows("c"))
    assert 'alt="prior-quality curve"' in page and 'alt="free-running agreement by position"' in page


def _keys(tmp_path: Path, data: Path, n: int) -> dict[tuple[str, str, str], str]:
    """(condition, target, example id) -> key of a plan with ``task.n = n`` (nothing is run)."""
    cfg = tmp_path / f"n{n}.toml"
    cfg.write_text(CONFIG.format(store=tmp_path / f"n{n}.sqlite", flores=data / "flores200", corrupt="[0, 1]")
                   .replace("n = 12", f"n = {n}"))
    return {(w.cond.label, w.tgt.code, w.example.id): w.key for w in Runner(load_config(cfg)).plan()}


def test_a_corrupted_priors_key_holds_its_word_pool(tmp_path, shared_data):
    # The replacement word is drawn from every reference of the run's examples of the language, so
    # a run over 3 examples and one over 8 draw differently for the same example: they must not
    # share keys (they did: whichever run stored first won). p = 0 draws nothing, and keeps its key.
    small, large = _keys(tmp_path, shared_data, 3), _keys(tmp_path, shared_data, 8)
    shared = small.keys() & large.keys()
    assert {c for c, _, _ in shared} == {"gold k=3 corrupt=0", "gold k=3 corrupt=1"}
    for key in shared:
        if key[0].endswith("corrupt=1"):
            assert small[key] != large[key], key
        else:
            assert small[key] == large[key], key

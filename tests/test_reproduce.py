"""``pretty-align reproduce``: every stage in one resumable store, reports and an index with the
paper's figures beside ours; on the fake backend (the real presets run gemma-3-270m)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pretty_align.cli import app
from pretty_align.reproduce import PAPER_PERCENT_OF_SFT, load_preset, paper_comparison

STAGE = """
name = "{name}"
[base]
model = "fake:echo"
backend = "fake"
[reference]
model = "fake:upper"
backend = "fake"
[task]
targets = ["deu_Latn", "zho_Hans"]
flores = "{flores}"
n = 50
[[priors]]
strategy = "none"
[[priors]]
strategy = "pseudo"
k = 2
dictionary = "{muse}/en-{{tgt_iso1}}.txt"
[[priors]]
strategy = "gold"
k = 2
"""


def make_preset(tmp_path, shared_data):
    for name in ("mt", "mt2"):
        (tmp_path / f"{name}.toml").write_text(STAGE.format(name=name, flores=shared_data / "flores200",
                                                            muse=shared_data / "dictionaries" / "muse"))
    preset = tmp_path / "tiny.toml"
    preset.write_text('[reproduce]\nstages = ["mt.toml", "mt2.toml"]\nn = 3\nanalysis = false\n'
                      'store = "runs/r.sqlite"\nresults = "results/tiny"\n')
    return preset


def test_reproduce_runs_every_stage_resumably_and_writes_the_index(tmp_path, shared_data):
    preset = make_preset(tmp_path, shared_data)
    args = ["reproduce", "--preset", str(preset), "--sft", "fake:upper", "--no-progress"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    out = tmp_path / "results" / "tiny"
    index = json.loads((out / "results.json").read_text())
    stages = {s["name"]: s for s in index["stages"]}
    assert stages["mt"]["produced"] == stages["mt"]["total"] == 4 * 2 * 3 and stages["mt2"]["total"] == 24
    for stage in ("mt", "mt2"):
        assert (out / stage / "report.html").is_file() and (out / stage / "report.md").is_file()
    readme = (out / "README.md").read_text()
    assert "| none |" in readme and "| 52.5 |" in readme and "Ours vs the paper" in readme
    assert (tmp_path / "runs" / "r.sqlite").is_file()    # one store for every stage
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    index = json.loads((out / "results.json").read_text())
    assert {s["name"]: s["produced"] for s in index["stages"]} == {"sft": 0, "mt": 0, "mt2": 0}


def test_paper_figures_sit_beside_the_matching_conditions():
    res = {"conditions": ["reference", "none", "pseudo k=2", "gold k=2"],
           "means": {"none": {"% ref chrF++": 40.0}, "pseudo k=2": {"% ref chrF++": 80.0},
                     "gold k=2": {"% ref chrF++": 90.0}},
           "condition_signatures": {c: [{"signature": {"prior": {"strategy": s}}}]
                                    for c, s in (("none", "none"), ("pseudo k=2", "pseudo"), ("gold k=2", "gold"))}}
    rows = paper_comparison(res, "chrF++")
    assert [(r["condition"], r["paper"]) for r in rows] == [("none", PAPER_PERCENT_OF_SFT["none"]),
                                                            ("pseudo k=2", 85.4), ("gold k=2", None)]


def test_shipped_presets_load_and_a_missing_one_is_named():
    quick, _ = load_preset("quick")
    paper, _ = load_preset("paper")
    assert quick.n == 5 and paper.n == 100 and len(quick.stages) == len(paper.stages) == 4
    result = CliRunner().invoke(app, ["reproduce", "--preset", "nonesuch"])
    assert result.exit_code == 2 and "no preset 'nonesuch'; presets: beyond, paper, quick" in " ".join(result.output.split())

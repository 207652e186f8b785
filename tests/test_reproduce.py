"""``pretty-align reproduce``: every stage in one resumable store, reports and an index with the
paper's figures beside ours; on the fake backend (the real presets run gemma-3-270m)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pretty_align.cli import app
from pretty_align.errors import InputError
from pretty_align.reproduce import PAPER_PERCENT_OF_SFT, load_preset, paper_comparison, reproduce

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


CROSSSUM = """
name = "cs"
[base]
model = "fake:echo"
backend = "fake"
[reference]
model = "fake:upper"
backend = "fake"
[task]
name = "summarization"
format = "crosssum"
source = "eng_Latn"
targets = ["vie_Latn", "ind_Latn"]
data = ""
[[priors]]
strategy = "none"
[[priors]]
strategy = "gold"
k = 2
"""


def crosssum_preset(tmp_path, shared_data):
    preset = make_preset(tmp_path, shared_data)
    (tmp_path / "cs.toml").write_text(CROSSSUM)
    preset.write_text(preset.read_text().replace("n = 3\n", 'n = 3\ncrosssum = "cs.toml"\n'))
    data = tmp_path / "crosssum"
    data.mkdir()
    for iso in ("vi", "id"):
        rows = [{"text": f"Article {i} about the weather in {iso}. It rained.", "summary": f"{iso} summary {i}"}
                for i in range(4)]
        (data / f"en-{iso}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return preset, data


def test_crosssum_given_by_the_user_adds_its_stage(tmp_path, shared_data):
    preset, data = crosssum_preset(tmp_path, shared_data)
    args = ["reproduce", "--preset", str(preset), "--sft", "fake:upper", "--no-progress",
            "--crosssum", str(data / "{src_iso1}-{tgt_iso1}.jsonl")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    stages = {s["name"]: s for s in json.loads((tmp_path / "results" / "tiny" / "results.json").read_text())["stages"]}
    assert stages["cs"]["produced"] == stages["cs"]["total"] == 3 * 2 * 3   # none, gold, SFT x 2 pairs x 3
    report = json.loads((tmp_path / "results" / "tiny" / "cs" / "report.json").read_text())
    assert "crosssum" in json.dumps(report)
    again = CliRunner().invoke(app, args)   # resumes: nothing new
    assert again.exit_code == 0
    stages = {s["name"]: s for s in json.loads((tmp_path / "results" / "tiny" / "results.json").read_text())["stages"]}
    assert stages["cs"]["produced"] == 0 and stages["cs"]["total"] == 18


def test_crosssum_files_are_checked_before_anything_runs(tmp_path, shared_data):
    preset, data = crosssum_preset(tmp_path, shared_data)
    (data / "en-id.jsonl").unlink()
    args = ["reproduce", "--preset", str(preset), "--sft", "fake:upper", "--no-progress",
            "--crosssum", str(data / "{src_iso1}-{tgt_iso1}.jsonl")]
    result = CliRunner().invoke(app, args)
    out = " ".join(result.output.split())
    assert result.exit_code == 2 and "no data file for ind_Latn" in out
    with pytest.raises(InputError, match="en-id.jsonl"):
        reproduce(str(preset), sft="fake:upper", crosssum=str(data / "{src_iso1}-{tgt_iso1}.jsonl"), progress=False)
    assert not (tmp_path / "runs" / "r.sqlite").exists()   # refused before any stage ran
    fixed = CliRunner().invoke(app, args[:-1] + [str(data / "en-vi.jsonl")])
    assert fixed.exit_code == 2 and "names no language" in " ".join(fixed.output.split())


def test_crosssum_is_refused_for_a_preset_without_that_stage(tmp_path, shared_data):
    preset = make_preset(tmp_path, shared_data)
    result = CliRunner().invoke(app, ["reproduce", "--preset", str(preset), "--sft", "fake:upper",
                                      "--crosssum", "x/{tgt_iso1}.jsonl"])
    assert result.exit_code == 2 and "no CrossSum stage" in " ".join(result.output.split())


def test_report_only_rewrites_results_from_the_store_and_keeps_the_run_times(tmp_path, shared_data):
    preset = make_preset(tmp_path, shared_data)
    args = ["reproduce", "--preset", str(preset), "--sft", "fake:upper", "--no-progress"]
    assert CliRunner().invoke(app, args).exit_code == 0
    out = tmp_path / "results" / "tiny"
    ran = json.loads((out / "results.json").read_text())
    report = (out / "mt" / "report.md").read_text()
    (out / "mt" / "report.md").unlink()
    (out / "mt2" / "report.html").write_text("stale")
    store = tmp_path / "runs" / "r.sqlite"
    before = store.stat().st_mtime_ns
    result = CliRunner().invoke(app, ["reproduce", "--preset", str(preset), "--report-only"])
    assert result.exit_code == 0, result.output
    assert (out / "mt" / "report.md").read_text() == report            # the same numbers, from the store
    assert "examples-data" in (out / "mt2" / "report.html").read_text()
    again = json.loads((out / "results.json").read_text())
    assert [(s["name"], s["seconds"], s["produced"]) for s in again["stages"]] == \
        [(s["name"], s["seconds"], s["produced"]) for s in ran["stages"]]
    assert again["reports"]["mt"]["means"] == ran["reports"]["mt"]["means"]
    assert "--report-only" in (out / "README.md").read_text()
    assert store.stat().st_mtime_ns == before                          # nothing was run or written to it
    refused = CliRunner().invoke(app, ["reproduce", "--preset", str(preset), "--report-only", "--sft", "x"])
    assert refused.exit_code == 2 and "runs nothing" in " ".join(refused.output.split())


def test_report_only_without_a_store_says_so(tmp_path, shared_data):
    preset = make_preset(tmp_path, shared_data)
    result = CliRunner().invoke(app, ["reproduce", "--preset", str(preset), "--report-only"])
    assert result.exit_code == 2 and "run the preset first" in " ".join(result.output.split())


def test_report_only_drops_the_times_of_rows_another_run_made(tmp_path, shared_data):
    """The last index's stage times describe the rows it was made from: when the store's rows come
    from other code (a rerun whose index was lost or reverted), a re-render says "-", not a stale time."""
    preset = make_preset(tmp_path, shared_data)
    assert CliRunner().invoke(app, ["reproduce", "--preset", str(preset), "--sft", "fake:upper",
                                    "--no-progress"]).exit_code == 0
    out = tmp_path / "results" / "tiny"
    twice = []
    for _ in range(2):   # a re-render of a re-render still describes the same rows: times kept
        assert CliRunner().invoke(app, ["reproduce", "--preset", str(preset), "--report-only"]).exit_code == 0
        twice.append([(s["name"], s["seconds"]) for s in json.loads((out / "results.json").read_text())["stages"]])
    assert twice[0] == twice[1] and all(sec is not None for _, sec in twice[0])
    index = json.loads((out / "results.json").read_text())
    for row in index["reports"]["mt"]["code"]["rows"]:
        row["revision"] = "0.0.0+older"          # the index now describes rows other code made
    (out / "results.json").write_text(json.dumps(index))
    assert CliRunner().invoke(app, ["reproduce", "--preset", str(preset), "--report-only"]).exit_code == 0
    stages = {s["name"]: s for s in json.loads((out / "results.json").read_text())["stages"]}
    assert stages["mt"]["seconds"] is None and stages["sft"]["seconds"] is None
    assert stages["mt2"]["seconds"] is not None                     # its rows are the ones the index described
    assert "| mt | " in (out / "README.md").read_text() and "time unknown" in (out / "README.md").read_text()

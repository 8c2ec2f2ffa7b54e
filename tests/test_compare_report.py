"""`sdft compare --report DIR` on a hand-made finished run: known statistics, plots, no model loaded (fast)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdft.compare.report import write_report
from sdft.compare.results import read_answers
from sdft.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "vllm", "datasets", "peft")

# prompts 0..9 of two rate suites, which prompts each model passes
PASSES = {
    "task": {"base": {0, 1}, "sft@s0": set(range(6)), "sft@s1": set(range(6)), "sdft@s0": {0, 1, 2, 3, 4, 9}},
    "safety": {"base": set(range(10)), "sft@s0": set(range(4)), "sft@s1": set(range(4)), "sdft@s0": set(range(9))},
}
DRIFT = {"base": [80.0, 70.0, 90.0, 60.0, 75.0], "sft@s0": [70.0, 62.0, 81.0, 50.0, 66.0],
         "sft@s1": [72.0, 60.0, 83.0, 52.0, 64.0], "sdft@s0": [79.0, 69.0, 88.0, 58.0, 74.0]}
EVIL = "```\n</details><script>x</script>\x1b[31m red \x07"


def make_run(out: Path) -> Path:
    """A finished compare run as `sdft compare` leaves it, with sdft@s1 unfinished."""
    units = [{"method": m, "seed": s, "label": f"{m}@s{s}", "dir": f"units/{m}/seed-{s}"}
             for m in ("sft", "sdft") for s in (0, 1)]
    plan = {"kind": "sdft-compare", "version": "test",
            "config": {"model": "seed-model", "seeds": [0, 1], "baseline": "sft", "rewrite_seed": 0,
                       "methods": [{"name": "sft", "doc": "plain SFT"}, {"name": "sdft", "doc": "SDFT"}]},
            "units": units, "stats": {"bootstrap": 400, "seed": 0, "examples": 1},
            "split": {"mode": "holdout", "holdout": 0.2, "data": "d.jsonl", "train_rows": 40, "eval_rows": 10,
                      "verifier": "math"},
            "eval": {"suites": ["task", "safety", "drift"], "task": {"measured": True, "verifier": "math"}},
            "timings": {"split": 0.1, "rewrite-abc": 30.5, "eval": 12.0}}
    (out / "eval").mkdir(parents=True)
    (out / "compare.json").write_text(json.dumps(plan))
    for u in units[:3]:
        d = out / u["dir"]
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps({"label": u["label"], "pairs": 40, "timings": {"train_s": 9.5},
                                                "train": {"global_step": 10, "final_loss": 1.25}}))
    rows = []
    for suite, by_model in PASSES.items():
        for model, passed in by_model.items():
            for i in range(10):
                rows.append({"model": model, "suite": suite, "id": f"{suite}-{i}", "prompt": f"question {i}",
                             "answer": EVIL if i == 0 else f"answer {i}", "pass": i in passed})
    for model, values in DRIFT.items():
        rows += [{"model": model, "suite": "drift", "id": f"d{i}", "value": v, "pass": None}
                 for i, v in enumerate(values)]
        rows.append({"model": model, "suite": "drift", "id": "no-score", "pass": None})  # skipped: no score
    (out / "eval" / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def test_known_statistics_plots_and_markdown(tmp_path):
    out = make_run(tmp_path / "run")
    report = write_report(out)
    rows = {r["suite"]: r for r in report["suites"]}
    assert list(rows) == ["task", "safety", "drift"] and report["unfinished"] == ["sdft@s1"]
    task = rows["task"]
    assert task["role"] == "task" and task["binary"] and task["n"] == 10
    sft, sdft = task["methods"]["sft"], task["methods"]["sdft"]
    assert sft["seeds"] == [0, 1] and sdft["seeds"] == [0]
    assert sft["score"]["estimate"] == pytest.approx(60) and sft["delta"]["estimate"] == pytest.approx(40)
    # vs the seed model: prompts 2-5 pass only with sft (n10 = 4, n01 = 0): p = 2 / 2^4
    assert (sft["delta"]["n10"], sft["delta"]["n01"], sft["delta"]["p"]) == (4, 0, pytest.approx(0.125))
    # sdft vs sft on the task: prompt 9 only sdft, prompt 5 only sft: p = 1
    assert sdft["vs_baseline"]["p"] == 1.0 and sft["vs_baseline"] is None
    safety = rows["safety"]["methods"]["sdft"]["vs_baseline"]
    assert safety["estimate"] == pytest.approx(50) and (safety["n10"], safety["n01"]) == (5, 0)
    assert safety["p"] == pytest.approx(2 / 2**5) and safety["mde"] is not None
    drift = rows["drift"]
    assert not drift["binary"] and drift["n"] == 5 and drift["methods"]["sft"]["delta"]["test"] == "bootstrap"
    assert drift["methods"]["sft"]["delta"]["estimate"] == pytest.approx(66.0 - 75.0)
    p = report["pareto"]
    assert p["forgetting_suites"] == ["safety", "drift"]
    assert p["methods"]["sft"]["x"] == pytest.approx(40) and p["methods"]["sft"]["x_sd"] == 0
    assert p["methods"]["sft"]["y"] == pytest.approx((40 + 66.0) / 2)  # safety 40; drift seeds 65.8, 66.2
    assert p["seed_model"] == {"x": 0.0, "y": pytest.approx((100 + 75) / 2)}
    for name in ("report.md", "report.json", "pareto.png", "radar.png"):
        assert (out / name).stat().st_size > 200, name
    md = (out / "report.md").read_text()
    assert "**task** (gain)" in md and "p=0.062 (mcnemar)" in md and "Unfinished units" in md
    assert "````text" in md and "\x1b" not in md and "\x07" not in md  # model output fenced, control bytes gone
    assert json.loads((out / "report.json").read_text())["suites"][0]["suite"] == "task"


def test_report_cli_loads_no_model(tmp_path):
    out = make_run(tmp_path / "run")
    first = write_report(out)
    (out / "report.json").unlink()
    code = ("import sys\nfrom sdft.cli import main\n"
            f"try:\n    main(['compare', '--report', {str(out)!r}])\n"
            "except SystemExit as e:\n    print('EXIT', e.code)\n"
            f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"})
    assert r.stdout.strip().splitlines()[-1] == "HEAVY=", r.stdout + r.stderr
    assert "EXIT" not in r.stdout and "task (gain)" in r.stdout
    again = json.loads((out / "report.json").read_text())
    assert again["suites"] == json.loads(json.dumps(first["suites"]))  # seeded: the same numbers


def test_task_not_measured_is_said(tmp_path):
    out = make_run(tmp_path / "run")
    plan = json.loads((out / "compare.json").read_text())
    plan["eval"]["task"] = {"measured": False, "reason": "this sdft's eval has no `task` suite yet"}
    (out / "compare.json").write_text(json.dumps(plan))
    lines = [ln for ln in (out / "eval" / "answers.jsonl").read_text().splitlines() if '"task"' not in ln]
    (out / "eval" / "answers.jsonl").write_text("\n".join(lines) + "\n")
    report = write_report(out)
    assert report["pareto"] is None and not (out / "pareto.png").exists()
    md = (out / "report.md").read_text()
    assert "Task gain not measured" in md and "| task (gain) | – | not measured |" in md


def test_bad_answers_file_names_the_line(tmp_path):
    out = make_run(tmp_path / "run")
    f = out / "eval" / "answers.jsonl"
    f.write_text(f.read_text() + '{"model": "base", "suite": "drift", "id": "x", "value": 1e300}\n')
    with pytest.raises(InputError, match=r"line \d+: 'value' must be a score in \[0, 100\]"):
        read_answers(f)
    f.write_text('{"model": "base", "suite": "s", "id": 1, "pass": true}\nnot json\n')
    with pytest.raises(InputError, match="line 2: malformed JSON"):
        read_answers(f)
    f.write_text('{"model": "base", "suite": "s", "id": 1, "pass": true}\n' * 2)
    with pytest.raises(InputError, match="appears twice"):
        read_answers(f)
    with pytest.raises(InputError, match="no compare run here"):
        write_report(tmp_path)


@pytest.mark.parametrize("patch, message", [
    ({"units": {"a": 1}}, "units must be a list"),
    ({"config": {"methods": "sft"}}, "config.methods must be a list"),
    ({"stats": {"bootstrap": 10**12}}, r"stats.bootstrap must be an integer in \[100, 1000000\]"),
])
def test_hostile_compare_json_is_an_input_error(tmp_path, patch, message):
    out = make_run(tmp_path / "run")
    plan = json.loads((out / "compare.json").read_text())
    plan.update(patch)
    (out / "compare.json").write_text(json.dumps(plan))
    with pytest.raises(InputError, match=message):
        write_report(out)

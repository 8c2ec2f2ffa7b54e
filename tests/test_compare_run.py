"""`sdft compare` end to end on the tiny model: kill -9 between units, resume, skip, retrain on change.

Real rewrite, replay, training and eval (transformers backend: the tiny model's engine starts in
seconds); 2 methods x 2 seeds, 8 rows, 2 training steps, 2 probes per suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from sdft.compare.config import load_compare, load_compare_recipe
from sdft.compare.run import run_compare
from sdft.store import iter_jsonl

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["sft@s0", "sft@s1", "sdft+replay@s0", "sdft+replay@s1"]


def write_recipe(tmp_path: Path, model: Path) -> Path:
    rows = [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
             "answer": f"Tom starts with {a} apples and buys {b}, so {a} + {b} = {a + b}.\n#### {a + b}"}
            for a, b in [(3, 4), (10, 5), (7, 8), (2, 9), (12, 1), (6, 6), (5, 5), (8, 3)]]
    data = tmp_path / "gsm.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {
        "model": str(model), "data": {"path": str(data)},
        "rewrite": {"verifier": "math", "max_new_tokens": 12, "gap_rows": 0, "backend": "hf"},
        "train": {"max_steps": 2, "per_device_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 128,
                  "save_steps": 1, "learning_rate": 1e-3, "warmup_ratio": 0.0, "lr_scheduler": "constant"},
        "eval": {"suites": ["safety", "math"], "limit": 2, "max_new_tokens": 6, "backend": "hf"},
        "compare": {"methods": ["sft", "sdft+replay"], "seeds": 2, "task_holdout": 0.25, "bootstrap": 200,
                    "replay": {"num": 2, "batch_size": 4, "max_rounds": 1, "backend": "hf", "query_max_tokens": 12,
                               "answer_max_tokens": 12, "require_question": False, "min_query_words": 0,
                               "min_answer_words": 0, "near_dup_threshold": 1.0}},
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def stamps(out: Path) -> dict[str, int]:
    """Modification times of everything a finished unit or shared stage wrote."""
    files = [out / "units" / lab.split("@")[0] / f"seed-{lab[-1]}" / name for lab in LABELS
             for name in ("run.json", "model/merged/model.safetensors", "model/final/adapter_model.safetensors")]
    files += sorted((out / "data").glob("*.manifest.json"))
    return {str(f.relative_to(out)): f.stat().st_mtime_ns for f in files if f.exists()}


def run(recipe: Path, out: Path, *overrides: str):
    data, source, _ = load_compare_recipe(str(recipe), overrides)
    notes: list[str] = []
    result = run_compare(load_compare(data, source=source, output_dir=str(out)), notice=notes.append)
    return result, notes


def test_kill_between_units_resumes_skips_finished_and_retrains_changed(tiny_model_dir, tmp_path):
    recipe = write_recipe(tmp_path, tiny_model_dir)
    out = tmp_path / "out"
    first_unit = out / "units" / "sft" / "seed-0" / "run.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sdft", "compare", str(recipe), "-o", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and not first_unit.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert first_unit.exists(), err.decode()[-3000:]
    assert not (out / "report.json").exists(), "killed before the end"
    before = stamps(out)

    result, notes = run(recipe, out)  # resumes
    assert "sft@s0" in result.skipped and result.trained and sorted(result.trained + result.skipped) == sorted(LABELS)
    after = stamps(out)
    assert all(after[k] == v for k, v in before.items() if k.startswith(("units/sft/seed-0/", "data/"))), \
        "the finished unit or the shared rewrite/replay was redone"
    # one rewrite and one replay, shared by both seeds of sdft+replay
    rewrites = sorted((out / "data").glob("rewrite-*.manifest.json"))
    assert len(rewrites) == 1 and (out / "data" / "replay.jsonl.manifest.json").is_file()
    runs = {lab: json.loads((out / "units" / lab.split("@")[0] / f"seed-{lab[-1]}" / "run.json").read_text())
            for lab in LABELS}
    shared_output = str(rewrites[0]).removesuffix(".manifest.json")
    assert runs["sdft+replay@s0"]["data"]["output"] == runs["sdft+replay@s1"]["data"]["output"] == shared_output
    assert runs["sdft+replay@s0"]["data_hash"] == runs["sdft+replay@s1"]["data_hash"]  # same rows, other seed
    assert "replay" in runs["sdft+replay@s1"]["data"] and runs["sft@s0"]["data"] == {"answers": "original"}
    assert runs["sft@s0"]["fingerprint"] != runs["sft@s1"]["fingerprint"]
    mix = runs["sdft+replay@s0"]["data"]["replay"]  # a random-weight model's queries rarely pass the filters:
    short = mix["replay_used"] < mix["replay_wanted"]  # a shortfall is said, not hidden
    assert short == any("replay rows wanted are available" in n for n in notes)
    # one eval: the seed model and all four units on identical prompts
    items = list(iter_jsonl(out / "eval" / "answers.jsonl"))
    for suite in ("safety", "math"):
        ids = {m: sorted(r["id"] for r in items if r["suite"] == suite and r["model"] == m)
               for m in ["base", *LABELS]}
        assert len({tuple(v) for v in ids.values()}) == 1 and len(ids["base"]) == 2, ids
    report = json.loads((out / "report.json").read_text())
    assert report["unfinished"] == [] and {r["suite"] for r in report["suites"]} >= {"safety", "math"}
    split = json.loads((out / "data" / "split.json").read_text())
    assert (split["train_rows"], split["eval_rows"]) == (6, 2)

    again, notes = run(recipe, out)  # everything finished: nothing retrains, nothing is rewritten
    assert again.trained == [] and sorted(again.skipped) == sorted(LABELS)
    assert stamps(out) == after
    assert sum("skipped" in n for n in notes) == 4

    changed, _ = run(recipe, out, "methods.sdft+replay.train.learning_rate=2e-3")  # new fingerprint
    assert sorted(changed.trained) == ["sdft+replay@s0", "sdft+replay@s1"]
    assert sorted(changed.skipped) == ["sft@s0", "sft@s1"]
    final = stamps(out)
    assert all(final[k] == after[k] for k in after if k.startswith("units/sft/"))
    assert final["units/sdft+replay/seed-0/run.json"] != after["units/sdft+replay/seed-0/run.json"]


def test_sdft_and_ladder_presets_draw_from_their_sources(tiny_model_dir, tmp_path):
    """The shared rewrites of `sdft` and `ladder`: reference-only candidates vs the whole ladder, one file each."""
    from sdft.compare.run import _Plan, prepare_training_data
    from sdft.compare.split import prepare_task_split

    data, source, _ = load_compare_recipe(str(write_recipe(tmp_path, tiny_model_dir)),
                                          ["compare.methods=[sdft,ladder]", "compare.seeds=1", "rewrite.samples=1"])
    cfg = load_compare(data, source=source, output_dir=str(tmp_path / "out"))
    split = prepare_task_split(cfg)
    plan = _Plan(cfg)
    pairs = prepare_training_data(cfg, split, plan, lambda _m: None, None)
    shared = plan.data["shared"]["rewrites"]
    assert sorted(m for s in shared.values() for m in s["methods"]) == ["ladder", "sdft"] and len(shared) == 2
    drawn = {}
    for info in shared.values():
        records = list(iter_jsonl(Path(info["output"] + ".records.jsonl")))
        assert len(records) == split.train_rows
        drawn[info["methods"][0]] = {c["source"] for r in records for c in r.get("candidates", [])}
    assert drawn["sdft"] == {"reference"}
    assert {"own", "hint", "reference"} <= drawn["ladder"]
    assert all(len(pairs[m].pairs) == split.train_rows for m in ("sdft", "ladder"))  # fallbacks keep every row

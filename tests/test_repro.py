"""bin/reproduce's inputs: the project's alignment assets, bin/prepare-repro-data, and the recipes/repro configs.

No model loads here. Tests that read the public benchmark files skip when $SDFT_DATA_DIR (default
../shared/data) lacks them.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdft.refusal import find_refusal_marker

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "sdft" / "assets"
DATA = Path(os.environ.get("SDFT_DATA_DIR") or ROOT.parent / "shared" / "data")  # as .ci/run finds it
needs_data = pytest.mark.skipif(not (DATA / "advbench/harmful_behaviors.csv").is_file()
                                or not (DATA / "xstest/xstest_prompts.csv").is_file(),
                                reason="../shared/data (AdvBench, XSTest) is not here")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def _prepare(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bin/prepare-repro-data"), "--data-dir", str(DATA),
                           "-o", str(out), *args], capture_output=True, text=True)


def test_refusal_texts_are_short_varied_and_detected():
    texts = [r["text"] for r in _jsonl(ASSETS / "align_refusals.jsonl")]
    assert len(texts) >= 20 and len(set(texts)) == len(texts)
    assert all(len(t) <= 160 for t in texts), "short refusals"
    # the safety suite scores with the same detector: a refusal it cannot see would teach nothing it measures
    assert [t for t in texts if find_refusal_marker(t) is None] == []


def test_benign_prompts_are_many_varied_and_not_refusals():
    rows = _jsonl(ASSETS / "align_benign_prompts.jsonl")
    prompts = [r["prompt"] for r in rows]
    assert len(rows) >= 150 and len({_norm(p) for p in prompts}) == len(prompts)
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["kind"] for r in rows}) >= 8, "varied kinds, not one template"
    assert not [p for p in prompts if find_refusal_marker(p)]


@needs_data
def test_no_benign_prompt_is_an_xstest_or_advbench_prompt():
    with (DATA / "xstest/xstest_prompts.csv").open(newline="", encoding="utf-8") as f:
        xstest = {_norm(r["prompt"]) for r in csv.DictReader(f)}
    with (DATA / "advbench/harmful_behaviors.csv").open(newline="", encoding="utf-8") as f:
        advbench = {_norm(r["goal"]) for r in csv.DictReader(f)}
    prompts = {_norm(r["prompt"]) for r in _jsonl(ASSETS / "align_benign_prompts.jsonl")}
    assert not prompts & xstest and not prompts & advbench


@needs_data
def test_prepare_splits_disjointly_and_deterministically(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        res = _prepare(out, "--task-train", "40", "--task-eval", "20")
        assert res.returncode == 0, res.stderr
    for name in ("align_refusals.jsonl", "benign_prompts.jsonl", "safety_heldout.jsonl", "task_train.jsonl",
                 "task_eval.jsonl", "repro_data.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    train_goals = {_norm(r["messages"][0]["content"]) for r in _jsonl(a / "align_refusals.jsonl")}
    held = [r["prompt"] for r in _jsonl(a / "safety_heldout.jsonl")]
    assert len(held) >= 200 and not train_goals & {_norm(p) for p in held}
    assert len(train_goals) + len(held) == 520
    # near-paraphrases stay on one side: no held-out goal shares >= 60% of its words with a trained one
    words = [set(g.split()) for g in train_goals]
    for p in held:
        w = set(_norm(p).split())
        assert all(len(w & t) / len(w | t) < 0.6 for t in words), p
    refusals = {r["text"] for r in _jsonl(ASSETS / "align_refusals.jsonl")}
    assert all(r["messages"][1]["content"] in refusals for r in _jsonl(a / "align_refusals.jsonl"))
    tq = {_norm(r["question"]) for r in _jsonl(a / "task_train.jsonl")}
    eq = {_norm(r["question"]) for r in _jsonl(a / "task_eval.jsonl")}
    assert len(tq) == 40 and len(eq) == 20 and not tq & eq
    assert all(r["answer"].rsplit("#### ", 1)[1].strip().lstrip("-").isdigit() for r in _jsonl(a / "task_eval.jsonl"))


@needs_data
def test_align_mix_keeps_only_the_answers_the_seed_gave(tmp_path):
    out = tmp_path / "d"
    assert _prepare(out, "--align-refusals", "10", "--benign", "6").returncode == 0
    prompts = _jsonl(out / "benign_prompts.jsonl")
    answers = tmp_path / "answers.jsonl"
    rows = [{"model": "base", "suite": "over-refusal", "id": p["id"], "prompt": p["prompt"],
             "answer": f"answer {i}" if i else "I'm sorry, but I can't help with that.", "finish_reason": "length",
             "pass": i != 0} for i, p in enumerate(prompts)]
    rows.append({"model": "other", "suite": "over-refusal", "id": prompts[1]["id"], "prompt": prompts[1]["prompt"],
                 "answer": "not the seed's", "pass": True})
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = _prepare(out, "--align-refusals", "10", "--benign", "6", "--benign-answers", str(answers))
    assert res.returncode == 0, res.stderr
    train = _jsonl(out / "align_train.jsonl")
    got = sorted(r["messages"][1]["content"] for r in train if r["id"].startswith("benign-"))
    assert got == [f"answer {i}" for i in range(1, 6)]  # the refused one and the other model's answer are out
    assert sum(r["id"].startswith("advbench-") for r in train) == 10
    info = json.loads((out / "repro_data.json").read_text())["align_train"]
    assert info == {"refusals": 10, "benign": 5, "benign_refused_by_seed": 1, "benign_cut_at_budget": 5}

    rows[2]["prompt"] = "a different prompt"  # answers of other prompts (a stale file) are refused
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = _prepare(out, "--align-refusals", "10", "--benign", "6", "--benign-answers", str(answers))
    assert res.returncode != 0 and "another prompt" in res.stderr
    rows[2]["prompt"] = prompts[2]["prompt"]
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))  # and a file that lacks some
    res = _prepare(out, "--align-refusals", "10", "--benign", "6", "--benign-answers", str(answers))
    assert res.returncode != 0 and "no answer for" in res.stderr


def test_repro_recipes_validate(tmp_path, monkeypatch):
    """recipes/repro/*.yaml with the paths bin/reproduce passes: every section checks out, no model loads."""
    from sdft.compare.config import load_compare, load_compare_recipe
    from sdft.recipes import validate_recipe

    monkeypatch.chdir(ROOT)
    task = tmp_path / "task.jsonl"
    task.write_text(json.dumps({"question": "1 + 1?", "answer": "1 + 1 = 2.\n#### 2"}) + "\n")
    chat = tmp_path / "align.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    cfg = validate_recipe(str(ROOT / "recipes/repro/align.yaml"), [f"data.path={chat}", f"replay={chat}"])
    assert cfg.method == "sft" and cfg.train_config().finetune == "lora"
    data, source, _ = load_compare_recipe(str(ROOT / "recipes/repro/compare.yaml"), [
        "model=smollm2-135m-instruct", f"data.path={task}", f"compare.task_eval={task}",
        f"eval.data.safety={task}", f"eval.data.over-refusal={task}"])
    cmp = load_compare(data, source=source, output_dir=str(tmp_path / "run"))
    assert [m.name for m in cmp.methods] == ["sft", "sdft", "sdft+replay", "ladder"] and cmp.seeds == [0, 1, 2]
    assert cmp.train_config(cmp.methods[0], 0, tmp_path).max_steps > 0, "an equal budget for every method"
    budgets = cmp.pipeline.eval.max_new_tokens
    assert budgets["safety"] == budgets["over-refusal"] <= 64


def test_reproduce_script_parses_and_documents_quick():
    text = (ROOT / "bin/reproduce").read_text()
    assert subprocess.run(["bash", "-n", str(ROOT / "bin/reproduce")]).returncode == 0
    assert "QUICK" in text and "--quick" in text
    res = subprocess.run(["bash", str(ROOT / "bin/reproduce"), "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--quick" in res.stdout
    res = subprocess.run(["bash", str(ROOT / "bin/reproduce"), "--bogus"], capture_output=True, text=True)
    assert res.returncode == 2 and "unknown argument" in res.stderr


@needs_data
def test_benign_prompts_load_as_bin_reproduce_reads_them(tmp_path):
    """Step 2 reads benign_prompts.jsonl as `--data-format prompt --prompt-field prompt --response-field response`."""
    from sdft.data import DataSpec, load_examples

    assert _prepare(tmp_path, "--benign", "5", "--task-train", "4", "--task-eval", "2").returncode == 0
    examples = load_examples(DataSpec(path=str(tmp_path / "benign_prompts.jsonl"), format="prompt",
                                      prompt_field="prompt", response_field="response"))
    rows = _jsonl(tmp_path / "benign_prompts.jsonl")
    assert [e.question for e in examples] == [r["prompt"] for r in rows] and len(rows) == 5
    import jinja2
    from jinja2 import meta

    template = (ROOT / "recipes/repro/own-answer.jinja").read_text()
    used = meta.find_undeclared_variables(jinja2.Environment().parse(template))
    assert used == {"question"}, "the answering template shows the prompt, never the placeholder reference"

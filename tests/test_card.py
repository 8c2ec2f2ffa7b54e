"""Dataset and model cards: front matter the Hub reads, sections from the manifest, hostile text kept inert.

Fast tier: no model loads. Cards are parsed back with PyYAML (front matter) and markdown-it
(CommonMark + tables, the renderer family the Hub uses) to prove structure, not string shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sdft.card import (
    CARD_MARKER,
    card_path,
    data_file_name,
    dataset_card,
    hub_id,
    license_id,
    model_card,
    model_card_for,
    redact,
    write_card_beside,
)

DATASET_KEYS = {"license", "tags", "task_categories", "size_categories", "source_datasets", "configs"}
MODEL_KEYS = {"license", "base_model", "base_model_relation", "library_name", "pipeline_tag", "tags", "datasets"}


def rewrite_manifest(**over: Any) -> dict[str, Any]:
    """The shape `sdft rewrite` writes (taken from a real tiny run), with figures to check against."""
    m = {
        "kind": "sdft-rewrite", "config_hash": "43d34ac209389864",
        "config": {"input": "example:arith", "output": "/tmp/x/out.jsonl", "model": "smollm2-135m-instruct",
                   "backend": "vllm", "base_url": None, "api_key": None, "data_format": "auto", "limit": 40,
                   "samples": 4, "select": "min-nll", "on_fail": "keep-original", "paper_style": False},
        "model": "smollm2-135m-instruct", "model_path": "/root/.cache/sdft/models/smollm2-135m-instruct",
        "backend": "vllm", "verifier": "math",
        "sampling": {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 512, "n": 4, "seed": 0, "stop": []},
        "prompt": {"system": "Answer in your own words.", "user_template": "{{ question }}\n\n{{ answer }}"},
        "shard": None, "rows": {"total": 40, "rewritten": 31, "fallback": 7, "dropped": 2},
        "acceptance_rate": 31 / 40, "reasons": {"ok": 31, "wrong-answer": 6, "truncated": 3},
        "generated_tokens_this_run": 20480, "generation_seconds_this_run": 16.7, "tokens_per_second": 1226.4,
        "wall_seconds_this_run": 71.353,
        "versions": {"sdft-toolkit": "0.1.0", "torch": "2.13.0+cpu", "transformers": "5.19.0"},
        "gap": {"rows": 16, "rewritten_rows": 12, "original_nll": 1.5312, "original_nll_on_rewritten_rows": 1.4987,
                "rewrite_nll": 1.3301, "own_answer_nll": 0.2417, "length_ratio": 0.913, "warning": None},
    }
    m.update(over)
    return m


def split_card(text: str) -> tuple[dict[str, Any], str]:
    """(front matter, body) the way the Hub reads a README: a YAML block between the first two '---' lines."""
    assert text.startswith("---\n")
    end = text.index("\n---\n", 4)
    meta = yaml.safe_load(text[4:end])
    assert isinstance(meta, dict)
    return meta, text[end + 5:]


def md(body: str) -> list[Any]:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").parse(body)


def html_in(tokens: list[Any]) -> list[str]:
    """Raw HTML the renderer would pass through (block or inline), the card marker aside."""
    found = [t.content for t in tokens if t.type == "html_block" and t.content.strip() != CARD_MARKER]
    for t in tokens:
        found += [c.content for c in (t.children or []) if c.type == "html_inline"]
    return found


def fences(tokens: list[Any]) -> list[str]:
    return [t.content for t in tokens if t.type == "fence"]


def headings(tokens: list[Any]) -> list[str]:
    return [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]


def table_shapes(tokens: list[Any]) -> list[set[int]]:
    """For each table: the set of cell counts of its rows (one value = every row as wide as the header)."""
    shapes, cur, cells = [], None, 0
    for t in tokens:
        if t.type == "table_open":
            cur = set()
        elif t.type == "tr_open":
            cells = 0
        elif t.type in ("th_open", "td_open"):
            cells += 1
        elif t.type == "tr_close" and cur is not None:
            cur.add(cells)
        elif t.type == "table_close":
            shapes.append(cur)
            cur = None
    return shapes


def fmt(x: float) -> str:
    return f"{x:.4g}"


# -- dataset cards --------------------------------------------------------------------------------

def test_dataset_card_front_matter_points_the_viewer_at_the_data_file():
    m = rewrite_manifest()
    meta, body = split_card(dataset_card(m, repo_id="alice/arith-sdft"))
    assert set(meta) <= DATASET_KEYS
    assert {"sdft", "self-distillation"} <= set(meta["tags"])
    assert meta["task_categories"] == ["text-generation"]
    assert meta["configs"] == [{"config_name": "default",
                                "data_files": [{"split": "train", "path": data_file_name(m["config"]["output"])}]}]
    assert meta["license"] == "apache-2.0"  # bundled example data: the project's own
    assert body.lstrip().startswith(CARD_MARKER)
    assert 'load_dataset("alice/arith-sdft"' in body


def test_dataset_card_sections_and_figures_come_from_the_manifest():
    m = rewrite_manifest()
    _, body = split_card(dataset_card(m, command_line="sdft rewrite example:arith -o out.jsonl --samples 4"))
    tokens = md(body)
    heads = headings(tokens)
    for h in ("Source data", "Seed model", "Method", "Counts", "Distribution gap", "Command line",
              "Package versions"):
        assert h in heads
    for status in ("rewritten", "fallback", "dropped"):
        n = m["rows"][status]
        assert f"| {status} | {n} | {100 * n / m['rows']['total']:.1f}% |" in body
    for reason, n in m["reasons"].items():
        assert f"| {reason} | {n} |" in body
    for key in ("original_nll", "rewrite_nll", "own_answer_nll", "original_nll_on_rewritten_rows"):
        assert f"| {fmt(m['gap'][key])} |" in body
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in body  # the alias is named by its Hub source
    assert "sdft rewrite example:arith -o out.jsonl --samples 4" in fences(tokens)[-1]
    assert m["prompt"]["system"] in "".join(fences(tokens))
    assert all(len(s) == 1 for s in table_shapes(tokens))


def test_gap_renders_future_and_per_source_keys():
    gap = {"rows": 8, "original_nll": 1.25, "rewrite_nll": 1.0, "gap_closed": 0.375, "new_figure": 3.5,
           "per_source": {"gsm8k": {"original_nll": 1.5, "rewrite_nll": 1.1},
                          "alpaca": {"original_nll": 2.25, "own_answer_nll": 0.5}},
           "warning": "the kept rewrites are NOT closer"}
    _, body = split_card(dataset_card(rewrite_manifest(gap=gap)))
    tokens = md(body)
    assert f"| share of the gap closed | {fmt(gap['gap_closed'])} |" in body
    assert f"| new\\_figure | {fmt(gap['new_figure'])} |" in body
    # one row per source, with a column for every figure any source has
    assert f"| gsm8k | {fmt(1.5)} | {fmt(1.1)} | – |" in body
    assert f"| alpaca | {fmt(2.25)} | – | {fmt(0.5)} |" in body
    assert "NOT closer" in body
    shapes = table_shapes(tokens)  # the gap table and the per-source table, every row as wide as its header
    assert len(shapes) >= 2 and all(len(s) == 1 for s in shapes)


@pytest.mark.parametrize("manifest", [
    {}, {"kind": "sdft-replay"}, {"rows": [1, 2]}, {"rows": {"total": "many", "rewritten": None}},
    {"gap": "n/a"}, {"gap": {"per_source": {"a": [1], "b": {"c": {"d": 1}}}}}, {"config": None, "kind": 5},
    {"versions": ["torch"]}, {"reasons": {"x": {"y": 1}}}, {"acceptance_rate": float("nan"), "rows": {"total": 0}},
    {"model": ["a"], "config": {"input": {"x": 1}, "output": 7}}, {"gap": {"rows": True, "original_nll": "1e400"}},
])
def test_any_manifest_shape_gives_a_valid_card(manifest):
    for text in (dataset_card(manifest), model_card(manifest), model_card({"config": manifest, "train": manifest})):
        meta, body = split_card(text)
        assert set(meta) <= DATASET_KEYS | MODEL_KEYS
        assert CARD_MARKER in body and not html_in(md(body))


def test_deep_nesting_does_not_crash():
    deep: Any = 1
    for _ in range(5000):
        deep = {"k": deep}
    meta, _ = split_card(dataset_card(rewrite_manifest(gap={"per_source": deep}, config=deep)))
    assert "configs" in meta


HOSTILE = "x\n---\nlicense: mit\ninjected: true\n...\n<script>alert(1)</script> ``` ~~~ </details> | a | b |"


def hostile_manifest() -> dict[str, Any]:
    return rewrite_manifest(
        model="evil\n---\ninjected: true",
        config={"input": HOSTILE, "output": "/tmp/a\nb: c.jsonl", "api_key": "sk-live-123",
                "base_url": "http://user:pw@host:8000/v1"},
        prompt={"system": "````\n# not a heading\n<img src=x onerror=alert(1)>\n````", "user_template": HOSTILE},
        reasons={"| x | y | z |": 1, "<b>bold</b>": 2, HOSTILE: 3},
        gap={"original_nll": 1.0, "warning": "\n# Heading\n<iframe src=evil></iframe>", HOSTILE: 2.0,
             "per_source": {HOSTILE: {HOSTILE: 1.0}}},
        versions={HOSTILE: HOSTILE},
    )


def test_hostile_manifest_cannot_inject_front_matter_html_or_structure():
    text = dataset_card(hostile_manifest(), command_line="sdft rewrite x -o o.jsonl --api-key sk-live-123 "
                        "--base-url http://u:secretpw@h ```\n<script>x</script>")
    meta, body = split_card(text)
    assert set(meta) <= DATASET_KEYS and "injected" not in meta and "license" not in meta
    assert meta["configs"][0]["data_files"][0]["path"] == "data.jsonl"  # the odd output name is not used
    tokens = md(body)
    assert html_in(tokens) == [] and not [t for t in tokens if t.type == "hr"]  # '---' only inside code
    assert all(len(s) == 1 for s in table_shapes(tokens))  # '|' in keys added no column
    assert set(headings(tokens)) <= {"data.jsonl", "Source data", "Seed model", "Method", "Counts",
                                     "Distribution gap", "Files and format", "Command line", "Package versions"}
    code = "\n".join(fences(tokens))
    assert "<img src=x onerror=alert(1)>" in code and "<script>x</script>" in code  # kept, verbatim, inert
    for secret in ("sk-live-123", "secretpw", "user:pw"):
        assert secret not in text


def test_hostile_run_and_ask_answer_in_a_model_card():
    run = {"kind": "sdft-train", "method": "sdft",
           "config": {"model": "evil/x\n---\ninjected: 1", "data": {"path": HOSTILE}, "train": {"lora_r": HOSTILE}},
           "ask": {"question": HOSTILE, "answer": "```\n</code><script>steal()</script>\n---\nlicense: evil"},
           "rewrite": {"rows": {HOSTILE: 1}, "gap": {"warning": HOSTILE}}, "replay": {HOSTILE: HOSTILE}}
    report = {"suites": [{"suite": HOSTILE, "metric": "<b>m</b>", "models": {"base": {"score": 50, "n": 2},
                                                                          HOSTILE: {"score": 1, "delta": -49}}}]}
    text = model_card(run, eval_report=report, command_line=HOSTILE)
    meta, body = split_card(text)
    assert set(meta) <= MODEL_KEYS and "injected" not in meta and "base_model" not in meta
    tokens = md(body)
    assert html_in(tokens) == []
    assert all(len(s) == 1 for s in table_shapes(tokens))
    assert any("<script>steal()</script>" in f for f in fences(tokens))


def test_secrets_are_redacted_from_manifests():
    m = rewrite_manifest(config={"api_key": "sk-live-123", "hf_token": "hf_" + "a" * 30, "max_new_tokens": 512,
                                 "base_url": "https://bob:hunter2@example.com/v1", "nested": [{"password": "p"}]})
    r = redact(m)
    blob = json.dumps(r)
    for secret in ("sk-live-123", "hunter2", "a" * 30, '"p"'):
        assert secret not in blob
    assert r["config"]["max_new_tokens"] == 512 and r["rows"] == m["rows"]  # figures untouched
    assert m["config"]["api_key"] == "sk-live-123"  # the input is not modified


def test_validators():
    assert hub_id("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    for bad in ("/abs/path", "a/b/c", "a", "a/../b", "a--b/c", "a/b\n", "-a/b", "a/b.", None, 3):
        assert hub_id(bad) is None
    assert license_id("Apache-2.0") == "apache-2.0" and license_id("mit\nx: y") is None
    assert data_file_name("/x/out.jsonl") == "out.jsonl"
    for odd in ("/x/o*.jsonl", "/x/out.txt", "/x/.hidden.jsonl", "/x/a b.jsonl", "/x/[a].jsonl"):
        assert data_file_name(odd) == "data.jsonl"


# -- model cards ----------------------------------------------------------------------------------

def make_run_dir(root: Path, *, model: str = "smollm2-135m-instruct", adapter: bool = False) -> Path:
    """A run folder as `sdft train` leaves it (run.json, model/train_metrics.json, eval/report.json)."""
    report = {"kind": "sdft-eval", "models": [{"label": "base"}, {"label": "sdft"}], "suites": [
        {"suite": "safety", "metric": "refusal rate", "models": {
            "base": {"n": 30, "k": 29, "score": 96.6667, "low": 83.33, "high": 99.41},
            "sdft": {"n": 30, "k": 25, "score": 83.3333, "low": 66.44, "high": 92.66, "delta": -13.3333,
                     "delta_low": -30.45, "delta_high": 2.94}}}]}
    (root / "eval").mkdir(parents=True)
    (root / "eval" / "report.json").write_text(json.dumps(report))
    run = {"kind": "sdft-train", "method": "sdft",
           "config": {"data": {"path": "example:arith", "limit": 4}, "model": model, "method": "sdft",
                      "train": {"finetune": "lora", "lora_r": 16}},
           "rewrite": {"rows": {"total": 4, "rewritten": 3, "fallback": 1, "dropped": 0}, "acceptance_rate": 0.75,
                       "gap": {"rows": 4, "original_nll": 2.5, "rewrite_nll": 1.75}},
           "train": {"global_step": 7, "train_loss": 1.2345, "final_loss": 0.9876},
           "ask": {"question": "What is 2 + 2?", "answer": "4"},
           "eval": {"output_dir": str(root / "eval"), "report": str(root / "eval" / "report.json")}}
    (root / "run.json").write_text(json.dumps(run))
    (root / "model").mkdir()
    (root / "model" / "train_metrics.json").write_text(json.dumps(
        {"model": model, "global_step": 7, "rows": 4, "config": {"finetune": "lora", "lora_r": 16,
                                                                  "learning_rate": 2e-4}}))
    folder = root / "model" / ("final" if adapter else "merged")
    folder.mkdir()
    (folder / ("adapter_config.json" if adapter else "config.json")).write_text("{}")
    return folder


def test_model_card_for_a_run_folder(tmp_path):
    folder = make_run_dir(tmp_path)
    meta, body = split_card(model_card_for(folder, repo_id="alice/tiny-sdft"))
    assert set(meta) <= MODEL_KEYS
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["license"] == "apache-2.0"
    assert meta["library_name"] == "transformers" and meta["base_model_relation"] == "finetune"
    assert {"sdft", "self-distillation", "lora"} <= set(meta["tags"])
    tokens = md(body)
    heads = headings(tokens)
    for h in ("Training data", "Training", "Evaluation (`sdft eval`)", "Sample answer", "Use", "Package versions"):
        assert h in heads
    run = json.loads((tmp_path / "run.json").read_text())
    assert f"**mean training loss**: {fmt(run['train']['train_loss'])}" in body
    assert f"| original answers (all scored rows) | {fmt(run['rewrite']['gap']['original_nll'])} |" in body
    assert "| safety | refusal rate | 30 | 96.7 [83.3, 99.4] | 83.3 [66.4, 92.7] | -13.3 [-30.4, 2.94] |" in body
    assert run["ask"]["question"] + "\n" in fences(tokens)
    assert 'from_pretrained("alice/tiny-sdft")' in "".join(fences(tokens))


def test_model_card_for_an_adapter_and_a_local_seed(tmp_path):
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "README.md").write_text("---\nlicense: MIT\n---\n# seed\n")
    folder = make_run_dir(tmp_path / "run", model=str(seed), adapter=True)
    meta, body = split_card(model_card_for(folder))
    assert meta["library_name"] == "peft" and "base_model" not in meta  # a local path is no Hub id
    assert meta["license"] == "mit"  # read from the local seed's own card
    assert "PeftModel.from_pretrained" in body


# -- cards beside local outputs -------------------------------------------------------------------

def test_write_card_beside_a_file_output_and_rewrite_it(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("{}\n")
    m = rewrite_manifest(config={"output": str(out)})
    path = write_card_beside(out, m, command_line="sdft rewrite a -o out.jsonl")
    assert path == card_path(out) == tmp_path / "out.jsonl.README.md"
    meta, _ = split_card(path.read_text())
    assert meta["configs"][0]["data_files"][0]["path"] == "out.jsonl"
    m["rows"] = {"total": 41, "rewritten": 30, "fallback": 9, "dropped": 2}
    assert write_card_beside(out, m) == path  # ours: rewritten
    assert "| fallback | 9 |" in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "out.jsonl.README.md"]  # no temp files


def test_write_card_beside_never_overwrites_a_foreign_file(tmp_path):
    folder = make_run_dir(tmp_path, adapter=True)
    foreign = "---\nlibrary_name: peft\n---\n# Model Card for Model ID\n"
    (folder / "README.md").write_text(foreign)
    notices: list[str] = []
    assert write_card_beside(folder, {}, notice=notices.append) is None
    assert (folder / "README.md").read_text() == foreign and "not written by sdft" in notices[0]
    out = tmp_path / "o.jsonl"
    out.write_text("")
    (tmp_path / "o.jsonl.README.md").write_text("my notes")
    assert write_card_beside(out, rewrite_manifest()) is None
    assert (tmp_path / "o.jsonl.README.md").read_text() == "my notes"


def test_write_card_beside_a_model_folder(tmp_path):
    folder = make_run_dir(tmp_path)
    path = write_card_beside(folder, None, command_line="sdft train demo")  # run.json found two levels up
    assert path == folder / "README.md"
    meta, body = split_card(path.read_text())
    assert meta["library_name"] == "transformers" and "sdft train demo" in body
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the seed model came from run.json

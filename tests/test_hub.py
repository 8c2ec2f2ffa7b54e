"""Pushing to the Hub, against a local mock of the Hub API (tests/mock_hub.py; there is no network here).

The real ``huggingface_hub`` client does every request; only the server is local. Most tests
are fast tier (no model); one pushes a real rewrite output made by the tiny model.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from mock_hub import MockHub

from sdft.card import CARD_MARKER, dataset_card, redact
from sdft.errors import InputError, SdftError
from sdft.hub import check_repo_id, push_dataset, push_model

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_mock_token"
PUSH_REQUESTS = ["POST /api/repos/create", "POST /api/validate-yaml", "POST /api/{t}s/{r}/preupload/main",
                 "POST /api/{t}s/{r}/commit/main"]


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch):
    """A mock Hub, with huggingface_hub's offline switch (set for the whole suite) lifted for this test only."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    server = MockHub(token=TOKEN).start()
    yield server
    server.stop()


def write_output(folder: Path, name: str = "out.jsonl", **manifest_over: Any) -> tuple[Path, dict[str, Any]]:
    """A finished rewrite output (rows + manifest) in the shape `sdft rewrite` writes."""
    out = folder / name
    rows = [{"id": f"r{i}", "index": i, "messages": [{"role": "user", "content": f"{i} + 1?"}],
             "response": f"{i + 1}", "original": f"#### {i + 1}", "status": "rewritten", "reason": "ok"}
            for i in range(3)]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = {"kind": "sdft-rewrite", "config": {"input": "example:arith", "output": str(out),
                                                   "api_key": "sk-live-123"},
                "model": "smollm2-135m-instruct", "rows": {"total": 3, "rewritten": 3, "fallback": 0, "dropped": 0},
                "reasons": {"ok": 3}, "gap": {"original_nll": 1.5, "rewrite_nll": 1.25}, **manifest_over}
    (folder / f"{name}.manifest.json").write_text(json.dumps(manifest))
    return out, manifest


def requests_of(hub: MockHub, repo_type: str, repo_id: str) -> list[str]:
    t = f"/api/{repo_type}s/{repo_id}/"
    return [f"{m} {p}".replace(t, "/api/{t}s/{r}/") for m, p in hub.requests]


def test_push_dataset_round_trip(hub, tmp_path):
    out, manifest = write_output(tmp_path)
    url = push_dataset(out, "alice/arith-sdft", token=TOKEN, endpoint=hub.url, command_line="sdft rewrite x")
    assert url == f"{hub.url}/datasets/alice/arith-sdft"
    repo = hub.repo("alice/arith-sdft", "dataset")
    assert repo.private is True  # the default
    assert len(repo.commits) == 1 and sorted(repo.files) == ["README.md", "out.jsonl", "out.jsonl.manifest.json"]
    assert repo.files["out.jsonl"] == out.read_bytes()
    pushed = json.loads(repo.files["out.jsonl.manifest.json"])
    assert pushed == redact(manifest) and pushed["config"]["api_key"] != "sk-live-123"
    card = repo.files["README.md"].decode()
    assert card == dataset_card(manifest, command_line="sdft rewrite x", data_file="out.jsonl",
                                repo_id="alice/arith-sdft")
    assert hub.validated == [{"content": card, "repoType": "dataset"}]  # the Hub checked the card's YAML
    meta = yaml.safe_load(card.split("\n---\n", 1)[0][4:])
    assert meta["configs"][0]["data_files"][0]["path"] in repo.files
    assert requests_of(hub, "dataset", "alice/arith-sdft") == PUSH_REQUESTS and not hub.unexpected


def test_push_public_and_token_from_environment(hub, tmp_path, monkeypatch):
    out, _ = write_output(tmp_path)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    push_dataset(out, "alice/pub", private=False, endpoint=hub.url)
    assert hub.repo("alice/pub", "dataset").private is False


def test_second_push_adds_a_commit_and_a_public_repo_needs_public(hub, tmp_path):
    out, _ = write_output(tmp_path)
    notices: list[str] = []
    push_dataset(out, "alice/again", token=TOKEN, endpoint=hub.url)
    push_dataset(out, "alice/again", token=TOKEN, endpoint=hub.url, notice=notices.append)
    assert len(hub.repo("alice/again", "dataset").commits) == 2 and "exists" in notices[0]
    push_dataset(out, "alice/open", private=False, token=TOKEN, endpoint=hub.url)
    with pytest.raises(InputError, match="public"):  # a private push must not land in a public repo
        push_dataset(out, "alice/open", token=TOKEN, endpoint=hub.url)
    assert len(hub.repo("alice/open", "dataset").commits) == 1


def test_a_token_that_cannot_create_may_still_push_to_an_existing_repo(hub, tmp_path):
    from mock_hub import Repo

    out, _ = write_output(tmp_path)
    hub.repos[("dataset", "org/shared")] = Repo("org/shared", "dataset", private=True)
    hub.fail["create"] = 403
    push_dataset(out, "org/shared", token=TOKEN, endpoint=hub.url)
    assert "out.jsonl" in hub.repo("org/shared", "dataset").files


def test_odd_output_names_are_stored_as_data_jsonl(hub, tmp_path):
    out, _ = write_output(tmp_path, name="my run [v2].jsonl")
    push_dataset(out, "alice/odd", token=TOKEN, endpoint=hub.url)
    files = hub.repo("alice/odd", "dataset").files
    assert sorted(files) == ["README.md", "data.jsonl", "data.jsonl.manifest.json"]
    assert files["data.jsonl"] == out.read_bytes()


@pytest.mark.parametrize("repo_id", ["noslash", "a/b/c", "../x", "a--b/c", "", "a/b.git", "-a/b", "a/" + "b" * 97,
                                     "a/b\n", "a b/c"])
def test_bad_repo_id_is_input_error_before_any_request(hub, tmp_path, repo_id):
    out, _ = write_output(tmp_path)
    with pytest.raises(InputError) as e:
        push_dataset(out, repo_id, token=TOKEN, endpoint=hub.url)
    assert e.value.exit_code == 2 and "\n" not in str(e.value) and hub.requests == []


def test_missing_or_unfinished_output_is_input_error(hub, tmp_path):
    with pytest.raises(InputError, match="no output file"):
        push_dataset(tmp_path / "nope.jsonl", "alice/x", token=TOKEN, endpoint=hub.url)
    (tmp_path / "half.jsonl").write_text("{}\n")
    with pytest.raises(InputError, match="not finished"):
        push_dataset(tmp_path / "half.jsonl", "alice/x", token=TOKEN, endpoint=hub.url)
    (tmp_path / "half.jsonl.manifest.json").write_text("[1, 2")
    with pytest.raises(InputError, match="not readable JSON"):
        push_dataset(tmp_path / "half.jsonl", "alice/x", token=TOKEN, endpoint=hub.url)
    with pytest.raises(InputError, match="not a model folder"):
        push_model(tmp_path, "alice/x", token=TOKEN, endpoint=hub.url)
    assert hub.requests == []


def test_no_token_or_offline_mode_fail_before_any_request(hub, tmp_path, monkeypatch):
    import huggingface_hub.constants

    out, _ = write_output(tmp_path)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(InputError, match="HF_TOKEN"):
        push_dataset(out, "alice/x", endpoint=hub.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match="HF_HUB_OFFLINE"):
        push_dataset(out, "alice/x", token=TOKEN, endpoint=hub.url)
    assert hub.requests == []


@pytest.mark.parametrize(("endpoint", "status", "expect"), [
    ("create", 500, "HTTP 500"), ("create", 403, "write access"), ("commit", 500, "HTTP 500"),
    ("validate", 400, "card"), ("create", 401, "HF_TOKEN"),
])
def test_a_failing_hub_gives_a_one_line_error(hub, tmp_path, endpoint, status, expect):
    out, _ = write_output(tmp_path)
    hub.fail[endpoint] = status
    with pytest.raises(SdftError) as e:
        push_dataset(out, "alice/fail", token=TOKEN, endpoint=hub.url)
    assert type(e.value) is SdftError and e.value.exit_code == 1
    assert "\n" not in str(e.value) and expect in str(e.value) and "alice/fail" in str(e.value)


def test_a_wrong_token_names_the_cause(hub, tmp_path):
    out, _ = write_output(tmp_path)
    with pytest.raises(SdftError, match="401.*HF_TOKEN"):
        push_dataset(out, "alice/x", token="hf_wrong", endpoint=hub.url)


def test_an_unreachable_hub_gives_a_one_line_error(hub, tmp_path):
    out, _ = write_output(tmp_path)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SdftError) as e:
        push_dataset(out, "alice/x", token=TOKEN, endpoint=f"http://127.0.0.1:{port}")
    assert "could not reach" in str(e.value) and "\n" not in str(e.value)


def model_folder(root: Path, *, adapter: bool = False) -> Path:
    """A model folder as `sdft train` leaves it (small stand-in files: the push only moves bytes)."""
    (root / "model").mkdir(parents=True)
    (root / "run.json").write_text(json.dumps({"kind": "sdft-train", "method": "sdft",
                                               "config": {"model": "smollm2-135m-instruct",
                                                          "rewrite": {"api_key": "sk-live-123"}},
                                               "train": {"global_step": 2, "train_loss": 1.5}}))
    (root / "model" / "train_metrics.json").write_text(json.dumps({"global_step": 2, "rows": 4}))
    (root / "model" / "loss_curve.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    d = root / "model" / ("final" if adapter else "merged")
    (d / "sub").mkdir(parents=True)
    (d / ("adapter_config.json" if adapter else "config.json")).write_text('{"model_type": "llama"}')
    (d / ("adapter_model.safetensors" if adapter else "model.safetensors")).write_bytes(bytes(range(256)) * 4)
    (d / "tokenizer.json").write_text("{}")
    (d / "sub" / "extra.txt").write_text("kept")
    (d / ".cache").mkdir()
    (d / ".cache" / "junk").write_text("hidden")
    (d / "README.md").write_text("# Model Card for Model ID\n")  # peft's template: replaced by ours
    (d / "link.json").symlink_to(root / "run.json")
    return d


@pytest.mark.parametrize("adapter", [False, True])
def test_push_model_folder(hub, tmp_path, adapter):
    d = model_folder(tmp_path, adapter=adapter)
    url = push_model(d, "alice/tiny-sdft", token=TOKEN, endpoint=hub.url)
    assert url == f"{hub.url}/alice/tiny-sdft"
    repo = hub.repo("alice/tiny-sdft", "model")
    weights = "adapter_model.safetensors" if adapter else "model.safetensors"
    assert repo.private is True and len(repo.commits) == 1
    assert sorted(repo.files) == sorted(["README.md", "adapter_config.json" if adapter else "config.json", weights,
                                         "tokenizer.json", "sub/extra.txt", "loss_curve.png", "train_metrics.json",
                                         "sdft_run.json"])
    assert repo.files[weights] == (d / weights).read_bytes()
    assert repo.files["loss_curve.png"] == (tmp_path / "model" / "loss_curve.png").read_bytes()
    assert json.loads(repo.files["sdft_run.json"])["config"]["rewrite"]["api_key"] != "sk-live-123"
    card = repo.files["README.md"].decode()
    meta = yaml.safe_load(card.split("\n---\n", 1)[0][4:])
    assert meta["library_name"] == ("peft" if adapter else "transformers")
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert CARD_MARKER in card and "![training loss](loss_curve.png)" in card
    assert requests_of(hub, "model", "alice/tiny-sdft") == PUSH_REQUESTS and not hub.unexpected


def test_check_repo_id_accepts_hub_ids():
    for ok in ("alice/x", "Org-1/model_v2.0", "a/" + "b" * 96):
        assert check_repo_id(ok) == ok


def test_importing_hub_and_card_loads_no_hub_client():
    code = "import sys, sdft.hub, sdft.card; print(sorted(m for m in ('huggingface_hub', 'torch', 'yaml') " \
           "if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_push_a_real_rewrite_output(hub, hf_tiny, gsm8k_file, tmp_path):
    from sdft.rewrite import RewriteConfig, run_rewrite

    out = tmp_path / "rewritten.jsonl"  # beside the input, never over it
    cfg = RewriteConfig(input=str(gsm8k_file), output=str(out), model=hf_tiny.model_path, backend="hf", limit=2,
                        max_new_tokens=4, gap_rows=2)
    res = run_rewrite(cfg, engine=hf_tiny)
    push_dataset(out, "alice/gsm", token=TOKEN, endpoint=hub.url)
    files = hub.repo("alice/gsm", "dataset").files
    assert files["rewritten.jsonl"] == out.read_bytes()
    assert json.loads(files["rewritten.jsonl.manifest.json"]) == redact(res.manifest)
    card = files["README.md"].decode()
    rows = res.manifest["rows"]
    assert f"| fallback | {rows['fallback']} |" in card and "## Distribution gap" in card

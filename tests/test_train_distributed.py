"""`sdft train` runs unchanged as 2 data-parallel processes (gloo on CPU); the accelerate configs parse.

Both runs take ~30 s each on a 2-core CPU (two processes start torch + transformers on the tiny model).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROWS = [(3, 4), (10, 5), (7, 8), (2, 9), (12, 1), (6, 6), (4, 4), (5, 3)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name: str) -> str:
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} not found")
    return exe


def _env() -> dict[str, str]:
    # CUDA_VISIBLE_DEVICES="": stay on CPU/gloo even on a machine with GPUs
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "CUDA_VISIBLE_DEVICES": ""}


def _files_named(root: Path, name: str) -> list[Path]:
    """Every file called ``name`` under ``root``, outside Trainer checkpoints."""
    return [p for p in root.rglob(name) if not any(part.startswith("checkpoint-") for part in p.parts)]


def test_accelerate_launch_sft_two_processes(tiny_model_dir, tmp_path):
    """accelerate launch + recipes/accelerate/cpu_2proc.yaml: real DDP over 2 ranks, one writer."""
    from transformers import AutoTokenizer

    from sdft.train import tokenize_pairs

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({
        "question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
        "answer": f"{a} + {b} = {a + b}.\n#### {a + b}"}) + "\n" for a, b in ROWS))
    out = tmp_path / "run"
    cmd = [_tool("accelerate"), "launch", "--config_file", str(ROOT / "recipes/accelerate/cpu_2proc.yaml"),
           "--main_process_port", str(_free_port()), "-m", "sdft", "train", "--method", "sft",
           f"model={tiny_model_dir}", f"output_dir={out}", f"data.path={data}",
           "train.lora_target_modules=[q_proj,v_proj]", "train.per_device_batch_size=2",
           "train.gradient_accumulation_steps=1", "train.epochs=1", "train.save_steps=100", "train.max_length=256"]
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]

    metrics = json.loads((out / "model" / "train_metrics.json").read_text())
    # both ranks took part in one data-parallel job (not two independent copies)
    assert metrics["world_size"] == 2 and metrics["distributed_type"] == "MULTI_CPU"
    # 8 rows, 2 per device: the global batch is 4, so one epoch is 2 optimizer steps (one process: 4)
    assert metrics["global_step"] == 2
    # tokens seen are gathered over the ranks: at least every token of all 8 rows (padding adds some)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = [([{"role": "user", "content": f"Tom has {a} apples and buys {b} more. How many apples does he have?"}],
              f"{a} + {b} = {a + b}.\n#### {a + b}") for a, b in ROWS]
    examples, _ = tokenize_pairs(tok, pairs, 256)
    assert metrics["tokens_seen"] >= sum(len(e["input_ids"]) for e in examples)
    losses = [h["loss"] for h in metrics["log_history"]] + [metrics["train_loss"]]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses), losses

    # rank 0 alone wrote the model, metrics, curve and run record: one copy of each
    for name in ("train_metrics.json", "loss_curve.png", "run.json", "adapter_model.safetensors",
                 "model.safetensors"):
        assert len(_files_named(tmp_path, name)) == 1, (name, _files_named(tmp_path, name))
    assert (out / "model" / "final" / "adapter_config.json").is_file()
    assert (out / "model" / "merged" / "config.json").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2 and run["train"]["global_step"] == 2


def test_torchrun_sdft_rank0_rewrites(tiny_model_dir, tmp_path):
    """torchrun, method sdft: rank 0 rewrites, rank 1 waits and reuses its output, then both train."""
    out = tmp_path / "run"
    cmd = [_tool("torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "sdft", "train",
           f"model={tiny_model_dir}", "method=sdft", f"output_dir={out}", "data.path=example:arith", "data.limit=8",
           "rewrite.max_new_tokens=16", "rewrite.backend=hf", "rewrite.gap_rows=0",
           "train.lora_target_modules=[q_proj,v_proj]", "train.per_device_batch_size=2",
           "train.gradient_accumulation_steps=1", "train.max_steps=2", "train.save_steps=100", "train.max_length=256"]
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    metrics = json.loads((out / "model" / "train_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["distributed_type"] == "MULTI_CPU"
    assert metrics["global_step"] == 2
    assert metrics["log_history"] and all(math.isfinite(h["loss"]) for h in metrics["log_history"])
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2 and run["rewrite"]["rows"]["total"] == 8
    assert (out / "model" / "merged" / "config.json").is_file()
    assert len(_files_named(tmp_path, "rewrite.jsonl")) == 1
    # rank 1 waited for rank 0's rewrite, then reused it instead of redoing it
    assert "waiting for rank 0" in r.stderr and "already complete for this config: reusing it" in r.stderr


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "recipes/accelerate").glob("*.yaml")))
def test_accelerate_configs_parse(name):
    """Each config loads with the installed accelerate, and every key is one `accelerate launch` knows."""
    import yaml
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    path = ROOT / "recipes/accelerate" / name
    cfg = load_config_from_file(str(path))  # rejects unknown top-level keys
    text = path.read_text()
    assert cfg.num_processes >= 2 and f"accelerate launch --config_file recipes/accelerate/{name}" in text
    launch_args = {a.dest for a in launch_command_parser()._actions}
    raw = yaml.safe_load(text)
    for key in raw.get("fsdp_config", {}):  # nested keys are copied onto launch args unchecked: check them here
        assert (key if key.startswith("fsdp_") else f"fsdp_{key}") in launch_args, key
    for key in raw.get("deepspeed_config", {}):
        assert key in launch_args, key
    if raw.get("num_machines", 1) > 1:
        assert cfg.main_process_ip and cfg.main_process_port

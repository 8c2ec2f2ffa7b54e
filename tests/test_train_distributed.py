"""`sdft train` runs unchanged as 2 processes (torchrun, gloo on CPU); the accelerate configs parse."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_two_process_gloo_training(tiny_model_dir, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", "29533", "-m", "sdft", "train",
           f"model={tiny_model_dir}", "method=sdft", f"output_dir={out}", "data.path=example:arith", "data.limit=8",
           "rewrite.max_new_tokens=16", "rewrite.backend=hf", "rewrite.gap_rows=0",
           "train.lora_target_modules=[q_proj,v_proj]", "train.per_device_batch_size=2",
           "train.gradient_accumulation_steps=1", "train.max_steps=2", "train.save_steps=100", "train.max_length=256"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    metrics = json.loads((out / "model" / "train_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_step"] == 2
    assert metrics["log_history"] and all(h["loss"] == h["loss"] for h in metrics["log_history"])  # finite
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2 and run["rewrite"]["rows"]["total"] == 8
    assert (out / "model" / "merged" / "config.json").is_file()
    # rank 1 waited for rank 0's rewrite, then reused it instead of redoing it
    assert "waiting for rank 0" in r.stderr and "already complete for this config: reusing it" in r.stderr


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "recipes/accelerate").glob("*.yaml")))
def test_accelerate_configs_parse(name):
    from accelerate.commands.config.config_args import load_config_from_file

    path = ROOT / "recipes/accelerate" / name
    cfg = load_config_from_file(str(path))
    assert cfg.num_processes >= 2 and "accelerate launch --config_file recipes/accelerate/" in path.read_text()

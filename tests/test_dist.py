"""sdft.dist and sdft.tracking: rank/world/device/dtype from the environment, trackers; no model loads."""

from __future__ import annotations

import pytest

from sdft import dist
from sdft.errors import ConfigError, MissingDependency
from sdft.tracking import check_trackers, flatten, log_summary, parse_report_to

ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def test_single_process_defaults():
    assert (dist.rank(), dist.local_rank(), dist.world_size()) == (0, 0, 1)
    assert dist.is_main() and not dist.is_distributed()
    assert not dist.cpu_ddp(cuda=False)  # one process never needs gloo


@pytest.mark.parametrize("rank,local,world", [(0, 0, 2), (1, 1, 2), (5, 1, 8)])
def test_launcher_environment(monkeypatch, rank, local, world):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(local))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    assert (dist.rank(), dist.local_rank(), dist.world_size()) == (rank, local, world)
    assert dist.is_main() == (rank == 0) and dist.is_distributed()
    # the GPU is the local rank, not the global one (rank 5 of 8 runs on its machine's GPU 1)
    assert dist.device(cuda=True) == f"cuda:{local}"
    assert dist.device(cuda=False) == "cpu"
    assert dist.cpu_ddp(cuda=False) and not dist.cpu_ddp(cuda=True)


@pytest.mark.parametrize("name,value", [("RANK", "x"), ("RANK", "-1"), ("WORLD_SIZE", "0"), ("WORLD_SIZE", "1.5"),
                                        ("LOCAL_RANK", "gpu0")])
def test_bad_environment_is_a_config_error_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    fn = {"RANK": dist.rank, "WORLD_SIZE": dist.world_size, "LOCAL_RANK": dist.local_rank}[name]
    with pytest.raises(ConfigError) as e:
        fn()
    assert name in str(e.value) and repr(value) in str(e.value)


def test_rank_must_be_below_world_size(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="RANK=2 is not below WORLD_SIZE=2"):
        dist.rank()


def test_blank_variables_mean_unset(monkeypatch):
    monkeypatch.setenv("RANK", "")
    monkeypatch.setenv("WORLD_SIZE", " ")
    assert dist.rank() == 0 and dist.world_size() == 1


@pytest.mark.parametrize("cuda,bf16,want", [(False, False, "float32"), (False, True, "float32"),
                                             (True, False, "float32"), (True, True, "bfloat16")])
def test_auto_dtype(cuda, bf16, want):
    assert dist.resolve_dtype("auto", cuda=cuda, bf16=bf16) == want


@pytest.mark.parametrize("name", ["float32", "bfloat16", "float16"])
def test_explicit_dtype_is_kept(name):
    assert dist.resolve_dtype(name, cuda=False, bf16=False) == name


def test_unknown_dtype_refused():
    with pytest.raises(ConfigError, match="dtype must be one of"):
        dist.resolve_dtype("fp8", cuda=False)


def test_torch_dtype_maps_names_to_torch():
    import torch  # the first torch import of a session takes seconds; the test itself does not

    assert dist.torch_dtype("bfloat16") is torch.bfloat16 and dist.torch_dtype("float16") is torch.float16
    assert dist.torch_dtype("auto", cuda=False) is torch.float32
    assert dist.torch_dtype("auto", cuda=True, bf16=True) is torch.bfloat16


# --- trackers ------------------------------------------------------------------------------------


def test_report_to_parsing():
    assert parse_report_to("none") == [] and parse_report_to("") == [] and parse_report_to(None) == []
    assert parse_report_to("tensorboard, wandb,tensorboard") == ["tensorboard", "wandb"]
    assert parse_report_to(["MLflow"]) == ["mlflow"]
    with pytest.raises(ConfigError, match="unknown tracker 'comet'"):
        parse_report_to("tensorboard,comet")


def test_train_config_validates_report_to_and_loss_type():
    from sdft.train import TrainConfig

    with pytest.raises(ConfigError) as e:
        TrainConfig(report_to="tensorbord", loss_type="kl")
    text = str(e.value)
    assert "unknown tracker 'tensorbord'" in text and "loss_type must be nll or dft, got 'kl'" in text
    assert TrainConfig(loss_type="dft", report_to="tensorboard,mlflow").loss_type == "dft"


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_missing_tracker_names_its_extra(tracker):
    from sdft._deps import is_available

    if is_available(tracker):
        pytest.skip(f"{tracker} is installed here")
    with pytest.raises(MissingDependency) as e:
        check_trackers(f"tensorboard,{tracker}")
    assert f"sdft-toolkit[{tracker}]" in str(e.value) and f"report_to={tracker}" in str(e.value)
    with pytest.raises(MissingDependency, match=rf"sdft-toolkit\[{tracker}\]"):
        log_summary(tracker, "run", {"x": 1})


def test_flatten_keeps_numeric_leaves_only():
    flat = flatten({"rewrite": {"acceptance_rate": 0.8, "rows": {"total": 10}}, "ok": True, "model": "m",
                    "gap": None, "eval": {"safety": {"score": 90}}})
    assert flat == {"rewrite/acceptance_rate": 0.8, "rewrite/rows/total": 10.0, "eval/safety/score": 90.0}


def test_log_summary_to_tensorboard(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    summary = {"rewrite": {"acceptance_rate": 0.8125}, "eval": {"safety": {"score": 83.3}}, "model": "tiny"}
    assert log_summary("tensorboard", "sdft-run", summary, log_dir=tmp_path) == ["tensorboard"]
    acc = EventAccumulator(str(tmp_path / "sdft-run"))
    acc.Reload()
    scalars = {tag: acc.Scalars(tag)[0].value for tag in acc.Tags()["scalars"]}
    assert scalars == pytest.approx({"rewrite/acceptance_rate": 0.8125, "eval/safety/score": 83.3})
    assert log_summary("none", "x", summary) == []

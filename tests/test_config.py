"""Typed configs: every problem reported at once, overrides parsed as YAML scalars."""

from __future__ import annotations

import pytest

from sdft.config import from_dict, parse_overrides
from sdft.errors import ConfigError
from sdft.rewrite import RewriteConfig


def test_rewrite_config_lists_every_problem():
    with pytest.raises(ConfigError) as e:
        from_dict(RewriteConfig, {"input": "x", "output": "y", "samples": "many", "selct": "first",
                                  "temperature": -1})
    probs = e.value.problems
    assert any("samples" in p and "integer" in p for p in probs)
    assert any("selct" in p and "did you mean 'select'" in p for p in probs)
    # bad values are left out and the __post_init__ checks still run on the rest: all three at once
    assert any("temperature must be >= 0" in p for p in probs) and len(probs) == 3


def test_post_init_checks_collected():
    with pytest.raises(ConfigError) as e:
        from_dict(RewriteConfig, {"input": "x", "output": "y", "samples": 3, "temperature": 0,
                                  "select": "best", "max_new_tokens": 0})
    text = str(e.value)
    assert "temperature > 0" in text and "select must be first or min-nll" in text and "max_new_tokens" in text


def test_defaults_and_coercion():
    cfg = from_dict(RewriteConfig, {"input": "x", "output": "y", "samples": "4", "top_p": "0.9"})
    assert cfg.samples == 4 and cfg.top_p == 0.9 and cfg.temperature == 0.7
    assert from_dict(RewriteConfig, {"input": "x", "output": "y", "samples": 1}).temperature == 0.0


def test_parse_overrides_nested():
    assert parse_overrides(["train.lr=1e-4", "model=m", "train.lora=true", "x.y.z=[1, 2]"]) == {
        "train": {"lr": "1e-4", "lora": True}, "model": "m", "x": {"y": {"z": [1, 2]}}}
    with pytest.raises(ConfigError):
        parse_overrides(["novalue"])

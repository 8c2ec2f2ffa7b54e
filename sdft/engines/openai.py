"""The OpenAI-compatible server backend: send requests to ``vllm serve`` (or sglang, ...).

Prompts are rendered and tokenised locally with the model's own tokenizer and sent as token
ids to ``/v1/completions``, so the server sees exactly the tokens the in-process backends
would. Requests run with bounded concurrency; connection errors, 5xx and 429 answers are
retried with exponential backoff for up to ``retry_seconds``, so a server that is restarted
mid-run is waited for instead of losing the batch.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sdft.engines.base import (
    Chat,
    Completion,
    EngineOptions,
    Generation,
    ProgressFn,
    Prompt,
    SamplingConfig,
    Samplings,
    Score,
    per_prompt,
)
from sdft.errors import SdftError
from sdft.prompts import encode_pair, encode_prompt, render_chat

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class ServerError(SdftError):
    """The server could not be reached, or kept failing, for longer than the retry window."""


class OpenAIEngine:
    """Generation and scoring through an OpenAI-compatible completions endpoint.

    Args:
        model_path: local model folder (or Hub id) whose tokenizer renders the prompts.
        options: ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``), ``api_key``,
            ``max_concurrency``, ``retry_seconds`` and ``served_model`` in ``options.extra``.
    """

    name = "openai"

    def __init__(self, model_path: str, options: EngineOptions | None = None):
        from transformers import AutoTokenizer

        from sdft.engines.hf import stop_token_ids

        self.options = options or EngineOptions()
        extra = self.options.extra
        self.model_path = model_path
        self.base_url = str(extra.get("base_url") or "http://127.0.0.1:8000/v1").rstrip("/")
        self.api_key = extra.get("api_key") or "EMPTY"
        self.max_concurrency = int(extra.get("max_concurrency") or 16)
        self.retry_seconds = float(extra.get("retry_seconds") or 600)
        self.timeout = float(extra.get("request_timeout") or 600)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.stop_ids = stop_token_ids(self.tokenizer)
        self.served_model = extra.get("served_model") or self._first_model()

    # -- HTTP with retries -------------------------------------------------------------------

    def _request(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.5
        while True:
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:500]
                if e.code not in RETRY_STATUS:
                    raise ServerError(f"{url}: HTTP {e.code}: {detail}") from None
                err = f"HTTP {e.code}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
                err = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            if time.monotonic() + delay > deadline:
                raise ServerError(f"{url}: still failing after {self.retry_seconds:.0f} s ({err}); is the server "
                                  f"up? Rerun the same command to resume.")
            time.sleep(delay * (1 + random.random() * 0.25))  # jitter: don't stampede a restarted server
            delay = min(delay * 2, 15.0)

    def _first_model(self) -> str:
        models = self._request("/models").get("data") or []
        if not models:
            raise ServerError(f"{self.base_url}/models lists no model")
        return models[0]["id"]

    # -- the engine interface ----------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        return prompt if isinstance(prompt, str) else render_chat(self.tokenizer, prompt)

    def generate(
        self, prompts: Sequence[Prompt], sampling: Samplings, progress: ProgressFn | None = None
    ) -> list[Generation]:
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        samplings = per_prompt(sampling, len(encoded))

        def one(job: tuple[list[int], SamplingConfig]) -> Generation:
            ids, sampling = job
            body = {
                "model": self.served_model, "prompt": ids, "n": sampling.n, "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p if not sampling.greedy else 1.0,
                "seed": sampling.seed, "stop": list(sampling.stop), "stop_token_ids": self.stop_ids,
                "skip_special_tokens": True, "return_token_ids": True,
            }
            out = self._request("/completions", body)
            choices = sorted(out["choices"], key=lambda c: c["index"])
            comps = []
            for c in choices:
                toks = c.get("token_ids")
                if toks is None:  # servers without return_token_ids: count by re-tokenising
                    toks = self.tokenizer(c["text"], add_special_tokens=False)["input_ids"]
                stop = c.get("stop_reason")  # vLLM's server names the stop string that ended it
                comps.append(Completion(text=c["text"], num_tokens=len(toks), token_ids=list(toks),
                                        finish_reason="length" if c.get("finish_reason") == "length" else "stop",
                                        stop_reason=stop if isinstance(stop, str) else None))
            if progress:
                progress(1)
            return Generation(completions=comps, prompt_tokens=len(ids))

        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(one, zip(encoded, samplings, strict=True)))

    def score(self, prompts: Sequence[Chat], completions: Sequence[str]) -> list[Score]:
        pairs = [encode_pair(self.tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]

        def one(pair: tuple[list[int], list[int]]) -> Score:
            p_ids, a_ids = pair
            ids = p_ids + a_ids
            out = self._request("/completions", {"model": self.served_model, "prompt": ids, "max_tokens": 1,
                                                 "temperature": 0.0, "prompt_logprobs": 0})
            plp = out["choices"][0].get("prompt_logprobs") or out.get("prompt_logprobs")
            if plp is None:
                raise ServerError("the server does not return prompt_logprobs (needed for scoring): use vLLM")
            total = 0.0
            for pos in range(len(p_ids), len(ids)):
                entry = plp[pos]
                total -= float(entry[str(ids[pos])]["logprob"])
            return Score(nll=total, num_tokens=len(a_ids))

        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(one, pairs))

    def close(self) -> None:
        pass

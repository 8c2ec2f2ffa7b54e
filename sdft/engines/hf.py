"""The transformers backend: batched, left-padded, length-sorted ``generate``.

Used where vLLM is not installed, and as the reference in the engine parity test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

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


def _torch_dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Every token id that ends an assistant turn (eos, generation-config eos, ``<|im_end|>``)."""
    ids: set[int] = set()
    for src in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(src)
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    return sorted(ids)


class HFEngine:
    """Generation and scoring with ``transformers``.

    Args:
        model_path: a local folder or Hub id (already resolved by :func:`sdft.models.resolve_model`).
        options: shared engine options; ``batch_size`` prompts go into each ``generate`` call.
        model: an already-loaded model to reuse (e.g. the trainer's), with ``tokenizer``.
    """

    name = "hf"

    def __init__(self, model_path: str, options: EngineOptions | None = None, *, model: Any = None,
                 tokenizer: Any = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.options = options or EngineOptions()
        self.model_path = model_path
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_path)
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(
                model_path, dtype=_torch_dtype(self.options.dtype, self.device)
            ).to(self.device)
        self.model = model.eval()
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.stop_ids = stop_token_ids(self.tokenizer, getattr(self.model, "generation_config", None))

    def render(self, prompt: Prompt) -> str:
        return prompt if isinstance(prompt, str) else render_chat(self.tokenizer, prompt)

    def generate(
        self, prompts: Sequence[Prompt], sampling: Samplings, progress: ProgressFn | None = None
    ) -> list[Generation]:
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        results: list[Generation | None] = [None] * len(encoded)
        groups: dict[SamplingConfig, list[int]] = {}
        context = self._context()
        for i, sc in enumerate(per_prompt(sampling, len(encoded))):
            budget = fit_budget(len(encoded[i]), sc.max_new_tokens, context)
            if budget == 0:  # the prompt alone fills the context: nothing to generate, no failed batch
                results[i] = Generation([Completion("", CONTEXT_FULL, 0) for _ in range(sc.n)], len(encoded[i]))
                if progress:
                    progress(1)
                continue
            groups.setdefault(replace(sc, max_new_tokens=budget), []).append(i)
        for sc, members in groups.items():  # transformers' generate takes one config per call
            self._generate_group(encoded, members, sc, results, progress)
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _context(self) -> int | None:
        """The model's context length (max_model_len option, else its position embeddings)."""
        return self.options.max_model_len or getattr(self.model.config, "max_position_embeddings", None)

    def _generate_group(self, encoded: list[list[int]], members: list[int], sampling: SamplingConfig,
                        results: list[Generation | None], progress: ProgressFn | None) -> None:
        import torch

        # Longest first: similar lengths share a batch (less padding), and an out-of-memory
        # error shows up on the first batch rather than the last.
        order = sorted(members, key=lambda i: -len(encoded[i]))
        bs = max(1, self.options.batch_size // sampling.n) if sampling.n > 1 else self.options.batch_size
        gen = torch.Generator(device="cpu").manual_seed(sampling.seed)
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            batch = [encoded[i] for i in idx]
            # One seed per batch drawn from the call's seed: reproducible for a given prompt order.
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            outs = self._generate_batch(batch, sampling)
            for j, i in enumerate(idx):
                results[i] = Generation(completions=outs[j], prompt_tokens=len(encoded[i]))
            if progress:
                progress(len(idx))

    def _generate_batch(self, batch: list[list[int]], sampling: SamplingConfig) -> list[list[Completion]]:
        import torch

        width = max(len(b) for b in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for r, ids in enumerate(batch):  # left padding: generation continues right after each prompt
            input_ids[r, width - len(ids):] = torch.tensor(ids)
            attn[r, width - len(ids):] = 1
        kwargs: dict[str, Any] = dict(
            max_new_tokens=sampling.max_new_tokens,
            num_return_sequences=sampling.n,
            eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id,
        )
        if sampling.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attn.to(self.device), **kwargs
            )
        new = out[:, width:].tolist()
        per_prompt: list[list[Completion]] = []
        for r in range(len(batch)):
            comps = []
            for s in range(sampling.n):
                comps.append(self._finish(new[r * sampling.n + s], sampling))
            per_prompt.append(comps)
        return per_prompt

    def _finish(self, tokens: list[int], sampling: SamplingConfig) -> Completion:
        stop_at = next((k for k, t in enumerate(tokens) if t in self.stop_ids), None)
        if stop_at is not None:
            tokens, reason = tokens[:stop_at], "stop"
        else:
            tokens = [t for t in tokens if t != self.pad_id] if self.pad_id not in self.stop_ids else tokens
            reason = "length" if len(tokens) >= sampling.max_new_tokens else "stop"
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        # stop strings are applied after generation: cut at the earliest one, as vLLM does
        stop_reason = None
        hits = [(text.find(s), s) for s in sampling.stop if s and text.find(s) != -1]
        if hits:
            cut, stop_reason = min(hits)
            text, reason = text[:cut], "stop"
            # count only the tokens up to the stop string, as vLLM does
            tokens = tokens[: len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1]
        return Completion(text=text, finish_reason=reason, num_tokens=len(tokens), token_ids=list(tokens),
                          stop_reason=stop_reason)

    def score(self, prompts: Sequence[Chat], completions: Sequence[str]) -> list[Score]:
        import torch

        pairs = [encode_pair(self.tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
        context = self._context()
        scores: list[Score | None] = [None] * len(pairs)
        for i, (p_ids, a_ids) in enumerate(pairs):  # longer than the context: cannot be scored
            if context and len(p_ids) + len(a_ids) > context:
                scores[i] = Score(nll=float("nan"), num_tokens=0)
        order = sorted((i for i in range(len(pairs)) if scores[i] is None),
                       key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        bs = self.options.batch_size
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            seqs = [pairs[i][0] + pairs[i][1] for i in idx]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            attn = torch.zeros_like(ids)
            for r, s in enumerate(seqs):  # right padding: positions stay 0..len-1 for each row
                ids[r, :len(s)] = torch.tensor(s)
                attn[r, :len(s)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=attn.to(self.device)).logits
                logp = torch.log_softmax(logits.float(), dim=-1)
            for r, i in enumerate(idx):
                p_len, a_len = len(pairs[i][0]), len(pairs[i][1])
                targets = torch.tensor(pairs[i][1], device=logp.device)
                # logits at position t predict token t+1
                lp = logp[r, p_len - 1:p_len - 1 + a_len].gather(-1, targets[:, None]).squeeze(-1)
                scores[i] = Score(nll=float(-lp.sum()), num_tokens=a_len)
        return scores  # type: ignore[return-value]

    def close(self) -> None:
        self.model = None
        import gc

        gc.collect()

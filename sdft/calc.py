"""Calculator-assisted decoding over any engine (the GSM8K paper's calculator, for small models).

A small model often writes the right operation and the wrong result ("600*3 = 6000"). Here the
model writes its answer freely; every arithmetic statement in it is recomputed
(:func:`sdft.verify.arithmetic.first_wrong_result`), and at the first wrong result the text is
cut right after the ``=``, the exact result is written there, and the model continues from the
corrected text. The text stays the model's own apart from the numbers: it chose the operation,
the calculator only did the arithmetic.

This is the lazy form of stopping at every ``=``: a round is needed only per *wrong* result,
so an answer whose arithmetic is right costs one call. With greedy decoding both forms give the
same text (the model's continuation after a right result is the one it wrote anyway).

Each round is one batched engine call over every sequence that was corrected (raw prompts: the
chat prompt rendered once plus the answer so far, so prefix caching makes a round cheap), each
with its own remaining token budget and seed. ``n > 1`` samples are corrected independently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sdft.engines.base import (
    Completion,
    Engine,
    Generation,
    ProgressFn,
    Prompt,
    SamplingConfig,
    Samplings,
    per_prompt,
)

Corrector = Callable[[str, int], "tuple[int, str] | None"]  # (text, from index) -> (cut, result) or None

#: Correction rounds at most (bounds the number of engine calls); later errors stay and are rejected
#: by the verifier.
MAX_ROUNDS = 16


@dataclass
class _Seq:
    prompt: int
    text: str
    tokens: int  # tokens of ``text`` as generated so far (corrections re-count the kept part)
    finish: str
    checked: int = 0  # text before this index needs no further checking
    calls: int = 0


def generate_with_calculator(engine: Engine, prompts: Sequence[Prompt], sampling: Samplings,
                             correct: Corrector, *, progress: ProgressFn | None = None,
                             max_rounds: int = MAX_ROUNDS) -> list[Generation]:
    """Generate like ``engine.generate``, correcting every wrong arithmetic result as it goes.

    Args:
        engine: any engine.
        prompts: chat prompts or raw strings.
        sampling: decoding settings (one, or one per prompt); ``max_new_tokens`` bounds each answer.
        correct: ``correct(text, start)`` returns ``(cut, result)`` for the first wrong result at or
            after ``start`` (e.g. :func:`sdft.verify.arithmetic.first_wrong_result`), or None.
        progress: called with the number of prompts whose answers are all final.
        max_rounds: correction rounds at most.

    Returns:
        One :class:`Generation` per prompt with its ``n`` completions, in order; a completion's
        ``num_tokens`` counts the tokens of its final text, and ``token_ids`` is empty.
    """
    raw = [engine.render(p) for p in prompts]
    configs = per_prompt(sampling, len(raw))
    first = engine.generate(raw, configs)
    seqs = [_Seq(i, c.text, c.num_tokens, c.finish_reason) for i, g in enumerate(first) for c in g.completions]
    tokenizer = getattr(engine, "tokenizer", None)
    reported = 0
    for rnd in range(max_rounds):
        active = [s for s in seqs if _correct_one(s, correct, tokenizer, configs[s.prompt].max_new_tokens)]
        if progress:
            finished = len({s.prompt for s in seqs} - {s.prompt for s in active})
            if finished > reported:
                progress(finished - reported)
                reported = finished
        if not active:
            break
        step = [SamplingConfig(temperature=configs[s.prompt].temperature, top_p=configs[s.prompt].top_p, n=1,
                               max_new_tokens=configs[s.prompt].max_new_tokens - s.tokens,
                               seed=configs[s.prompt].seed + 7919 * (rnd + 1) + k, stop=configs[s.prompt].stop)
                for k, s in enumerate(active)]
        outs = engine.generate([raw[s.prompt] + s.text for s in active], step)
        for s, g in zip(active, outs, strict=True):
            c = g.completions[0]
            s.text += c.text
            s.tokens += c.num_tokens
            s.finish = c.finish_reason
    if progress and reported < len(prompts):
        progress(len(prompts) - reported)
    results: list[list[Completion]] = [[] for _ in prompts]
    for s in seqs:
        if s.calls:
            _fit(s, tokenizer, configs[s.prompt].max_new_tokens, correct)
        results[s.prompt].append(Completion(text=s.text, finish_reason=s.finish, num_tokens=s.tokens))
    return [Generation(completions=c) for c in results]


def _correct_one(s: _Seq, correct: Corrector, tokenizer: object, budget: int) -> bool:
    """Correct the first wrong result of ``s``; whether it must be continued by the model."""
    fix = correct(s.text, s.checked)
    if fix is None:
        s.checked = len(s.text)
        return False
    cut, result = fix
    s.text = s.text[:cut] + f" {result}"
    s.checked = len(s.text)
    s.calls += 1
    s.tokens = _count(tokenizer, s.text, s.tokens)
    if s.tokens >= budget:
        s.finish = "length"
        return False
    return True


def _fit(s: _Seq, tokenizer: object, budget: int, correct: Corrector) -> None:
    """Count the final text's tokens; cut it to the budget if the splices made it longer.

    Text spliced at a token boundary can tokenize into a few more tokens than were generated, and an
    answer must never exceed ``max_new_tokens`` whatever decoding produced it. A cut that leaves a
    partial (so wrong) result drops that result.
    """
    if tokenizer is None:
        return
    ids = tokenizer(s.text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    if len(ids) > budget:
        s.text = tokenizer.decode(ids[:budget])  # type: ignore[attr-defined]
        s.finish = "length"
        fix = correct(s.text, 0)
        if fix is not None:
            s.text = s.text[:fix[0]]
        ids = tokenizer(s.text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    s.tokens = min(len(ids), budget)


def _count(tokenizer: object, text: str, fallback: int) -> int:
    """Tokens of the answer so far (the model continues with the rest of its budget)."""
    if tokenizer is None:
        return fallback
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]

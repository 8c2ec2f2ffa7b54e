"""Calculator-assisted decoding over any engine (the GSM8K paper's calculator, for small models).

A small model often writes the right operation and the wrong result ("600*3 = 6000"). Decoding
stops at every ``=``; when the text before it ends in an arithmetic expression, the exact
result is written after it and the model continues from there. The text stays the model's own
apart from the numbers: it chose the operation, the calculator only did the arithmetic.

Each round is one batched engine call over every unfinished sequence (raw prompts: the chat
prompt rendered once, plus the answer so far, so prefix caching makes a round cheap), with
each sequence's remaining token budget. ``n > 1`` samples diverge after the first round and
continue as separate sequences with their own seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from sdft.engines.base import Completion, Engine, Generation, ProgressFn, Prompt, SamplingConfig, Samplings, per_prompt

Calculator = Callable[[str], "str | None"]  # text ending in "=" -> the result to write, or None

#: Rounds after which a sequence is finished without further stops (bounds the number of calls).
MAX_ROUNDS = 32


@dataclass
class _Seq:
    prompt: int
    text: str
    tokens: int
    finish: str
    stop: str | None
    calls: int = 0
    done: bool = False


def generate_with_calculator(engine: Engine, prompts: Sequence[Prompt], sampling: Samplings,
                             calculate: Calculator, *, progress: ProgressFn | None = None,
                             max_rounds: int = MAX_ROUNDS) -> list[Generation]:
    """Generate like ``engine.generate`` but fill in the result after every arithmetic ``=``.

    Args:
        engine: any engine that reports ``stop_reason`` for stop strings.
        prompts: chat prompts (or raw strings).
        sampling: decoding settings (one, or one per prompt); ``max_new_tokens`` bounds the whole
            answer, calculator insertions not counted.
        calculate: returns the text to insert after a trailing ``=`` (e.g.
            :func:`sdft.verify.arithmetic.calculate_tail`), or None to let the model continue.
        progress: called with the number of prompts whose answers are all finished.
        max_rounds: continuation rounds at most; the last one runs without the ``=`` stop.

    Returns:
        One :class:`Generation` per prompt with its ``n`` completions, in order. A completion's
        ``token_ids`` are empty (the text is no longer one decoded sequence).
    """
    raw = [engine.render(p) for p in prompts]
    configs = per_prompt(sampling, len(raw))
    first = engine.generate(raw, [replace(sc, stop=(*sc.stop, "=")) for sc in configs])
    seqs = [_Seq(i, c.text, c.num_tokens, c.finish_reason, c.stop_reason)
            for i, g in enumerate(first) for c in g.completions]
    reported = 0
    for rnd in range(max_rounds):
        active = [s for s in seqs if not s.done and _continue(s, calculate, configs[s.prompt].max_new_tokens)]
        for s in seqs:
            if s not in active:
                s.done = True
        if progress:
            finished = len({s.prompt for s in seqs} - {s.prompt for s in active})
            if finished > reported:
                progress(finished - reported)
                reported = finished
        if not active:
            break
        last = rnd == max_rounds - 1
        step = [_next_config(configs[s.prompt], s, rnd, k, last) for k, s in enumerate(active)]
        outs = engine.generate([raw[s.prompt] + s.text for s in active], step)
        for s, g in zip(active, outs, strict=True):
            c = g.completions[0]
            s.text += c.text
            s.tokens += c.num_tokens
            s.finish, s.stop = c.finish_reason, c.stop_reason
    results: list[list[Completion]] = [[] for _ in prompts]
    for s in seqs:
        results[s.prompt].append(Completion(text=s.text, finish_reason=s.finish, num_tokens=s.tokens,
                                            stop_reason=None))
    return [Generation(completions=c) for c in results]


def _next_config(sc: SamplingConfig, s: _Seq, rnd: int, k: int, last: bool) -> SamplingConfig:
    """One continuation of one sequence: its remaining budget, its own seed, "=" stops but in the last round."""
    return SamplingConfig(temperature=sc.temperature, top_p=sc.top_p, n=1, max_new_tokens=sc.max_new_tokens - s.tokens,
                          seed=sc.seed + 7919 * (rnd + 1) + k, stop=sc.stop if last else (*sc.stop, "="))


def _continue(s: _Seq, calculate: Calculator, budget: int) -> bool:
    """Handle a sequence that stopped at "=": insert the result; whether it goes on generating."""
    if s.done or s.finish != "stop" or s.stop != "=":
        return False
    s.text += "="
    result = calculate(s.text)
    if result is not None:
        s.text += f" {result}"
        s.calls += 1
    if s.tokens >= budget:
        s.finish = "length"
        return False
    return True

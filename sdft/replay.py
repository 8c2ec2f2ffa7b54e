"""Self-generated replay data, Magpie style (``sdft replay``).

Replaying a little of the old training data while learning a new task is the classic cure for
forgetting, but the old data of an aligned chat model is unknown. Magpie (Xu et al., 2024)
recovers it from the model itself: the model is given only the *pre-query* part of its chat
template (everything up to where the user's text would start), so it writes a user query the
way its alignment data looked; then it answers that query through the normal chat template.

The stage runs in *rounds*. Round ``r`` samples ``batch_size`` queries from the raw pre-query
prompt (one prompt, ``n = batch_size`` samples, high temperature, seed derived from the run
seed and ``r``), filters them (:mod:`sdft.replay_filters`), answers the survivors at low
temperature and filters the answers. Every attempt, kept or not, becomes one row of the round's
shard, so a rerun regenerates exactly the missing rounds and the filter counts in the manifest
sum to the number of attempts. Rounds continue until ``num`` rows are kept or ``max_rounds``
is reached; kept rows past ``num`` are marked ``surplus``.

Rows use the rewrite output format: kept rows have status ``rewritten`` (reason ``ok``), the
others ``dropped`` with the failed filter as reason; every row carries ``"source": "replay"``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from sdft.config import (
    Backend,
    DType,
    api_key_field,
    backend_field,
    base_url_field,
    check_literals,
    dtype_field,
    engine_options_of,
    engine_problems,
    kv_cache_field,
    max_concurrency_field,
    max_model_len_field,
    model_field,
    tensor_parallel_field,
    to_dict,
)
from sdft.engines import Engine, EngineOptions, SamplingConfig, load_engine, pick_backend
from sdft.errors import ConfigError
from sdft.formats import FORMATS
from sdft.models import resolve_model
from sdft.prompts import render_chat
from sdft.replay_filters import (
    GENERIC_MARKERS,
    LANGUAGES,
    QUERY_CHECKS,
    REASONS,
    REFUSAL_MODES,
    Deduplicator,
    FilterRules,
    check_answer,
    check_query,
    keep_refusal,
)
from sdft.store import StageRunner, check_output, model_files, settings_hash

ProgressCb = Callable[..., None]  # on_progress(done, total, **stats): see sdft.progress
OutputFormat = Literal[FORMATS]  # type: ignore[valid-type]
Language = Literal[LANGUAGES]  # type: ignore[valid-type]
RefusalMode = Literal[REFUSAL_MODES]  # type: ignore[valid-type]

#: Stands in for the user's text when the chat template is rendered; plain ASCII letters so a
#: template that trims, escapes or title-cases nothing in particular leaves it intact.
SENTINEL = "SDFTREPLAYQUERYSENTINEL"

#: Reasons of rows that passed every check (``surplus``: after the first ``num`` kept rows).
PASSED = ("ok", "surplus")
#: Reasons decided on the query alone; every other row's query is in the duplicate index.
QUERY_DROPS = frozenset(QUERY_CHECKS)


# ---------------------------------------------------------------------------------------------
# pre-query derivation


def _turns(system_prompt: str | None, user: str) -> list[dict[str, str]]:
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": user}]


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    try:
        return render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # a template that raises (e.g. no system role): the user can override
        raise ConfigError(
            f"the chat template could not render a {'system + ' if len(messages) > 1 else ''}user turn "
            f"({type(e).__name__}: {e}); pass the pre-query text yourself (--pre-query)"
        ) from None


def _split_at_sentinel(text: str) -> tuple[str, str]:
    if text.count(SENTINEL) != 1:
        raise ConfigError(
            f"the chat template rendered the user message {text.count(SENTINEL)} times, so the text before it "
            "cannot be cut out; pass the pre-query text yourself (--pre-query)"
        )
    before, after = text.split(SENTINEL)
    return before, after


def pre_query_template(tokenizer: Any, system_prompt: str | None = None) -> str:
    """The text of the chat template up to where the user's message starts.

    A conversation with a sentinel user message (after an optional system turn) is rendered
    with the model's chat template and cut at the sentinel. For ChatML this is e.g.
    ``"<|im_start|>user\\n"`` (after the template's default system turn, if it has one).

    Args:
        tokenizer: a transformers tokenizer (without a chat template, ChatML is used, as in
            :func:`sdft.prompts.render_chat`).
        system_prompt: an optional system turn placed before the user turn.

    Returns:
        The pre-query prompt, to be sent raw (no chat wrapping, no BOS added).

    Raises:
        ConfigError: the template fails to render, renders the message more or less than once,
            or puts nothing before it; pass the pre-query string explicitly then.
    """
    text = _render(tokenizer, _turns(system_prompt, SENTINEL), add_generation_prompt=False)
    before, _ = _split_at_sentinel(text)
    if not before.strip():
        raise ConfigError("the chat template puts nothing before the user message, so the model would not know it "
                          "is writing a user turn; pass the pre-query text yourself (--pre-query)")
    return before


def _special_tokens(tokenizer: Any) -> set[str]:
    specials = set(getattr(tokenizer, "all_special_tokens", None) or [])
    for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(tok, "special", False):
            specials.add(str(tok))
    return {s for s in specials if s}


def _contains_special(text: str, specials: set[str]) -> bool:
    return any(s in text for s in specials)


def end_of_user_turn(tokenizer: Any, system_prompt: str | None = None) -> tuple[str, str]:
    """What the chat template writes right after the user's text.

    Returns:
        ``(end, end_and_header)``: the end-of-user-turn text, and that text followed by the
        assistant header (generation prompt), both stripped of surrounding whitespace.
    """
    plain = _render(tokenizer, _turns(system_prompt, SENTINEL), add_generation_prompt=False)
    with_header = _render(tokenizer, _turns(system_prompt, SENTINEL), add_generation_prompt=True)
    return _split_at_sentinel(plain)[1].strip(), _split_at_sentinel(with_header)[1].strip()


def query_stop_strings(tokenizer: Any, system_prompt: str | None = None) -> tuple[str, ...]:
    """Stop strings that end a generated query where the template's user turn ends.

    The end-of-turn *token* (``<|im_end|>``, ``<|eot_id|>``) is not needed here: the engines
    always stop on end-of-turn ids, and special tokens never appear in the decoded text. A
    stop string is needed where the user turn ends with plain text (``[/INST]`` in a tokenizer
    without that special token, ``### Response:`` in an Alpaca-style template).
    """
    specials = _special_tokens(tokenizer)
    out: list[str] = []
    for s in end_of_user_turn(tokenizer, system_prompt):
        if s and not _contains_special(s, specials) and not any(o in s for o in out):
            out.append(s)
    return tuple(out)


def answer_stop_strings(tokenizer: Any, system_prompt: str | None = None) -> tuple[str, ...]:
    """Stop strings that end an answer where the template starts the next user turn.

    Needed only where the text between an answer and the next user message is plain
    (``### Instruction:`` in an Alpaca-style template); end-of-turn special tokens stop the
    engines already. Templates that cannot render a second user turn give none.
    """
    s1, s2 = SENTINEL + "A", SENTINEL + "B"
    try:
        text = render_chat(tokenizer, [*_turns(system_prompt, s1), {"role": "assistant", "content": s2},
                                       {"role": "user", "content": SENTINEL + "C"}], add_generation_prompt=False)
    except Exception:  # e.g. strict alternation rules: the end-of-turn token has to do
        return ()
    if text.count(s2) != 1 or text.count(SENTINEL + "C") != 1:
        return ()
    between = text.split(s2, 1)[1].split(SENTINEL + "C", 1)[0].strip()
    # With a special token in it ("<|im_end|>\n<|im_start|>user") the end-of-turn id stops first.
    return (between,) if between and not _contains_special(between, _special_tokens(tokenizer)) else ()


def _leading_special_id(tokenizer: Any, text: str) -> int | None:
    """The id of the special token ``text`` starts with (None when it starts with plain text)."""
    for s in sorted(_special_tokens(tokenizer), key=len, reverse=True):
        if text.startswith(s):
            tid = tokenizer.convert_tokens_to_ids(s)
            return tid if isinstance(tid, int) else None
    return None


def template_markers(tokenizer: Any, stops: tuple[str, ...]) -> tuple[str, ...]:
    """Markup that must not appear in a replay query or answer: generic chat markup, the
    tokenizer's special and added tokens, and the query stop strings."""
    added = [t for t in (getattr(tokenizer, "get_added_vocab", dict)() or {}) if len(t) >= 3 and t[0] in "<["]
    seen: dict[str, None] = {}
    for m in (*GENERIC_MARKERS, *sorted(_special_tokens(tokenizer)), *sorted(added), *stops):
        if m.strip():
            seen.setdefault(m, None)
    return tuple(seen)


def context_lines(pre_query: str, tokenizer: Any) -> tuple[str, ...]:
    """Lines of readable text in the pre-query prompt (system prompts) that a query must not repeat."""
    text = pre_query
    for s in _special_tokens(tokenizer):
        text = text.replace(s, "\n")
    return tuple(line.strip() for line in text.splitlines() if len(line.split()) >= 4)


# ---------------------------------------------------------------------------------------------
# config


@dataclass
class ReplayConfig:
    """Settings of one replay run (``sdft replay`` flags, or a recipe's ``replay`` section)."""

    output: str = field(metadata={"help": "training output (output_format); OUT.records.jsonl, OUT.rejected.jsonl, "
                                          "OUT.manifest.json and OUT.log are written beside it"})
    model: str = model_field("seed model")
    backend: Backend = backend_field()
    base_url: str | None = base_url_field()
    api_key: str | None = api_key_field()
    max_concurrency: int = max_concurrency_field()
    num: int = field(default=1000, metadata={"help": "replay rows to keep"})
    system_prompt: str | None = field(default=None, metadata={"help": "system turn before the user turn (both "
                                                                      "when writing queries and answering)"})
    pre_query: str | None = field(default=None, metadata={"help": "raw text that starts a user turn, instead of "
                                                                   "deriving it from the chat template"})
    batch_size: int = field(default=128, metadata={"help": "query attempts per round (one engine call, one shard)"})
    max_rounds: int | None = field(default=None, metadata={"help": "stop after this many rounds even with fewer "
                                                                   "than num rows (default: 4 x num attempts)"})
    query_temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the queries"})
    query_top_p: float = field(default=1.0, metadata={"help": "nucleus mass of the queries"})
    query_max_tokens: int = field(default=128, metadata={"help": "cap on query tokens (longer: truncated)"})
    answer_temperature: float = field(default=0.2, metadata={"help": "sampling temperature of the answers"})
    answer_top_p: float = field(default=1.0, metadata={"help": "nucleus mass of the answers"})
    answer_max_tokens: int = field(default=512, metadata={"help": "cap on answer tokens (longer: truncated)"})
    seed: int = field(default=0, metadata={"help": "run seed (round r samples with a seed derived from it)"})
    min_query_words: int = field(default=3, metadata={"help": "shorter queries are dropped"})
    max_query_words: int = field(default=200, metadata={"help": "longer queries are dropped"})
    min_answer_words: int = field(default=1, metadata={"help": "shorter answers are dropped (refusals exempt)"})
    max_answer_words: int | None = field(default=None, metadata={"help": "longer answers are dropped (unset: no "
                                                                         "limit)"})
    require_question: bool = field(default=True, metadata={"help": "drop queries that do not read as a request"})
    language: Language | None = field(default=None, metadata={"help": "keep rows in this language only (no model "
                                                                      "needed)"})
    near_dup_threshold: float | None = field(default=0.7, metadata={"help": "shingle Jaccard similarity at which a "
                                                                            "query is a near duplicate (1: off)"})
    ngram: int = field(default=5, metadata={"help": "shingle length for near duplicates"})
    shingle: Literal["char", "word"] = field(default="char", metadata={"help": "what ngram counts: characters or "
                                                                                "words"})
    refusals: RefusalMode = field(default="proportional", metadata={
        "help": "proportional: refusals (part of the model's alignment) are kept in the share the model gives "
                "them; keep: every refusal that passes; drop: none"})
    overwrite: bool = field(default=False, metadata={"help": "discard earlier results of another config"})
    dtype: DType = dtype_field()
    kv_cache_gib: float = kv_cache_field()
    max_model_len: int | None = max_model_len_field()
    tensor_parallel_size: int = tensor_parallel_field()
    output_format: OutputFormat = field(default="messages", metadata={
        "help": "training rows written to output (kept rows only): chat messages, alpaca, sharegpt, TRL "
                "prompt-completion, or hf (a datasets.save_to_disk folder); see docs/FORMATS.md"})

    def __post_init__(self) -> None:
        problems = [*check_literals(self), *engine_problems(self)]
        if self.num < 1:
            problems.append(f"num must be >= 1, got {self.num}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_rounds is not None and self.max_rounds < 1:
            problems.append(f"max_rounds must be >= 1, got {self.max_rounds}")
        if self.query_temperature <= 0:
            problems.append("query_temperature must be > 0: greedy decoding writes the same query every time")
        if self.min_query_words < 0 or self.min_answer_words < 0:
            problems.append("min_query_words and min_answer_words must be >= 0")
        if self.max_query_words < max(1, self.min_query_words):
            problems.append(f"max_query_words ({self.max_query_words}) must be >= min_query_words and >= 1")
        if self.max_answer_words is not None and self.max_answer_words < max(1, self.min_answer_words):
            problems.append(f"max_answer_words ({self.max_answer_words}) must be >= min_answer_words and >= 1")
        if self.near_dup_threshold is not None and not 0 < self.near_dup_threshold <= 1:
            problems.append(f"near_dup_threshold must be in (0, 1], got {self.near_dup_threshold}")
        if self.ngram < 1:
            problems.append(f"ngram must be >= 1, got {self.ngram}")
        if self.pre_query is not None and not self.pre_query.strip():
            problems.append("pre_query is empty")
        try:
            self.query_sampling(0)
            self.answer_sampling(0)
        except ConfigError as e:
            problems.extend(e.problems)
        if problems:
            raise ConfigError(problems)

    @property
    def rounds_cap(self) -> int:
        """``max_rounds``, or enough rounds for four attempts per wanted row."""
        return self.max_rounds or max(1, math.ceil(4 * self.num / self.batch_size))

    def query_sampling(self, seed: int, stop: tuple[str, ...] = ()) -> SamplingConfig:
        return SamplingConfig(temperature=self.query_temperature, top_p=self.query_top_p,
                              max_new_tokens=self.query_max_tokens, n=self.batch_size, seed=seed, stop=stop)

    def answer_sampling(self, seed: int, stop: tuple[str, ...] = ()) -> SamplingConfig:
        return SamplingConfig(temperature=self.answer_temperature, top_p=self.answer_top_p,
                              max_new_tokens=self.answer_max_tokens, n=1, seed=seed, stop=stop)

    def engine_options(self) -> EngineOptions:
        return engine_options_of(self)

    def answer_messages(self, query: str) -> list[dict[str, str]]:
        """The training prompt of a replay row: the optional system turn and the query."""
        return _turns(self.system_prompt, query)


@dataclass
class ReplayResult:
    output: Path
    manifest: dict[str, Any]
    cached: bool = False


@dataclass
class PreQuery:
    """The raw prompt that makes the model write a user query, and how to stop it."""

    text: str
    stops: tuple[str, ...]
    answer_stops: tuple[str, ...]
    markers: tuple[str, ...]
    context_lines: tuple[str, ...]
    derived: bool  # False when given as a string (cfg.pre_query)


def build_pre_query(cfg: ReplayConfig, tokenizer: Any) -> PreQuery:
    """Derive (or take from ``cfg.pre_query``) the pre-query prompt, its stop strings and markers."""
    if cfg.pre_query is not None:
        text, derived = cfg.pre_query, False
        try:
            stops = query_stop_strings(tokenizer, cfg.system_prompt)
        except ConfigError:  # the very templates that need an override may not render at all
            stops = ()
    else:
        text, derived = pre_query_template(tokenizer, cfg.system_prompt), True
        stops = query_stop_strings(tokenizer, cfg.system_prompt)
    answer_stops = answer_stop_strings(tokenizer, cfg.system_prompt)
    return PreQuery(text, stops, answer_stops, template_markers(tokenizer, (*stops, *answer_stops)),
                    context_lines(text, tokenizer), derived)


def filter_rules(cfg: ReplayConfig, pq: PreQuery) -> FilterRules:
    return FilterRules(min_query_words=cfg.min_query_words, max_query_words=cfg.max_query_words,
                       min_answer_words=cfg.min_answer_words, max_answer_words=cfg.max_answer_words,
                       require_question=cfg.require_question, language=cfg.language, refusals=cfg.refusals,
                       markers=pq.markers, context_lines=pq.context_lines)


def config_hash(cfg: ReplayConfig, model_id: str, backend: str, pq: PreQuery,
                model_path: str | None = None) -> tuple[str, dict[str, Any]]:
    """Hash of everything that changes the rows (not num, max_rounds, format or paths: those only
    say how many rounds to run and how to write them, so a larger ``num`` continues an earlier run)."""
    rules = asdict(filter_rules(cfg, pq))
    key = {
        "model": model_id, "model_files": model_files(model_path), "backend": backend, "dtype": cfg.dtype,
        "pre_query": pq.text, "stops": list(pq.stops),
        "answer_stops": list(pq.answer_stops),
        "system_prompt": cfg.system_prompt, "batch_size": cfg.batch_size, "seed": cfg.seed,
        "query_sampling": {k: v for k, v in asdict(cfg.query_sampling(0)).items() if k not in ("seed", "stop")},
        "answer_sampling": {k: v for k, v in asdict(cfg.answer_sampling(0)).items() if k != "seed"},
        "filters": {**rules, "near_dup_threshold": cfg.near_dup_threshold, "ngram": cfg.ngram,
                    "shingle": cfg.shingle},
    }
    key = json.loads(json.dumps(key, default=str))
    return settings_hash(key), key


def round_seed(seed: int, round_index: int, batch_size: int) -> int:
    """Sampling seed of round ``round_index``.

    vLLM gives the ``n`` samples of one request the seeds ``s, s+1, ..., s+n-1``, so rounds are
    spaced ``batch_size`` apart from a base drawn from the run seed: no two samples of a run
    share a seed, and a rerun of a round draws the same queries.
    """
    base = int.from_bytes(hashlib.blake2b(f"sdft-replay:{seed}".encode(), digest_size=4).digest(), "little")
    return (base + round_index * batch_size) % (2**31)


def describe(cfg: ReplayConfig) -> dict[str, Any]:
    """The pre-query prompt, stop strings and markers for ``cfg``, without loading model weights."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.model))
    pq = build_pre_query(cfg, tokenizer)
    return {"pre_query": pq.text, "derived": pq.derived, "stops": list(pq.stops),
            "answer_stops": list(pq.answer_stops), "markers": list(pq.markers),
            "context_lines": list(pq.context_lines)}


# ---------------------------------------------------------------------------------------------
# the run


def _row_id(chash: str, r: int, slot: int) -> str:
    return f"replay-{chash[:8]}-{r:05d}-{slot:04d}"


def _set_label(row: dict[str, Any], reason: str) -> None:
    """Mark a row that passed every check as kept (``ok``) or ``surplus``."""
    row["reason"] = reason
    if reason == "ok":
        row.update(status="rewritten", response=row["candidates"][0]["text"], chosen=0, detail=None)
    else:
        row.update(status="dropped", response=None, chosen=None, detail="beyond the requested number of rows")


def _relabelled(rows: Iterable[dict[str, Any]], num: int) -> Iterator[dict[str, Any]]:
    """Label the first ``num`` passing rows ``ok`` and later ones ``surplus``, in row order.

    Labels depend on ``num``, which may differ from the run that wrote a shard (a larger
    ``num`` continues a finished run, a smaller one keeps every row but labels fewer ``ok``),
    so they are settled here, as the output is written; the parts keep what they hold.
    """
    kept = 0
    for row in rows:
        if row["reason"] in PASSED:
            want = "ok" if kept < num else "surplus"
            kept += want == "ok"
            if row["reason"] != want:
                _set_label(row, want)
        yield row


def _versions() -> dict[str, str]:
    from sdft.rewrite import _versions as versions

    return versions()


def run_replay(
    cfg: ReplayConfig,
    *,
    engine: Engine | None = None,
    on_progress: ProgressCb | None = None,
    notice: Callable[[str], None] | None = None,
) -> ReplayResult:
    """Generate ``cfg.num`` filtered replay rows with the model itself; resumable.

    Args:
        cfg: the run's settings.
        engine: an already-loaded engine to reuse (its model must be ``cfg.model``); when None
            one is loaded (and closed at the end).
        on_progress: ``on_progress(kept, num, keep_rate=..., q_s=..., round=...)`` after each
            query and answer batch.
        notice: one-line notices (backend fallback, resume, cache hits, a short run).

    Returns:
        The output path and manifest. A finished output of the same config and ``num`` is
        returned as is (``cached=True``).

    Raises:
        ConfigError: invalid settings, or a chat template the pre-query cannot be derived from.
        InputError: the output holds results of a different replay config.
    """
    from sdft.formats import is_folder_format

    say = notice or (lambda _m: None)
    t0 = time.time()
    protect = [cfg.model] if Path(cfg.model).exists() else []
    check_output(cfg.output, folder=is_folder_format(cfg.output_format), protect=protect)  # before any model
    backend = engine.name if engine is not None else pick_backend(cfg.backend, say)
    model_path = engine.model_path if engine is not None else resolve_model(cfg.model, log=say)
    if engine is not None:
        tokenizer = engine.tokenizer
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
    pq = build_pre_query(cfg, tokenizer)
    rules = filter_rules(cfg, pq)
    chash, ckey = config_hash(cfg, cfg.model, backend, pq, model_path)
    rounds_cap = cfg.rounds_cap
    runner = StageRunner(cfg.output, kind="sdft-replay", settings=ckey, protect=protect,
                         output_format=cfg.output_format, overwrite=cfg.overwrite, notice=say)
    own_engine = engine is None
    with runner:
        finished = runner.resume(reusable=lambda m: m.get("num_requested") == cfg.num
                                 and m.get("max_rounds") == rounds_cap)
        if finished is not None:
            return ReplayResult(Path(cfg.output), finished, cached=True)
        try:
            tally = _rounds(engine, cfg, runner, chash, model_path, backend, tokenizer, pq, rules, on_progress, say)
            engine = tally.pop("engine")

            def rows() -> Iterator[dict[str, Any]]:
                return _relabelled(runner.ordered_records(), cfg.num)

            manifest = _manifest(cfg, rows(), chash, model_path, backend, pq, rounds_cap, tally, t0)
            if manifest["rows"]["kept"] < cfg.num:
                say(f"only {manifest['rows']['kept']} of {cfg.num} rows kept after {rounds_cap} rounds "
                    f"(keep rate {manifest['acceptance_rate']:.1%}): raise --max-rounds to continue this run")
            rounds = {row["extra"]["round"] for row in runner.iter_records()}
            expected = [_row_id(chash, r, slot) for r in sorted(rounds) for slot in range(cfg.batch_size)]
            final = runner.finalize(manifest, expected_ids=expected, records=rows())
        finally:
            if own_engine and engine is not None:
                engine.close()
    return ReplayResult(Path(cfg.output), final)


def _rounds(engine: Engine | None, cfg: ReplayConfig, runner: StageRunner, chash: str, model_path: str, backend: str,
            tokenizer: Any, pq: PreQuery, rules: FilterRules, on_progress: ProgressCb | None,
            say: Callable[[str], None]) -> dict[str, Any]:
    """Run the missing rounds until ``num`` rows pass; the tallies (and the engine, once loaded)."""
    # State from finished rounds: which rounds exist, the counts, and the duplicate index
    # (rebuilt in round order, so a resumed round sees exactly what it saw the first time).
    dedup = Deduplicator(cfg.near_dup_threshold, ngram=cfg.ngram, unit=cfg.shingle)
    reasons: Counter[str] = Counter()
    done_rounds: set[int] = set()
    ref: Counter[str] = Counter()  # answered, refused (all answers) and kept (refusals among passing rows)
    for row in sorted(runner.iter_records(), key=lambda row: row["index"]):
        done_rounds.add(row["extra"]["round"])
        reasons[row["reason"]] += 1
        if row["reason"] not in QUERY_DROPS:
            dedup.add(row["messages"][-1]["content"], row["id"])
        if row.get("refusal") is not None:
            ref["answered"] += 1
            ref["refused"] += row["refusal"]
            ref["kept"] += row["refusal"] and row["reason"] in PASSED
    passed = sum(reasons[k] for k in PASSED)
    if done_rounds:
        say(f"resuming: {len(done_rounds)} rounds done, {passed} rows kept so far, in {runner.paths.parts}")

    tally: dict[str, Any] = {"q_tokens": 0, "a_tokens": 0, "q_seconds": 0.0, "a_seconds": 0.0, "queries": 0}

    def report(r: int) -> None:
        if on_progress:
            total = sum(reasons.values())
            stats: dict[str, Any] = {"round": r + 1}
            if total:
                stats["keep_rate"] = passed / total
            if tally["q_seconds"]:
                stats["q_s"] = round(tally["queries"] / tally["q_seconds"], 1)
            on_progress(min(passed, cfg.num), cfg.num, **stats)

    for r in range(cfg.rounds_cap):
        if passed >= cfg.num:
            break
        if r in done_rounds:
            continue
        if engine is None:
            engine = load_engine(model_path, backend, cfg.engine_options(), notice=say)
        if not tally["queries"]:  # first round of this run
            _warn_unstoppable(engine, tokenizer, cfg, pq, say)
        rows = _one_round(engine, cfg, r, chash, pq, rules, dedup, tally, lambda r=r: report(r))
        ref["answered"] += sum(row["refusal"] is not None for row in rows)
        ref["refused"] += sum(bool(row["refusal"]) for row in rows)
        share = ref["refused"] / ref["answered"] if ref["answered"] else 0.0
        for row in rows:
            if row["reason"] == "ok" and row["refusal"] and cfg.refusals == "proportional":
                if keep_refusal(ref["kept"], passed, share):
                    ref["kept"] += 1
                else:
                    row.update(reason="excess-refusal", passed=0,
                               detail=f"kept rows would hold more refusals than the {share:.1%} of all answers")
                    row["candidates"][0].update(ok=False, reason="excess-refusal")
            if row["reason"] == "ok":
                _set_label(row, "ok" if passed < cfg.num else "surplus")
                passed += 1
            reasons[row["reason"]] += 1
        runner.append(rows)
        report(r)
    tally["engine"] = engine
    return tally


def _one_round(engine: Engine, cfg: ReplayConfig, r: int, chash: str, pq: PreQuery, rules: FilterRules,
               dedup: Deduplicator, tally: dict[str, Any], after_queries: Callable[[], None]) -> list[dict[str, Any]]:
    """Round ``r``: sample ``batch_size`` queries, filter them, answer and judge the survivors.

    Returns one row per attempt (refusal quotas and ok/surplus labels are the caller's).
    """
    seed = round_seed(cfg.seed, r, cfg.batch_size)
    t = time.time()
    gen = engine.generate([pq.text], cfg.query_sampling(seed, pq.stops))[0]
    tally["q_seconds"] += time.time() - t
    tally["queries"] += len(gen.completions)
    tally["q_tokens"] += sum(c.num_tokens for c in gen.completions)
    rows: list[dict[str, Any]] = []
    to_answer: list[dict[str, Any]] = []
    for slot, c in enumerate(gen.completions):
        query = c.text.strip()
        rid = _row_id(chash, r, slot)
        reason, detail = check_query(query, c.finish_reason, rules)
        if reason is None:
            reason, detail = dedup.check_and_add(query, rid)
        row = {
            "id": rid, "index": r * cfg.batch_size + slot, "messages": cfg.answer_messages(query),
            "response": None, "original": None, "status": "dropped", "reason": reason or "ok",
            "detail": detail, "attempts": 0, "passed": 0, "chosen": None, "config_hash": chash,
            "source": "replay", "refusal": None,
            "extra": {"round": r, "slot": slot, "query_finish_reason": c.finish_reason,
                      "query_tokens": c.num_tokens},
        }
        rows.append(row)
        if reason is None:
            to_answer.append(row)
    after_queries()
    if to_answer:
        t = time.time()
        answers = engine.generate([row["messages"] for row in to_answer], cfg.answer_sampling(seed, pq.answer_stops))
        tally["a_seconds"] += time.time() - t
        _judge_answers(to_answer, answers, rules)
        tally["a_tokens"] += sum(row["extra"]["answer_tokens"] for row in to_answer)
    return rows


def _judge_answers(rows: list[dict[str, Any]], answers: list[Any], rules: FilterRules) -> None:
    from sdft.refusal import is_refusal

    for row, g in zip(rows, answers, strict=True):
        c = g.completions[0]
        text = c.text.strip()
        refusal = is_refusal(text)
        reason, detail = check_answer(text, c.finish_reason, rules, refusal=refusal)
        row.update(reason=reason or "ok", detail=detail, attempts=1, passed=int(reason is None), refusal=refusal)
        row["extra"].update(answer_finish_reason=c.finish_reason, answer_tokens=c.num_tokens)
        row["candidates"] = [{"text": text, "finish_reason": c.finish_reason, "num_tokens": c.num_tokens,
                              "ok": reason is None, "reason": reason or "ok"}]


def _warn_unstoppable(engine: Engine, tokenizer: Any, cfg: ReplayConfig, pq: PreQuery,
                      say: Callable[[str], None]) -> None:
    """Warn when the user turn ends with a special token the engine does not stop on."""
    try:
        end, _ = end_of_user_turn(tokenizer, cfg.system_prompt)
    except ConfigError:
        return
    tid = _leading_special_id(tokenizer, end)
    stop_ids = getattr(engine, "stop_ids", None)
    if tid is not None and stop_ids is not None and tid not in stop_ids and not pq.stops:
        say(f"the user turn ends with {end!r}, which is not an end-of-turn token of this engine: queries may run "
            f"to --query-max-tokens and be dropped as truncated")


def _manifest(cfg: ReplayConfig, rows: Iterable[dict[str, Any]], chash: str, model_path: str, backend: str,
              pq: PreQuery, rounds_cap: int, tally: dict[str, Any], t0: float) -> dict[str, Any]:
    reasons: Counter[str] = Counter()
    rounds: set[int] = set()
    answered = refused = kept_refused = 0
    for row in rows:
        reasons[row["reason"]] += 1
        rounds.add(row["extra"]["round"])
        if row.get("refusal") is not None:
            answered += 1
            refused += bool(row["refusal"])
            kept_refused += bool(row["refusal"]) and row["reason"] == "ok"
    total = sum(reasons.values())
    kept = reasons["ok"]
    gen_tokens = tally["q_tokens"] + tally["a_tokens"]
    gen_seconds = tally["q_seconds"] + tally["a_seconds"]
    return {
        "kind": "sdft-replay",
        "config_hash": chash,
        "config": to_dict(cfg),
        "model": cfg.model,
        "model_path": model_path,
        "backend": backend,
        "verifier": "replay-filters",
        "pre_query": pq.text,
        "pre_query_derived": pq.derived,
        "stop": list(pq.stops),
        "answer_stop": list(pq.answer_stops),
        "sampling": {"query": {k: v for k, v in asdict(cfg.query_sampling(0, pq.stops)).items() if k != "seed"},
                     "answer": {k: v for k, v in asdict(cfg.answer_sampling(0, pq.answer_stops)).items()
                                if k != "seed"},
                     "seed": cfg.seed},
        "num_requested": cfg.num,
        "max_rounds": rounds_cap,
        "rounds": len(rounds),
        "complete": kept >= cfg.num,
        "rows": {"total": total, "rewritten": kept, "fallback": 0, "dropped": total - kept, "kept": kept},
        "acceptance_rate": kept / total if total else 0.0,
        # every reason, in the order the checks run, so the counts read as a funnel
        "filters": {k: reasons.get(k, 0) for k in REASONS},
        "reasons": dict(reasons.most_common()),
        "refusals": {"mode": cfg.refusals, "answered": answered, "refused": refused,
                     "share_answered": round(refused / answered, 4) if answered else None,
                     "kept": kept, "kept_refused": kept_refused,
                     "share_kept": round(kept_refused / kept, 4) if kept else None,
                     "excess_dropped": reasons.get("excess-refusal", 0)},
        "queries_this_run": tally["queries"],
        "queries_per_second": round(tally["queries"] / tally["q_seconds"], 2) if tally["q_seconds"] else None,
        "generated_tokens_this_run": gen_tokens,
        "generation_seconds_this_run": round(gen_seconds, 3),
        "tokens_per_second": round(gen_tokens / gen_seconds, 2) if gen_seconds else None,
        "wall_seconds_this_run": round(time.time() - t0, 3),
        "versions": _versions(),
        "gap": None,
    }

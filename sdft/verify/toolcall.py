"""Tool / function calling: parse the call(s) in an answer and compare them structurally.

Accepted forms (in a ```` ``` ```` fence or not, alone or inside prose):

* Python call syntax, parsed with :mod:`ast` (never evaluated): ``get_weather(city="Paris")``,
  several calls one per line or separated by ``;``, or a list ``[f(a=1), g(b=2)]``. Argument
  values must be literals (strings, numbers, booleans, None, lists, dicts, tuples); ``true``,
  ``false`` and ``null`` are accepted as JSON spellings.
* JSON: ``{"name": "f", "arguments": {...}}`` (``arguments`` may be a JSON-encoded string;
  ``parameters`` is accepted as a synonym), OpenAI style ``{"type": "function", "function":
  {...}}``, ``{"tool_calls": [...]}``, a list of any of these, and the BFCL answer style
  ``{"f": {"arg": value}}``. Several JSON objects in the text (e.g. one per ``<tool_call>``
  tag) are collected.

Comparison ignores call order (parallel calls), and requires the same multiset of function
names and, call by call, the same argument names and values: numbers compare by value
(``5 == 5.0``; booleans are not numbers), strings compare exactly after stripping
surrounding whitespace, lists/dicts compare element by element. A string never equals a
number (``"5" != 5``). Positional arguments only match positional arguments: ``f("Paris")``
does not match ``f(city="Paris")`` because the parameter names are unknown here.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sdft.verify.base import PASS, Verdict

_FENCE_RE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
# A call in running text: a (dotted) identifier directly followed by "(". Requiring no space
# before "(" keeps prose such as "Paris (France)" out.
_CALL_START_RE = re.compile(r"(?<![\w.])[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\(")
_JSON_NAMES = {"true": True, "false": False, "null": None}
# Scanning text for embedded JSON tries raw_decode at each brace; cap the work on long texts.
_MAX_JSON_STARTS = 200


@dataclass(frozen=True)
class ToolCall:
    """One parsed function call."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        """Return a canonical one-line form: positional args, then keyword args sorted by name."""
        parts = [_render_value(a) for a in self.args]
        parts += [f"{k}={_render_value(self.kwargs[k])}" for k in sorted(self.kwargs)]
        return f"{self.name}({', '.join(parts)})"


def _render_value(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)


# ----------------------------------------------------------------------------- JSON forms


def _load_arguments(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return None
    return raw if isinstance(raw, dict) else None


def _calls_from_json(obj: Any) -> list[ToolCall] | None:
    """Interpret a decoded JSON value as call(s); None when it is not call-shaped."""
    if isinstance(obj, list):
        calls: list[ToolCall] = []
        for item in obj:
            sub = _calls_from_json(item)
            if sub is None:
                return None
            calls.extend(sub)
        return calls or None
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("tool_calls"), list):
        return _calls_from_json(obj["tool_calls"])
    if isinstance(obj.get("function"), dict):
        return _calls_from_json(obj["function"])
    if isinstance(obj.get("name"), str):
        raw = obj.get("arguments", obj.get("parameters", obj.get("args")))
        arguments = _load_arguments(raw)
        if arguments is None:
            return None
        return [ToolCall(obj["name"].strip(), (), arguments)]
    if len(obj) == 1:  # BFCL answer style {"func": {"arg": value}}
        ((name, arguments),) = obj.items()
        if isinstance(arguments, dict) and re.fullmatch(r"[A-Za-z_][\w.]*", name):
            return [ToolCall(name, (), arguments)]
    return None


def _scan_json(text: str) -> list[ToolCall]:
    """Collect call-shaped JSON values embedded anywhere in ``text``."""
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    pos, tries = 0, 0
    while tries < _MAX_JSON_STARTS:
        starts = [i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0]
        if not starts:
            break
        start = min(starts)
        tries += 1
        try:
            obj, end = decoder.raw_decode(text, start)
        except ValueError:
            pos = start + 1
            continue
        found = _calls_from_json(obj)
        if found:
            calls.extend(found)
            pos = end
        else:
            pos = start + 1
    return calls


# --------------------------------------------------------------------------- Python forms


def _literal(node: ast.expr) -> Any:
    """Evaluate a literal argument node; raises ValueError for anything that is not a literal."""
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return _JSON_NAMES[node.id]
    return ast.literal_eval(node)


def _dotted_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _call_from_node(node: ast.expr) -> ToolCall | None:
    if not isinstance(node, ast.Call):
        return None
    name = _dotted_name(node.func)
    if name is None:
        return None
    try:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            return None  # *args / **kwargs cannot be compared
        args = tuple(_literal(a) for a in node.args)
        kwargs = {k.arg: _literal(k.value) for k in node.keywords if k.arg is not None}
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        return None
    return ToolCall(name, args, kwargs)


def _calls_from_expr(node: ast.expr) -> list[ToolCall] | None:
    if isinstance(node, (ast.List, ast.Tuple)):
        calls: list[ToolCall] = []
        for elt in node.elts:
            sub = _calls_from_expr(elt)
            if sub is None:
                return None
            calls.extend(sub)
        return calls or None
    if isinstance(node, ast.Dict):  # a Python-literal spelling of the JSON forms
        try:
            return _calls_from_json(ast.literal_eval(node))
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            return None
    call = _call_from_node(node)
    return [call] if call else None


def _parse_python(text: str) -> list[ToolCall] | None:
    """Parse ``text`` as a whole as a sequence of call expressions; None if it is anything else."""
    try:
        module = ast.parse(text, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not module.body:
        return None
    calls: list[ToolCall] = []
    for stmt in module.body:
        if not isinstance(stmt, ast.Expr):
            return None
        sub = _calls_from_expr(stmt.value)
        if sub is None:
            return None
        calls.extend(sub)
    return calls


def _closing_paren(text: str, open_pos: int) -> int | None:
    """Index just past the ")" matching the "(" at ``open_pos``, skipping string literals."""
    depth, i, quote = 0, open_pos, ""
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _scan_python(text: str) -> list[ToolCall]:
    """Collect literal-argument calls embedded anywhere in ``text``."""
    calls: list[ToolCall] = []
    pos = 0
    while True:
        match = _CALL_START_RE.search(text, pos)
        if not match:
            return calls
        end = _closing_paren(text, match.end() - 1)
        call = None
        if end is not None:
            try:
                node = ast.parse(text[match.start() : end], mode="eval").body
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                node = None
            call = _call_from_node(node) if node is not None else None
        if call is not None:
            calls.append(call)
            pos = end
        else:  # e.g. print(get_weather(...)): look for a call inside
            pos = match.end()


# ----------------------------------------------------------------------------- public API


def _parse_segment(text: str) -> list[ToolCall] | None:
    text = text.strip()
    if not text:
        return None
    try:
        calls = _calls_from_json(json.loads(text))
    except ValueError:
        calls = None
    if calls:
        return calls
    calls = _parse_python(text)
    if calls:
        return calls
    return _scan_json(text) or _scan_python(text) or None


def parse_calls(text: str) -> list[ToolCall] | None:
    """Parse the function call(s) in ``text``.

    Code fences are looked into first; when no fence yields a call, the whole text is parsed,
    then scanned for embedded JSON calls, then for embedded Python calls.

    Args:
        text: a model answer or a reference.

    Returns:
        The calls in order of appearance, or None when no call can be parsed.
    """
    if not text or not text.strip():
        return None
    calls: list[ToolCall] = []
    for block in _FENCE_RE.findall(text):
        calls.extend(_parse_segment(block) or [])
    if calls:
        return calls
    return _parse_segment(_FENCE_RE.sub(lambda m: m.group(1), text))


def render_calls(calls: list[ToolCall]) -> str:
    """Canonical, order-independent string for a list of calls (sorted, ``; ``-separated)."""
    return "; ".join(sorted(call.render() for call in calls))


def extract_answer(text: str) -> str | None:
    """Return the canonical string of the calls in ``text`` (see :func:`render_calls`), or None."""
    calls = parse_calls(text)
    return render_calls(calls) if calls else None


def values_equal(got: Any, expected: Any) -> bool:
    """Structural equality of argument values (see the module docstring for the rules)."""
    if isinstance(got, bool) or isinstance(expected, bool):
        return isinstance(got, bool) and isinstance(expected, bool) and got == expected
    if isinstance(got, (int, float)) and isinstance(expected, (int, float)):
        return math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(got, str) and isinstance(expected, str):
        return got.strip() == expected.strip()
    if isinstance(got, (list, tuple)) and isinstance(expected, (list, tuple)):
        return len(got) == len(expected) and all(values_equal(g, e) for g, e in zip(got, expected))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(values_equal(got[k], expected[k]) for k in got)
    return got == expected


def _argument_mismatch(got: ToolCall, expected: ToolCall) -> str | None:
    """Describe the first difference between two same-name calls, or None when they match."""
    if bool(got.args) != bool(expected.args):
        return f"{expected.name}: positional and keyword arguments cannot be matched"
    if len(got.args) != len(expected.args):
        return f"{expected.name}: got {len(got.args)} positional arguments, expected {len(expected.args)}"
    for i, (g, e) in enumerate(zip(got.args, expected.args)):
        if not values_equal(g, e):
            return f"{expected.name}: argument {i} is {_render_value(g)}, expected {_render_value(e)}"
    missing = sorted(expected.kwargs.keys() - got.kwargs.keys())
    if missing:
        return f"{expected.name}: missing argument(s) {', '.join(missing)}"
    unexpected = sorted(got.kwargs.keys() - expected.kwargs.keys())
    if unexpected:
        return f"{expected.name}: unexpected argument(s) {', '.join(unexpected)}"
    for key in sorted(expected.kwargs):
        if not values_equal(got.kwargs[key], expected.kwargs[key]):
            return (
                f"{expected.name}: {key}={_render_value(got.kwargs[key])}, "
                f"expected {_render_value(expected.kwargs[key])}"
            )
    return None


def compare_calls(got: list[ToolCall], expected: list[ToolCall]) -> Verdict:
    """Compare parsed candidate calls with the reference calls (order-independent).

    Args:
        got: the candidate's calls.
        expected: the reference's calls.

    Returns:
        PASS, or a verdict with reason "wrong-function" (names differ), "extra-call",
        "missing-call" or "wrong-arguments".
    """
    got_names, expected_names = Counter(c.name for c in got), Counter(c.name for c in expected)
    extra, missing = got_names - expected_names, expected_names - got_names
    if extra and missing:
        return Verdict(
            False, "wrong-function", f"got {sorted(extra.elements())}, expected {sorted(missing.elements())}"
        )
    if extra:
        return Verdict(False, "extra-call", f"unexpected call(s) to {sorted(extra.elements())}")
    if missing:
        return Verdict(False, "missing-call", f"missing call(s) to {sorted(missing.elements())}")
    # Names match as multisets; pair calls by equal arguments. Matching greedily is exact here
    # because argument equality is an equivalence relation (up to the float tolerance).
    remaining = list(got)
    for exp in expected:
        same_name = [i for i, call in enumerate(remaining) if call.name == exp.name]
        match = next((i for i in same_name if _argument_mismatch(remaining[i], exp) is None), None)
        if match is None:
            detail = _argument_mismatch(remaining[same_name[0]], exp) or exp.name
            return Verdict(False, "wrong-arguments", detail)
        del remaining[match]
    return PASS


def is_correct(candidate: str, reference: str) -> Verdict:
    """Check that ``candidate`` makes the same call(s) as ``reference``.

    Args:
        candidate: the rewritten answer.
        reference: the reference answer (any accepted form; a non-string value such as a
            decoded JSON list is serialised to JSON first).

    Returns:
        A verdict with reason "ok", "no-call" (nothing parsable in the candidate),
        "bad-reference" (nothing parsable in the reference), or one of
        :func:`compare_calls`'s reasons.
    """
    if not isinstance(reference, str):
        reference = json.dumps(reference)
    expected = parse_calls(reference)
    if not expected:
        return Verdict(False, "bad-reference", "no function call found in the reference")
    got = parse_calls(candidate)
    if not got:
        return Verdict(False, "no-call", "no function call found in the candidate")
    return compare_calls(got, expected)


class ToolCallVerifier:
    """Verifier for function-calling data (Python call syntax or JSON tool calls)."""

    name = "tool-call"

    def extract_answer(self, text: str) -> str | None:
        """Return the canonical string of the calls in ``text`` (see :func:`extract_answer`)."""
        return extract_answer(text)

    def check(self, candidate: str, reference: str, row: dict[str, Any]) -> Verdict:
        """Compare the calls of ``candidate`` and ``reference``; ``row`` is unused."""
        return is_correct(candidate, reference)


def _loose_str(value: str) -> str:
    """BFCL's string rule: case, spaces and punctuation do not matter ("New York" == "new york.")."""
    return re.sub(r"[\s,./\-_*^'\"!?;:()]", "", value).lower()


def _allowed_match(got: Any, allowed: list[Any]) -> bool:
    for option in allowed:
        if option == "":
            continue
        if isinstance(got, str) and isinstance(option, str):
            if _loose_str(got) == _loose_str(option):
                return True
        elif values_equal(got, option):
            return True
    return False


def matches_allowed(
    got: list[ToolCall], ground_truth: list[dict[str, dict[str, list[Any]]]],
    param_order: dict[str, list[str]] | None = None,
) -> Verdict:
    """Check calls against BFCL-style possible answers.

    Each ground-truth entry is ``{function_name: {param: [allowed values]}}``; an allowed
    list that contains ``""`` marks the parameter as optional. Positional arguments are
    mapped to parameter names with ``param_order`` (the schema's property order).

    Args:
        got: the candidate's parsed calls.
        ground_truth: one entry per expected call (order-independent).
        param_order: function name -> parameter names in schema order.

    Returns:
        PASS, or a verdict with reason "wrong-function", "extra-call", "missing-call" or
        "wrong-arguments".
    """
    expected_names = [next(iter(entry)) for entry in ground_truth]
    got_names, want = Counter(c.name for c in got), Counter(expected_names)
    if got_names != want:
        extra, missing = got_names - want, want - got_names
        if extra and missing:
            return Verdict(False, "wrong-function", f"got {sorted(extra.elements())}, expected "
                                                    f"{sorted(missing.elements())}")
        return (Verdict(False, "extra-call", f"unexpected call(s) to {sorted(extra.elements())}") if extra
                else Verdict(False, "missing-call", f"missing call(s) to {sorted(missing.elements())}"))

    def mismatch(call: ToolCall, spec: dict[str, list[Any]]) -> str | None:
        order = (param_order or {}).get(call.name, list(spec))
        if len(call.args) > len(order):
            return f"{call.name}: too many positional arguments"
        kwargs = {**dict(zip(order, call.args)), **call.kwargs}
        unexpected = sorted(kwargs.keys() - spec.keys())
        if unexpected:
            return f"{call.name}: unexpected argument(s) {', '.join(unexpected)}"
        for name, allowed in spec.items():
            if name not in kwargs:
                if "" not in allowed:
                    return f"{call.name}: missing argument {name}"
            elif not _allowed_match(kwargs[name], allowed):
                return f"{call.name}: {name}={_render_value(kwargs[name])}, allowed {_render_value(allowed)}"
        return None

    remaining = list(got)
    for entry in ground_truth:
        name, spec = next(iter(entry.items()))
        candidates = [i for i, call in enumerate(remaining) if call.name == name]
        match = next((i for i in candidates if mismatch(remaining[i], spec) is None), None)
        if match is None:
            return Verdict(False, "wrong-arguments", mismatch(remaining[candidates[0]], spec) or name)
        del remaining[match]
    return PASS

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

Model output is hostile, so parsing is linear-time and capped: only the first
:data:`MAX_TEXT_CHARS` characters are parsed, at most :data:`MAX_CALLS` calls are collected
(one more is kept, so that a flood of calls still reads as "extra-call"), values nested deeper
than :data:`MAX_DEPTH` or integers wider than :data:`MAX_INT_BITS` bits make a call
unparsable, a single embedded call may span at most :data:`MAX_CALL_CHARS` characters, and
the search for embedded calls (bracket matching, remembered across call starts, plus parsing)
examines at most :data:`MAX_SCAN_WORK` characters in all.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sdft.verify.base import PASS, Verdict, clip

#: Only this many leading characters of an answer are parsed for calls.
MAX_TEXT_CHARS = 100_000
#: At most this many calls are collected from one answer (plus one, to report extra calls).
MAX_CALLS = 64
#: Values (JSON or Python literals) nested deeper than this are not call arguments.
MAX_DEPTH = 32
#: Integer arguments wider than this many bits are not call arguments (0x... literals).
MAX_INT_BITS = 1024
#: The longest single embedded call, in characters.
MAX_CALL_CHARS = 20_000
#: Characters examined in all (matching brackets, parsing) while looking for embedded calls.
MAX_SCAN_WORK = 1_000_000

_FENCE_RE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
# A call in running text: a (dotted) identifier directly followed by "(". Requiring no space
# before "(" keeps prose such as "Paris (France)" out.
_CALL_START_RE = re.compile(r"(?<![\w.])[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\(")
_JSON_NAMES = {"true": True, "false": False, "null": None}
# Scanning text for embedded JSON tries to decode at each bracket; cap the attempts.
_MAX_JSON_STARTS = 200
# Brackets and JSON string syntax, for the one-pass bracket matcher.
_JSON_TOKEN_RE = re.compile(r'\\.|["\[\]{}]', re.DOTALL)
# Brackets and Python string syntax, for finding the end of a call.
_PY_TOKEN_RE = re.compile(r"""\\.|["'()\[\]{}]""", re.DOTALL)


def _within_limits(value: Any, depth: int = 0) -> bool:
    """True when ``value`` nests at most :data:`MAX_DEPTH` levels and holds no over-wide integer."""
    stack = [(value, depth)]
    while stack:
        item, level = stack.pop()
        if level > MAX_DEPTH:
            return False
        if isinstance(item, int) and not isinstance(item, bool):
            if item.bit_length() > MAX_INT_BITS:
                return False
        elif isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, level + 1) for v in item)
    return True


def _json_loads(text: str) -> Any:
    """``json.loads`` that raises ValueError for deep nesting and oversized numbers too."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not _within_limits(value):
        raise ValueError("nested too deeply or an over-wide integer")
    return value


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
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)
    except (ValueError, TypeError, RecursionError):  # mixed-type keys, a value json cannot spell
        return repr(value)


# ----------------------------------------------------------------------------- JSON forms


def _load_arguments(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return {}
    if isinstance(raw, str):
        try:
            raw = _json_loads(raw) if raw.strip() else {}
        except ValueError:
            return None
    return raw if isinstance(raw, dict) else None


def _calls_from_json(obj: Any, depth: int = 0) -> list[ToolCall] | None:
    """Interpret a decoded JSON value as call(s); None when it is not call-shaped."""
    if depth > MAX_DEPTH or not _within_limits(obj, depth):
        return None
    if isinstance(obj, list):
        calls: list[ToolCall] = []
        for item in obj:
            sub = _calls_from_json(item, depth + 1)
            if sub is None:
                return None
            calls.extend(sub)
            if len(calls) > MAX_CALLS:
                break
        return calls or None
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("tool_calls"), list):
        return _calls_from_json(obj["tool_calls"], depth + 1)
    if isinstance(obj.get("function"), dict):
        return _calls_from_json(obj["function"], depth + 1)
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


def _json_spans(text: str) -> list[tuple[int, int]]:
    """Balanced ``[...]``/``{...}`` spans of ``text`` (start, end), in order of their start.

    One linear pass. Double quotes open strings only inside brackets, so that a stray quote
    in prose does not hide the JSON after it; spans nested deeper than :data:`MAX_DEPTH`
    are left out (they cannot be calls and would only cost decoding time).
    """
    spans: list[tuple[int, int]] = []
    stack: list[list[int]] = []  # [start, opening char, deepest nesting inside]
    in_string = False
    for match in _JSON_TOKEN_RE.finditer(text):
        token = match.group()
        if in_string:
            in_string = token != '"'
        elif token == '"':
            in_string = bool(stack)
        elif token in "[{":
            stack.append([match.start(), ord(token), 0])
        elif token in "]}" and stack:
            start, opening, inner = stack.pop()
            if chr(opening) + token not in ("[]", "{}"):
                stack.clear()  # mismatched: nothing open here can be JSON
                continue
            if inner < MAX_DEPTH:
                spans.append((start, match.end()))
            if stack:
                stack[-1][2] = max(stack[-1][2], inner + 1)
    spans.sort()
    return spans


def _scan_json(text: str) -> list[ToolCall]:
    """Collect call-shaped JSON values embedded anywhere in ``text``."""
    calls: list[ToolCall] = []
    pos, tries = 0, 0
    for start, end in _json_spans(text):
        if start < pos:
            continue  # inside a call already taken
        if tries >= _MAX_JSON_STARTS or len(calls) > MAX_CALLS:
            break
        tries += 1
        try:
            obj = _json_loads(text[start:end])
        except ValueError:
            continue
        found = _calls_from_json(obj)
        if found:
            calls.extend(found)
            pos = end
    return calls


# --------------------------------------------------------------------------- Python forms


def _literal(node: ast.expr) -> Any:
    """Evaluate a literal argument node; raises ValueError for anything that is not a literal."""
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return _JSON_NAMES[node.id]
    value = ast.literal_eval(node)
    if not _within_limits(value):
        raise ValueError("nested too deeply or an over-wide integer")
    return value


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
            return _calls_from_json(_literal(node))
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
        if len(calls) > MAX_CALLS:
            break
    return calls


def _closing_paren(text: str, open_pos: int, memo: dict[int, int | None]) -> int:
    """Find the ")" matching the "(" at ``open_pos``, skipping string literals; fill ``memo``.

    The scan jumps from bracket to quote with a regular expression. Every bracket it sees
    outside a string gets its match recorded in ``memo`` (None: never closed): a later call
    start at one of them is in the same tokenizer state, so its answer is the same, and text
    full of unclosed calls costs one scan instead of one per call.

    Returns:
        The number of characters examined.
    """
    stack: list[int] = []
    quote = ""
    for match in _PY_TOKEN_RE.finditer(text, open_pos):
        token = match.group()
        if len(token) == 2:  # an escape: only meaningful inside a string
            continue
        if quote:
            if token == quote:
                quote = ""
        elif token in "'\"":
            quote = token
        elif token in "([{":
            stack.append(match.start())
        elif stack:
            memo[stack.pop()] = match.end()
            if not stack:
                return match.end() - open_pos
    for pos in stack:
        memo[pos] = None
    return len(text) - open_pos


def _scan_python(text: str) -> list[ToolCall]:
    """Collect literal-argument calls embedded anywhere in ``text`` (within the scan caps)."""
    calls: list[ToolCall] = []
    memo: dict[int, int | None] = {}
    pos, work = 0, 0
    while work < MAX_SCAN_WORK and len(calls) <= MAX_CALLS:
        match = _CALL_START_RE.search(text, pos)
        if not match:
            break
        open_pos = match.end() - 1
        if open_pos not in memo:
            work += _closing_paren(text, open_pos, memo)
        end = memo.get(open_pos)
        call = None
        if end is not None and end - match.start() <= MAX_CALL_CHARS:
            work += end - match.start()
            try:
                node = ast.parse(text[match.start() : end], mode="eval").body
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                node = None
            call = _call_from_node(node) if node is not None else None
        if call is not None and end is not None:
            calls.append(call)
            pos = end
        else:  # e.g. print(get_weather(...)): look for a call inside
            pos = match.end()
    return calls


# ----------------------------------------------------------------------------- public API


def _parse_segment(text: str) -> list[ToolCall] | None:
    text = text.strip()
    if not text:
        return None
    try:
        calls = _calls_from_json(_json_loads(text))
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
        text: a model answer or a reference (only its first :data:`MAX_TEXT_CHARS`
            characters are parsed).

    Returns:
        The calls in order of appearance (at most :data:`MAX_CALLS` + 1), or None when no
        call can be parsed.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    text = text[:MAX_TEXT_CHARS]
    calls: list[ToolCall] = []
    for block in _FENCE_RE.findall(text):
        calls.extend(_parse_segment(block) or [])
        if len(calls) > MAX_CALLS:
            break
    if not calls:
        calls = _parse_segment(_FENCE_RE.sub(lambda m: m.group(1), text)) or []
    return calls[: MAX_CALLS + 1] or None


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
        if isinstance(got, int) and isinstance(expected, int):
            return got == expected  # exact, and no float conversion of wide integers
        try:
            return math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12)
        except OverflowError:  # an integer beyond float range against a float
            return got == expected
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
            False, "wrong-function", clip(f"got {sorted(extra.elements())}, expected {sorted(missing.elements())}")
        )
    if extra:
        return Verdict(False, "extra-call", clip(f"unexpected call(s) to {sorted(extra.elements())}"))
    if missing:
        return Verdict(False, "missing-call", clip(f"missing call(s) to {sorted(missing.elements())}"))
    # Names match as multisets; pair calls by equal arguments. Matching greedily is exact here
    # because argument equality is an equivalence relation (up to the float tolerance).
    remaining = list(got)
    for exp in expected:
        same_name = [i for i, call in enumerate(remaining) if call.name == exp.name]
        match = next((i for i in same_name if _argument_mismatch(remaining[i], exp) is None), None)
        if match is None:
            detail = _argument_mismatch(remaining[same_name[0]], exp) or exp.name
            return Verdict(False, "wrong-arguments", clip(detail, 240))
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
        try:
            reference = json.dumps(reference)
        except (TypeError, ValueError, RecursionError):
            return Verdict(False, "bad-reference", "the reference cannot be read as JSON")
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
    pure = True  # verify() may run it in the killable watchdog process

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
            return Verdict(False, "wrong-function", clip(f"got {sorted(extra.elements())}, expected "
                                                         f"{sorted(missing.elements())}"))
        return (Verdict(False, "extra-call", clip(f"unexpected call(s) to {sorted(extra.elements())}")) if extra
                else Verdict(False, "missing-call", clip(f"missing call(s) to {sorted(missing.elements())}")))

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
            return Verdict(False, "wrong-arguments", clip(mismatch(remaining[candidates[0]], spec) or name, 240))
        del remaining[match]
    return PASS

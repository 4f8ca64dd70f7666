"""Checks for the PromQL pieces a user configures (no I/O, no heavy imports).

The selector picks one Triton's series when a Prometheus scrapes several: without
it, the same model's counters from every target are added up. It is a list of
label matchers as inside PromQL braces, e.g. `instance="10.0.0.5:8002"` or
`job="triton", instance=~"gpu1:.*"`; surrounding braces are accepted.
"""

from __future__ import annotations

import re

LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_VALUE = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`'
_MATCHER = re.compile(rf"\s*({LABEL_NAME})\s*(=~|!~|!=|=)\s*({_VALUE})\s*(,|$)", re.DOTALL)
_UNQUOTED = re.compile(rf"\s*({LABEL_NAME})\s*(=~|!~|!=|=)\s*([^\s,\"'`]+)\s*(,|$)")
_LABEL_NAME = re.compile(rf"^{LABEL_NAME}$")
EXAMPLE = 'instance="127.0.0.1:8002"'


def check_selector(text: str) -> str:
    """`text` as label matchers without braces or trailing comma; ValueError says what is wrong.

    An empty selector (or `{}`) is allowed and means every series.
    """
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1].strip()
    pos, names = 0, []
    while pos < len(body):
        m = _MATCHER.match(body, pos)
        if m is None:
            raise ValueError(_why(body, pos))
        names.append(m.group(1))
        pos = m.end()
    if "__name__" in names:
        raise ValueError(
            "the selector may not match __name__: the metric names come from the queries"
        )
    return body.rstrip().rstrip(",").rstrip()


def _why(body: str, pos: int) -> str:
    at = f" at {body[pos:].strip()!r}" if pos else ""
    u = _UNQUOTED.match(body, pos)
    if u is not None:
        hint = f'{u.group(1)}{u.group(2)}"{u.group(3)}"'
        return f"label values must be quoted{at}: write {hint}"
    return (
        f"not a PromQL label selector{at}: expected label matchers such as "
        f"{EXAMPLE} separated by commas (operators =, !=, =~, !~)"
    )


def check_label_name(text: str) -> str:
    """A Prometheus label name, or ValueError."""
    if not _LABEL_NAME.match(text):
        raise ValueError(
            f"{text!r} is not a Prometheus label name (letters, digits and _, not first a digit)"
        )
    return text


# strings (PromQL's three quotes) and comments: their brackets do not count
_LITERAL = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|`[^`]*`|#[^\n]*')
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}


def check_query(text: str) -> str:
    """A PromQL expression whose brackets and quotes are balanced, or ValueError saying
    where not. The full grammar is Prometheus' to check (`promtool`, or the first
    query, which fails every tick until fixed); this catches the typos that are most of
    them (`sum((rate(x[1m]))` passed `validate`), without a PromQL parser here.
    """
    if not text.strip():
        raise ValueError("a query may not be blank")
    bare = _LITERAL.sub(lambda m: " " * len(m.group()), text)  # positions kept
    stray = re.search("[\"'`]", bare)
    if stray:
        raise ValueError(f"the string opened at character {stray.start() + 1} is not closed")
    stack: list[tuple[str, int]] = []
    for m in re.finditer(r"[()\[\]{}]", bare):
        c = m.group()
        if c in _OPEN:
            stack.append((c, m.start()))
        elif not stack or stack.pop()[0] != _CLOSE[c]:
            raise ValueError(f"unbalanced {c!r} at character {m.start() + 1} of the query")
    if stack:
        c, at = stack[-1]
        raise ValueError(f"{c!r} at character {at + 1} of the query is not closed")
    return text

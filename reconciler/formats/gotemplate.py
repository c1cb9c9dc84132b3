"""Go's text/template as Keptn's webhook-service used it, evaluated without surprises.

The webhook-service rendered each request with Go's `text/template` (option
`missingkey=error`, no Sprig) over the triggering event's JSON plus `env`, the
webhook's secrets from `envFrom`. Teams wrote `{{.data.project}}`, `{{.env.token}}`,
`{{.shkeptncontext}}`, `{{index .data "incident-tool"}}`, `{{if ...}}...{{else}}...{{end}}`
(Keptn's docs name these) and whatever else the Go built-ins allow, so this module parses
that language: field chains, `$`, variables, `if`/`else if`/`else`, `with`, `range`, `end`,
comments, trim markers, pipelines and the built-in functions (`and or not len index slice
eq ne lt le gt ge print println printf html js urlquery`). `define`, `template`, `block`,
`call` and Sprig functions (`toJson`, `default`, ...) were never available there and are
errors here, reported at parse time like Go does for an unknown function.

What differs from Go on purpose (docs/keptn-differences.md):
- a map or list prints as compact JSON, not Go's `map[k:v]` / `[a b]`;
- numbers compare numerically whatever their kind (Go refused `eq 1.0 1`);
- output, loop steps and nesting are bounded, so a hostile event cannot make a render slow
  or huge.

Values keep a `secret` mark (anything read through `.env`), so the caller's emitter can
mask secrets for display and escape each value for where it lands (URL, header, JSON).
Error messages name template text and positions, never a value.

May import: stdlib only.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

MAX_OUTPUT = 256 * 1024
"""Characters one render may produce; a range over a large event list stops here."""

MAX_STEPS = 100_000
"""Nodes one render may execute (each loop iteration counts its body)."""

MAX_NESTING = 32
"""Nested blocks and parentheses in one template."""

BUILTINS = frozenset(
    {
        "and",
        "or",
        "not",
        "len",
        "index",
        "slice",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "print",
        "println",
        "printf",
        "html",
        "js",
        "urlquery",
    }
)

_SPRIG_HINT = frozenset(
    {"toJson", "tojson", "default", "upper", "lower", "quote", "trim", "replace", "b64enc", "toString"}
)
_UNSUPPORTED_KEYWORDS = frozenset({"define", "template", "block", "break", "continue"})


class TemplateError(ValueError):
    """The template text is not a template we can run; `offset` is where, in characters."""

    def __init__(self, message: str, offset: int) -> None:
        self.message = message
        self.offset = offset
        super().__init__(f"{message} (at character {offset + 1})")


class RenderError(ValueError):
    """Running the template failed on this event; the message names template text, never a value."""

    def __init__(self, message: str, offset: int, action: str = "") -> None:
        self.message = message
        self.offset = offset
        self.action = action
        where = f" in {action}" if action else ""
        super().__init__(f"{message}{where} (at character {offset + 1})")


class SecretMap(dict[str, Any]):
    """A mapping whose values are secrets (the template's `.env`)."""


# --- parse tree ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """`.a.b` relative to dot (`chain == ()` is `.` itself)."""

    chain: tuple[str, ...]
    offset: int


@dataclass(frozen=True)
class Variable:
    """`$`, `$x`, `$x.a.b`."""

    name: str
    chain: tuple[str, ...]
    offset: int


@dataclass(frozen=True)
class Literal_:
    value: Any
    offset: int


@dataclass(frozen=True)
class Ident:
    """A function name as the first word of a command."""

    name: str
    offset: int


@dataclass(frozen=True)
class SubPipe:
    """`( pipeline )`, optionally followed by a field chain."""

    pipe: Pipeline
    chain: tuple[str, ...]
    offset: int


Arg = Field | Variable | Literal_ | Ident | SubPipe


@dataclass(frozen=True)
class Command:
    args: tuple[Arg, ...]
    offset: int


@dataclass(frozen=True)
class Pipeline:
    decls: tuple[str, ...]
    assign: bool
    cmds: tuple[Command, ...]
    offset: int
    source: str


@dataclass(frozen=True)
class Text:
    text: str
    offset: int


@dataclass(frozen=True)
class Action:
    """`{{ pipeline }}`: prints its value unless it only declares variables."""

    pipe: Pipeline
    offset: int
    source: str


@dataclass(frozen=True)
class Block:
    """`if` / `with` / `range`: branches of (pipeline, body); a final `else` has no pipeline."""

    kind: Literal["if", "with", "range"]
    branches: tuple[tuple[Pipeline, tuple[Node, ...]], ...]
    else_: tuple[Node, ...] | None
    offset: int
    source: str


Node = Text | Action | Block


@dataclass(frozen=True)
class Reference:
    """A path read from the template's root data: `.data.project` -> ("data", "project").

    `dynamic` marks `index .env <not a literal>`, whose key is only known when it runs.
    """

    path: tuple[str, ...]
    offset: int
    source: str
    dynamic: bool = False


@dataclass(frozen=True)
class Template:
    text: str
    nodes: tuple[Node, ...]

    def references(self) -> list[Reference]:
        """Every path read from the root (top-level dot or `$`), for static checks.

        Fields inside `with`/`range` bodies are relative to a data-derived dot and are
        checked when the template runs instead.
        """
        out: list[Reference] = []
        _collect_refs(self.nodes, True, out)
        return out

    @property
    def has_blocks(self) -> bool:
        return any(isinstance(n, Block) for n in _walk(self.nodes))

    def actions(self) -> list[Action]:
        return [n for n in _walk(self.nodes) if isinstance(n, Action)]

    def literal_text(self) -> str:
        """The text outside every action, in order (branches included)."""
        return "".join(n.text for n in _walk(self.nodes) if isinstance(n, Text))

    def render(
        self,
        data: dict[str, Any],
        emit: Callable[[Any, bool, Action], str] | None = None,
        *,
        max_output: int = MAX_OUTPUT,
    ) -> str:
        """Run the template over `data`; `emit(value, secret, action)` turns printed values into text."""
        runner = _Runner(self, emit or default_emit, max_output)
        root = _Val(data, False)
        runner.run(self.nodes, root, [("$", root)])
        return "".join(runner.out)


def default_emit(value: Any, secret: bool, action: Action) -> str:
    return go_print(value)


def _walk(nodes: Sequence[Node]) -> Iterator[Node]:
    for node in nodes:
        yield node
        if isinstance(node, Block):
            for _pipe, body in node.branches:
                yield from _walk(body)
            if node.else_ is not None:
                yield from _walk(node.else_)


def _collect_refs(nodes: Sequence[Node], root_dot: bool, out: list[Reference]) -> None:
    for node in nodes:
        if isinstance(node, Action):
            _pipe_refs(node.pipe, root_dot, out)
        elif isinstance(node, Block):
            for pipe, body in node.branches:
                _pipe_refs(pipe, root_dot, out)
                _collect_refs(body, root_dot and node.kind == "if", out)
            if node.else_ is not None:
                _collect_refs(node.else_, root_dot, out)


def action_references(action: Action) -> list[Reference]:
    """The root paths one action reads (for a caller classifying single actions)."""
    out: list[Reference] = []
    _pipe_refs(action.pipe, True, out)
    return out


def _pipe_refs(pipe: Pipeline, root_dot: bool, out: list[Reference]) -> None:
    for cmd in pipe.cmds:
        args = cmd.args
        if (
            args
            and isinstance(args[0], Ident)
            and args[0].name == "index"
            and len(args) >= 3
            and _root_path(args[1], root_dot) is not None
        ):
            base = _root_path(args[1], root_dot)
            assert base is not None
            key = args[2]
            if isinstance(key, Literal_) and isinstance(key.value, str):
                out.append(Reference((*base, key.value), args[1].offset, pipe.source))
            else:
                out.append(Reference((*base, ""), args[1].offset, pipe.source, dynamic=True))
                _arg_refs(key, root_dot, out, pipe.source)
            for extra in args[3:]:
                _arg_refs(extra, root_dot, out, pipe.source)
            continue
        for arg in args:
            _arg_refs(arg, root_dot, out, pipe.source)


def _root_path(arg: Arg, root_dot: bool) -> tuple[str, ...] | None:
    if isinstance(arg, Field) and root_dot:
        return arg.chain
    if isinstance(arg, Variable) and arg.name == "$":
        return arg.chain
    return None


def _arg_refs(arg: Arg, root_dot: bool, out: list[Reference], source: str) -> None:
    path = _root_path(arg, root_dot)
    if path is not None:
        out.append(Reference(path, arg.offset, source))
    elif isinstance(arg, SubPipe):
        _pipe_refs(arg.pipe, root_dot, out)


# --- lexing ---------------------------------------------------------------------------------------


@dataclass
class _Tok:
    kind: str  # field var ident string number bool nil pipe lparen rparen declare assign comma
    value: Any
    pos: int
    end: int


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[+-]?(0[xX][0-9a-fA-F_]+|(\d[\d_]*)?\.?\d[\d_]*([eE][+-]?\d+)?)")
_SPACE = " \t\r\n"


def action_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every `{{...}}` (comments included) in `text`, as the parser sees them.

    A caller that must split template text by something else first (a curl command line
    by its words) protects these spans, so quotes and spaces inside an action stay its own.
    """
    spans: list[tuple[int, int]] = []
    _split(text, spans)
    return spans


def _split(text: str, spans: list[tuple[int, int]] | None = None) -> list[tuple[str, str, int, bool, bool]]:
    """Pieces of a template: ("text", s, offset, -, -) and ("action", inner, offset, trimL, trimR)."""
    pieces: list[tuple[str, str, int, bool, bool]] = []
    i = 0
    n = len(text)
    while i < n:
        start = text.find("{{", i)
        if start < 0:
            pieces.append(("text", text[i:], i, False, False))
            break
        if start > i:
            pieces.append(("text", text[i:start], i, False, False))
        j = start + 2
        trim_left = j + 1 < n and text[j] == "-" and text[j + 1] in _SPACE
        if trim_left:
            j += 2
        inner_start = j
        if text.startswith("/*", j):
            close = text.find("*/", j + 2)
            if close < 0:
                raise TemplateError("unclosed comment", start)
            k = close + 2
            if text.startswith(" -}}", k):
                trim_right, k = True, k + 4
            elif text.startswith("}}", k):
                trim_right, k = False, k + 2
            else:
                raise TemplateError("comment ends before closing delimiter", start)
            pieces.append(("comment", "", start, trim_left, trim_right))
            if spans is not None:
                spans.append((start, k))
            i = k
            continue
        k = j
        while True:
            if k >= n:
                raise TemplateError("unclosed action (missing '}}')", start)
            c = text[k]
            if c == '"':
                k = _skip_quoted(text, k, '"', start)
            elif c == "`":
                close = text.find("`", k + 1)
                if close < 0:
                    raise TemplateError("unterminated raw string", k)
                k = close + 1
            elif c == "'":
                k = _skip_quoted(text, k, "'", start)
            elif text.startswith("}}", k):
                break
            else:
                k += 1
        trim_right = k >= 2 and text[k - 1] == "-" and text[k - 2] in _SPACE and k - 2 >= inner_start
        inner_end = k - 1 if trim_right else k
        pieces.append(("action", text[inner_start:inner_end], inner_start, trim_left, trim_right))
        if spans is not None:
            spans.append((start, k + 2))
        i = k + 2
    # trim markers remove the whitespace next to them
    out: list[tuple[str, str, int, bool, bool]] = []
    for idx, piece in enumerate(pieces):
        kind, value, offset, _tl, _tr = piece
        if kind == "text":
            if idx > 0 and pieces[idx - 1][0] != "text" and pieces[idx - 1][4]:
                stripped = value.lstrip(_SPACE)
                offset += len(value) - len(stripped)
                value = stripped
            if idx + 1 < len(pieces) and pieces[idx + 1][0] != "text" and pieces[idx + 1][3]:
                value = value.rstrip(_SPACE)
            if value:
                out.append((kind, value, offset, False, False))
        elif kind == "action":
            out.append(piece)
    return out


def _skip_quoted(text: str, k: int, quote: str, action_start: int) -> int:
    k += 1
    while k < len(text):
        c = text[k]
        if c == "\\":
            k += 2
            continue
        if c == "\n":
            raise TemplateError("unterminated quoted string", k)
        if c == quote:
            return k + 1
        k += 1
    raise TemplateError("unterminated quoted string", action_start)


def _lex(src: str, base: int) -> list[_Tok]:
    toks: list[_Tok] = []
    i = 0
    n = len(src)
    while i < n:
        c = src[i]
        pos = base + i
        if c in _SPACE:
            i += 1
            continue
        if c == "|":
            toks.append(_Tok("pipe", "|", pos, pos + 1))
            i += 1
        elif c == "(":
            toks.append(_Tok("lparen", "(", pos, pos + 1))
            i += 1
        elif c == ")":
            toks.append(_Tok("rparen", ")", pos, pos + 1))
            i += 1
        elif c == ",":
            toks.append(_Tok("comma", ",", pos, pos + 1))
            i += 1
        elif src.startswith(":=", i):
            toks.append(_Tok("declare", ":=", pos, pos + 2))
            i += 2
        elif c == "=":
            toks.append(_Tok("assign", "=", pos, pos + 1))
            i += 1
        elif c == '"':
            j = _skip_quoted(src, i, '"', i)
            toks.append(_Tok("string", _unquote(src[i:j], pos), pos, base + j))
            i = j
        elif c == "`":
            j = src.find("`", i + 1)
            if j < 0:
                raise TemplateError("unterminated raw string", pos)
            toks.append(_Tok("string", src[i + 1 : j], pos, base + j + 1))
            i = j + 1
        elif c == "'":
            raise TemplateError("character constants are not supported; use a string", pos)
        elif c == "." and (i + 1 >= n or not src[i + 1].isdigit()):
            names, j = _chain(src, i, base)
            toks.append(_Tok("field", names, pos, base + j))
            i = j
        elif c == "$":
            m = _IDENT.match(src, i + 1)
            j = m.end() if m else i + 1
            name = src[i:j]
            var_chain: tuple[str, ...] = ()
            if j < n and src[j] == "." and j + 1 < n and (src[j + 1].isalpha() or src[j + 1] == "_"):
                var_chain, j = _chain(src, j, base)
            toks.append(_Tok("var", (name, var_chain), pos, base + j))
            i = j
        elif c.isdigit() or (c in "+-." and i + 1 < n and src[i + 1].isdigit()):
            m = _NUMBER.match(src, i)
            if not m or not m.group(0):
                raise TemplateError("bad number syntax", pos)
            j = m.end()
            if j < n and (src[j].isalnum() or src[j] == "_"):
                raise TemplateError(f"bad number syntax: {src[i : j + 1]!r}", pos)
            toks.append(_Tok("number", _number(m.group(0), pos), pos, base + j))
            i = j
        elif c.isalpha() or c == "_":
            m = _IDENT.match(src, i)
            assert m is not None
            word = m.group(0)
            j = m.end()
            if j < n and src[j] == "." and j + 1 < n and (src[j + 1].isalpha() or src[j + 1] == "_"):
                raise TemplateError(f"unexpected {word}{src[j]} (a field needs a leading '.')", pos)
            if word in ("true", "false"):
                toks.append(_Tok("bool", word == "true", pos, base + j))
            elif word == "nil":
                toks.append(_Tok("nil", None, pos, base + j))
            else:
                toks.append(_Tok("ident", word, pos, base + j))
            i = j
        else:
            raise TemplateError(f"unexpected character {c!r} in action", pos)
    return toks


def _chain(src: str, i: int, base: int) -> tuple[tuple[str, ...], int]:
    """`.a.b.c` starting at `src[i]`; `base` is the offset of `src[0]` in the template."""
    names: list[str] = []
    n = len(src)
    hint = " (a key with '-' or other symbols needs index, e.g. {{index .data \"my-key\"}})"
    while i < n and src[i] == ".":
        m = _IDENT.match(src, i + 1)
        if not m:
            if names or (i + 1 < n and src[i + 1] not in _SPACE + "|)"):
                bad = src[i + 1] if i + 1 < n else "end of action"
                raise TemplateError(f"bad character {bad!r} after '.'{hint}", base + i)
            return tuple(names), i + 1
        names.append(m.group(0))
        i = m.end()
    if i < n and src[i] not in _SPACE + "|)":
        raise TemplateError(f"bad character {src[i]!r} in field name{hint}", base + i)
    return tuple(names), i


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b"}
_ESCAPES.update({"f": "\f", "v": "\v"})


def _unquote(quoted: str, pos: int) -> str:
    body = quoted[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(body):
            raise TemplateError("bad escape at end of string", pos)
        e = body[i + 1]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or not all(ch in "0123456789abcdefABCDEF" for ch in digits):
                raise TemplateError(f"bad \\{e} escape in string", pos)
            out.append(chr(int(digits, 16)))
            i += 2 + width
        elif e in "01234567":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or not all(ch in "01234567" for ch in digits):
                raise TemplateError("bad octal escape in string", pos)
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise TemplateError(f"unknown escape \\{e} in string", pos)
    return "".join(out)


def _number(text: str, pos: int) -> int | float:
    clean = text.replace("_", "")
    try:
        if clean.lower().lstrip("+-").startswith("0x"):
            return int(clean, 16)
        if any(ch in clean for ch in ".eE"):
            return float(clean)
        return int(clean, 10)
    except ValueError:
        raise TemplateError(f"bad number syntax: {text!r}", pos) from None


# --- parsing ---------------------------------------------------------------------------------------


def parse(text: str) -> Template:
    """Parse a template; raise `TemplateError` with the offset of the first problem."""
    pieces = _split(text)
    root: list[Node] = []
    # stack of open blocks: (kind, offset, source, branches, current body, current pipe, else body)
    stack: list[dict[str, Any]] = []

    def body() -> list[Node]:
        if not stack:
            return root
        top = stack[-1]
        nodes: list[Node] = top["else"] if top["else"] is not None else top["body"]
        return nodes

    for kind, value, offset, _tl, _tr in pieces:
        if kind == "text":
            body().append(Text(value, offset))
            continue
        source = "{{" + value + "}}"
        toks = _lex(value, offset)
        if not toks:
            raise TemplateError("missing value for command", offset)
        head = toks[0]
        word = head.value if head.kind == "ident" else None
        if word in _UNSUPPORTED_KEYWORDS:
            raise TemplateError(
                f"{{{{{word}}}}} is not supported (Keptn's webhook requests were single templates)", head.pos
            )
        if word in ("if", "with", "range"):
            if len(stack) >= MAX_NESTING:
                raise TemplateError(f"blocks nested deeper than {MAX_NESTING}", head.pos)
            pipe = _Parser(
                toks[1:], source, head.end, allow_decls=word != "if", range_=word == "range"
            ).pipe()
            stack.append(
                {"kind": word, "offset": head.pos, "source": source, "branches": [], "pipe": pipe, "body": []}
            )
            stack[-1]["else"] = None
            continue
        if word == "else":
            if not stack:
                raise TemplateError("unexpected {{else}}", head.pos)
            top = stack[-1]
            if top["else"] is not None:
                raise TemplateError("{{else}} after the final {{else}}", head.pos)
            if len(toks) > 1:
                nxt = toks[1]
                if nxt.kind == "ident" and nxt.value in ("if", "with") and nxt.value == top["kind"]:
                    top["branches"].append((top["pipe"], tuple(top["body"])))
                    top["pipe"] = _Parser(toks[2:], source, nxt.end, allow_decls=nxt.value == "with").pipe()
                    top["body"] = []
                    continue
                if nxt.kind == "ident" and nxt.value in ("if", "with"):
                    # `{{else if}}` in a with/range (or `{{else with}}` in an if): Go reads it as
                    # `{{else}}{{if ...}}` whose `{{end}}` is the enclosing block's
                    top["else"] = []
                    pipe = _Parser(toks[2:], source, nxt.end, allow_decls=nxt.value == "with").pipe()
                    stack.append(
                        {
                            "kind": nxt.value,
                            "offset": nxt.pos,
                            "source": source,
                            "branches": [],
                            "pipe": pipe,
                            "body": [],
                            "else": None,
                            "chained": True,
                        }
                    )
                    continue
                raise TemplateError("unexpected words after {{else}}", nxt.pos)
            top["else"] = []
            continue
        if word == "end":
            if len(toks) > 1:
                raise TemplateError("unexpected words after {{end}}", toks[1].pos)
            if not stack:
                raise TemplateError("unexpected {{end}}", head.pos)
            while True:
                top = stack.pop()
                branches = (*top["branches"], (top["pipe"], tuple(top["body"])))
                else_ = tuple(top["else"]) if top["else"] is not None else None
                body().append(Block(top["kind"], tuple(branches), else_, top["offset"], top["source"]))
                if not top.get("chained"):
                    break
            continue
        pipe = _Parser(toks, source, offset, allow_decls=True).pipe()
        body().append(Action(pipe, offset, source))
    if stack:
        top = stack[-1]
        raise TemplateError(f"unclosed {{{{{top['kind']}}}}} (missing {{{{end}}}})", top["offset"])
    return Template(text, tuple(root))


class _Parser:
    def __init__(
        self, toks: list[_Tok], source: str, offset: int, *, allow_decls: bool, range_: bool = False
    ) -> None:
        self.toks = toks
        self.i = 0
        self.source = source
        self.offset = offset
        self.allow_decls = allow_decls
        self.range_ = range_
        self.depth = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def pipe(self, *, inner: bool = False) -> Pipeline:
        first = self.peek()
        start = first.pos if first is not None else self.offset
        decls: list[str] = []
        assign = False
        # declarations: $x := / $i, $x := / $x =
        j = self.i
        names: list[str] = []
        while j < len(self.toks) and self.toks[j].kind == "var" and not self.toks[j].value[1]:
            names.append(self.toks[j].value[0])
            j += 1
            if j < len(self.toks) and self.toks[j].kind == "comma":
                j += 1
                continue
            break
        if names and j < len(self.toks) and self.toks[j].kind in ("declare", "assign"):
            if inner or not self.allow_decls:
                raise TemplateError("variables cannot be declared here", self.toks[self.i].pos)
            if len(names) > (2 if self.range_ else 1):
                raise TemplateError("too many declarations", self.toks[self.i].pos)
            assign = self.toks[j].kind == "assign"
            decls = names
            self.i = j + 1
        cmds: list[Command] = []
        while True:
            cmds.append(self.command())
            tok = self.peek()
            if tok is None or (inner and tok.kind == "rparen"):
                break
            if tok.kind != "pipe":
                raise TemplateError(f"unexpected {tok.value!r} in command", tok.pos)
            self.i += 1
        if not inner and self.peek() is not None:
            tok = self.peek()
            assert tok is not None
            raise TemplateError(f"unexpected {tok.value!r}", tok.pos)
        for k, cmd in enumerate(cmds):
            if k > 0 and not isinstance(cmd.args[0], Ident):
                raise TemplateError("can't give argument to non-function", cmd.offset)
        return Pipeline(tuple(decls), assign, tuple(cmds), start, self.source)

    def command(self) -> Command:
        args: list[Arg] = []
        tok = self.peek()
        start = tok.pos if tok else self.offset
        while True:
            tok = self.peek()
            if tok is None or tok.kind in ("pipe", "rparen"):
                break
            args.append(self.operand())
        if not args:
            raise TemplateError("missing value for command", start)
        if not isinstance(args[0], Ident) and len(args) > 1:
            raise TemplateError("can't give argument to non-function", args[1].offset)
        return Command(tuple(args), start)

    def operand(self) -> Arg:
        tok = self.peek()
        assert tok is not None
        self.i += 1
        if tok.kind == "field":
            return Field(tok.value, tok.pos)
        if tok.kind == "var":
            name, chain = tok.value
            return Variable(name, chain, tok.pos)
        if tok.kind in ("string", "number", "bool", "nil"):
            return Literal_(tok.value, tok.pos)
        if tok.kind == "ident":
            name = tok.value
            if name in ("if", "else", "end", "range", "with") or name in _UNSUPPORTED_KEYWORDS:
                raise TemplateError(f"unexpected {name!r} in command", tok.pos)
            if name == "call":
                raise TemplateError('function "call" is not supported', tok.pos)
            if name not in BUILTINS:
                hint = (
                    " (Keptn's webhook-service had Go's built-in template functions only, no Sprig)"
                    if name in _SPRIG_HINT
                    else ""
                )
                raise TemplateError(f'function "{name}" not defined{hint}', tok.pos)
            return Ident(name, tok.pos)
        if tok.kind == "lparen":
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise TemplateError(f"parentheses nested deeper than {MAX_NESTING}", tok.pos)
            pipe = self.pipe(inner=True)
            close = self.peek()
            if close is None or close.kind != "rparen":
                raise TemplateError("unclosed left paren", tok.pos)
            self.i += 1
            self.depth -= 1
            after: tuple[str, ...] = ()
            nxt = self.peek()
            if nxt is not None and nxt.kind == "field" and nxt.pos == close.end:
                after = nxt.value
                self.i += 1
            return SubPipe(pipe, after, tok.pos)
        raise TemplateError(f"unexpected {tok.value!r} in operand", tok.pos)


# --- evaluation ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Val:
    value: Any
    secret: bool = False


@dataclass
class _Runner:
    template: Template
    emit: Callable[[Any, bool, Action], str]
    max_output: int
    out: list[str] = field(default_factory=list)
    size: int = 0
    steps: int = 0

    def write(self, text: str, offset: int) -> None:
        self.size += len(text)
        if self.size > self.max_output:
            raise RenderError(f"output is longer than {self.max_output} characters", offset)
        self.out.append(text)

    def step(self, offset: int) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise RenderError(f"template ran more than {MAX_STEPS} steps", offset)

    def run(self, nodes: Sequence[Node], dot: _Val, scope: list[tuple[str, _Val]]) -> None:
        mark = len(scope)
        for node in nodes:
            self.step(node.offset)
            if isinstance(node, Text):
                self.write(node.text, node.offset)
            elif isinstance(node, Action):
                val = self.pipeline(node.pipe, dot, scope)
                if node.pipe.decls:
                    self.bind(node.pipe, [val], scope)
                else:
                    secret = val.secret or has_secret(val.value)
                    self.write(self.emit(val.value, secret, node), node.offset)
            else:
                self.block(node, dot, scope)
        del scope[mark:]

    def bind(self, pipe: Pipeline, values: list[_Val], scope: list[tuple[str, _Val]]) -> None:
        if pipe.assign:
            name = pipe.decls[0]
            for k in range(len(scope) - 1, -1, -1):
                if scope[k][0] == name:
                    scope[k] = (name, values[0])
                    return
            raise RenderError(f"undefined variable: {name}", pipe.offset, pipe.source)
        for name, value in zip(pipe.decls, values, strict=False):
            scope.append((name, value))

    def block(self, node: Block, dot: _Val, scope: list[tuple[str, _Val]]) -> None:
        if node.kind == "range":
            pipe, body = node.branches[0]
            val = self.pipeline(pipe, dot, scope)
            items: list[tuple[_Val, _Val]]
            v = val.value
            if isinstance(v, dict):
                items = [
                    (_Val(k, False), _Val(v[k], val.secret or isinstance(v, SecretMap))) for k in sorted(v)
                ]
            elif isinstance(v, list):
                items = [(_Val(i, False), _Val(x, val.secret)) for i, x in enumerate(v)]
            elif isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                items = [(_Val(i, False), _Val(i, False)) for i in range(min(v, MAX_STEPS + 1))]
            elif v is None:
                items = []
            else:
                raise RenderError(f"range can't iterate over {go_type(v)}", pipe.offset, pipe.source)
            if not items:
                if node.else_ is not None:
                    self.run(node.else_, dot, scope)
                return
            for key, elem in items:
                mark = len(scope)
                if len(pipe.decls) == 1:
                    scope.append((pipe.decls[0], elem))
                elif len(pipe.decls) == 2:
                    scope.append((pipe.decls[0], key))
                    scope.append((pipe.decls[1], elem))
                self.run(body, elem, scope)
                del scope[mark:]
            return
        for pipe, body in node.branches:
            val = self.pipeline(pipe, dot, scope)
            if truth(val.value):
                mark = len(scope)
                if pipe.decls:
                    self.bind(pipe, [val], scope)
                self.run(body, val if node.kind == "with" else dot, scope)
                del scope[mark:]
                return
        if node.else_ is not None:
            self.run(node.else_, dot, scope)

    def pipeline(self, pipe: Pipeline, dot: _Val, scope: list[tuple[str, _Val]]) -> _Val:
        value: _Val | None = None
        for cmd in pipe.cmds:
            value = self.command(cmd, dot, scope, value, pipe)
        assert value is not None
        return value

    def command(
        self, cmd: Command, dot: _Val, scope: list[tuple[str, _Val]], piped: _Val | None, pipe: Pipeline
    ) -> _Val:
        head = cmd.args[0]
        if isinstance(head, Ident):
            return self.call(head, cmd.args[1:], dot, scope, piped, pipe)
        if piped is not None:  # the parser refuses this; kept for safety
            raise RenderError("can't give argument to non-function", cmd.offset, pipe.source)
        return self.arg(head, dot, scope, pipe)

    def arg(self, arg: Arg, dot: _Val, scope: list[tuple[str, _Val]], pipe: Pipeline) -> _Val:
        self.step(arg.offset)
        if isinstance(arg, Field):
            return self.chain(dot, arg.chain, arg.offset, pipe)
        if isinstance(arg, Variable):
            for name, value in reversed(scope):
                if name == arg.name:
                    return self.chain(value, arg.chain, arg.offset, pipe)
            raise RenderError(f"undefined variable: {arg.name}", arg.offset, pipe.source)
        if isinstance(arg, Literal_):
            return _Val(arg.value, False)
        if isinstance(arg, SubPipe):
            return self.chain(self.pipeline(arg.pipe, dot, scope), arg.chain, arg.offset, pipe)
        raise RenderError(f"can't use function {arg.name!r} as a value", arg.offset, pipe.source)

    def chain(self, recv: _Val, names: tuple[str, ...], offset: int, pipe: Pipeline) -> _Val:
        for name in names:
            v = recv.value
            if isinstance(v, dict):
                if name not in v:
                    raise RenderError(f'map has no entry for key "{name}"', offset, pipe.source)
                recv = _Val(v[name], recv.secret or isinstance(v, SecretMap))
            elif v is None:
                raise RenderError(f"nil pointer evaluating interface {{}}.{name}", offset, pipe.source)
            else:
                raise RenderError(f"can't evaluate field {name} in type {go_type(v)}", offset, pipe.source)
        return recv

    def call(
        self,
        fn: Ident,
        raw_args: Sequence[Arg],
        dot: _Val,
        scope: list[tuple[str, _Val]],
        piped: _Val | None,
        pipe: Pipeline,
    ) -> _Val:
        name = fn.name
        if name in ("and", "or"):
            count = len(raw_args) + (1 if piped is not None else 0)
            if count < 1:
                raise RenderError(
                    f"wrong number of args for {name}: want at least 1 got 0", fn.offset, pipe.source
                )
            result: _Val | None = None
            for raw in raw_args:
                result = self.arg(raw, dot, scope, pipe)
                if truth(result.value) == (name == "or"):
                    return result
            if piped is not None:
                result = piped
            assert result is not None
            return result
        args = [self.arg(a, dot, scope, pipe) for a in raw_args]
        if piped is not None:
            args.append(piped)
        secret = any(a.secret or has_secret(a.value) for a in args)
        try:
            value = _FUNCS[name](args, fn.offset)
        except _FuncError as exc:
            raise RenderError(f"error calling {name}: {exc}", fn.offset, pipe.source) from None
        if isinstance(value, _Val):
            return value
        return _Val(value, secret)


class _FuncError(Exception):
    pass


def _want(name: str, args: list[_Val], n: int, *, at_least: bool = False) -> None:
    if (len(args) < n) if at_least else (len(args) != n):
        want = f"at least {n}" if at_least else str(n)
        raise _FuncError(f"wrong number of args for {name}: want {want} got {len(args)}")


def _fn_not(args: list[_Val], offset: int) -> Any:
    _want("not", args, 1)
    return not truth(args[0].value)


def _fn_len(args: list[_Val], offset: int) -> Any:
    _want("len", args, 1)
    v = args[0].value
    if isinstance(v, str):
        return len(v.encode("utf-8"))
    if isinstance(v, list | dict):
        return len(v)
    raise _FuncError(f"len of type {go_type(v)}")


def _fn_index(args: list[_Val], offset: int) -> Any:
    _want("index", args, 1, at_least=True)
    item = args[0]
    for key in args[1:]:
        v = item.value
        k = key.value
        if isinstance(v, dict):
            if not isinstance(k, str):
                raise _FuncError(f"value has type {go_type(k)}; should be string")
            item = _Val(v.get(k), item.secret or key.secret or isinstance(v, SecretMap))
        elif isinstance(v, list | str):
            if not isinstance(k, int) or isinstance(k, bool):
                raise _FuncError(f"cannot index slice/array with type {go_type(k)}")
            size = len(v) if isinstance(v, list) else len(v.encode("utf-8"))
            if k < 0 or k >= size:
                raise _FuncError(f"index out of range: {k}")
            item = _Val(v[k] if isinstance(v, list) else v.encode("utf-8")[k], item.secret)
        elif v is None:
            raise _FuncError("index of untyped nil")
        else:
            raise _FuncError(f"can't index item of type {go_type(v)}")
    return item


def _fn_slice(args: list[_Val], offset: int) -> Any:
    _want("slice", args, 1, at_least=True)
    v = args[0].value
    idx = [a.value for a in args[1:]]
    if len(idx) > 2 or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
        raise _FuncError("slice takes at most two integer indexes")
    if not isinstance(v, str | list):
        raise _FuncError(f"can't slice item of type {go_type(v)}")
    lo = idx[0] if idx else 0
    hi = idx[1] if len(idx) > 1 else len(v)
    if not 0 <= lo <= hi <= len(v):
        raise _FuncError(f"index out of range: {lo}:{hi}")
    return _Val(v[lo:hi], args[0].secret)


def _comparable(a: Any, b: Any) -> tuple[Any, Any]:
    if _is_number(a) and _is_number(b):
        return a, b
    if type(a) is type(b) and isinstance(a, str | bool):
        return a, b
    if a is None or b is None:
        return a, b
    if isinstance(a, list | dict) or isinstance(b, list | dict):
        raise _FuncError("non-comparable type")
    raise _FuncError("incompatible types for comparison")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _fn_eq(args: list[_Val], offset: int) -> Any:
    _want("eq", args, 2, at_least=True)
    first = args[0].value
    for other in args[1:]:
        a, b = _comparable(first, other.value)
        if a == b:
            return True
    return False


def _fn_ne(args: list[_Val], offset: int) -> Any:
    _want("ne", args, 2)
    a, b = _comparable(args[0].value, args[1].value)
    return a != b


def _ordered(name: str, args: list[_Val]) -> tuple[Any, Any]:
    _want(name, args, 2)
    a, b = args[0].value, args[1].value
    if (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str)):
        return a, b
    raise _FuncError("invalid type for comparison")


def _fn_lt(args: list[_Val], offset: int) -> Any:
    a, b = _ordered("lt", args)
    return a < b


def _fn_le(args: list[_Val], offset: int) -> Any:
    a, b = _ordered("le", args)
    return a <= b


def _fn_gt(args: list[_Val], offset: int) -> Any:
    a, b = _ordered("gt", args)
    return a > b


def _fn_ge(args: list[_Val], offset: int) -> Any:
    a, b = _ordered("ge", args)
    return a >= b


def _sprint(values: list[Any]) -> str:
    """Go's fmt.Sprint: a space between operands when neither is a string."""
    out: list[str] = []
    for i, v in enumerate(values):
        if i > 0 and not isinstance(v, str) and not isinstance(values[i - 1], str):
            out.append(" ")
        out.append(go_print(v, nil="<nil>"))
    return "".join(out)


def _fn_print(args: list[_Val], offset: int) -> Any:
    return _sprint([a.value for a in args])


def _fn_println(args: list[_Val], offset: int) -> Any:
    return " ".join(go_print(a.value, nil="<nil>") for a in args) + "\n"


_VERB = re.compile(r"%([-+ 0#]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])")


def _fn_printf(args: list[_Val], offset: int) -> Any:
    _want("printf", args, 1, at_least=True)
    fmt = args[0].value
    if not isinstance(fmt, str):
        raise _FuncError("printf's first argument must be a string")
    values = [a.value for a in args[1:]]
    out: list[str] = []
    pos = 0
    k = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, precision, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        if k >= len(values):
            out.append(f"%!{verb}(MISSING)")
            continue
        v = values[k]
        k += 1
        out.append(_format_verb(v, flags, width, precision, verb))
    out.append(fmt[pos:])
    if k < len(values):
        out.append("%!(EXTRA " + ", ".join(go_type(v) + "=" + go_print(v) for v in values[k:]) + ")")
    return "".join(out)


def _format_verb(v: Any, flags: str, width: str | None, precision: str | None, verb: str) -> str:
    align = "<" if "-" in flags else ">"
    fill = "0" if "0" in flags and "-" not in flags else " "
    sign = "+" if "+" in flags else ""
    w = width or ""
    if verb in ("v", "s"):
        text = go_print(v, nil="<nil>")
        if precision is not None and verb == "s":
            text = text[: int(precision)]
        return f"{text:{align}{w}}" if w else text
    if verb == "q":
        return json.dumps(go_print(v) if not isinstance(v, str) else v, ensure_ascii=False)
    if verb == "t" and isinstance(v, bool):
        return "true" if v else "false"
    if verb == "d" and isinstance(v, int) and not isinstance(v, bool):
        return format(v, f"{fill}{align if fill == ' ' else '='}{sign}{w}d")
    if verb in ("d",) and isinstance(v, float) and v.is_integer():
        return format(int(v), f"{fill}{align if fill == ' ' else '='}{sign}{w}d")
    if verb in ("f", "F", "e", "g") and _is_number(v):
        p = f".{precision}" if precision is not None else (".6" if verb != "g" else "")
        spec = f"{fill}{align if fill == ' ' else '='}{sign}{w}{p}{verb.lower()}"
        return format(float(v), spec)
    if verb in ("x", "X") and isinstance(v, int) and not isinstance(v, bool):
        return format(v, verb)
    return f"%!{verb}({go_type(v)}={go_print(v)})"


def _escaper_arg(args: list[_Val]) -> str:
    if len(args) == 1 and isinstance(args[0].value, str):
        return str(args[0].value)
    return _sprint([a.value for a in args])


def _fn_html(args: list[_Val], offset: int) -> Any:
    text = _escaper_arg(args)
    table = {"\x00": "\ufffd", '"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;"}
    return "".join(table.get(c, c) for c in text)


def _fn_js(args: list[_Val], offset: int) -> Any:
    text = _escaper_arg(args)
    out: list[str] = []
    for c in text:
        if c in "\\'\"":
            out.append("\\" + c)
        elif c in "<>&=" or ord(c) < 0x20 or not c.isprintable():
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return "".join(out)


def _fn_urlquery(args: list[_Val], offset: int) -> Any:
    return urllib.parse.quote_plus(_escaper_arg(args), safe="")


_FUNCS: dict[str, Callable[[list[_Val], int], Any]] = {
    "not": _fn_not,
    "len": _fn_len,
    "index": _fn_index,
    "slice": _fn_slice,
    "eq": _fn_eq,
    "ne": _fn_ne,
    "lt": _fn_lt,
    "le": _fn_le,
    "gt": _fn_gt,
    "ge": _fn_ge,
    "print": _fn_print,
    "println": _fn_println,
    "printf": _fn_printf,
    "html": _fn_html,
    "js": _fn_js,
    "urlquery": _fn_urlquery,
}


# --- values -----------------------------------------------------------------------------------------------


def has_secret(value: Any) -> bool:
    """Whether a printed map or list carries a secret somewhere inside (`{{.}}` holds `.env`)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, SecretMap):
            return True
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def truth(value: Any) -> bool:
    """Go's template truth: false, 0, nil and empty strings, lists and maps are false."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def go_type(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return type(value).__name__


def go_print(value: Any, *, nil: str = "<no value>") -> str:
    """How a value prints: strings as they are, numbers like Go's %v, maps and lists as JSON."""
    if value is None:
        return nil
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def go_float(value: float) -> str:
    """Go's %v of a float64: shortest digits, exponent form below 1e-4 and from 1e21."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    d = Decimal(repr(value))
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    ds = "".join(str(x) for x in digits).rstrip("0") or "0"
    exponent += len("".join(str(x) for x in digits)) - len(ds)
    sci = len(ds) - 1 + exponent
    prefix = "-" if sign else ""
    if sci < -4 or sci >= 21:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{prefix}{mant}e{'+' if sci >= 0 else '-'}{abs(sci):02d}"
    if exponent >= 0:
        return prefix + ds + "0" * exponent
    point = len(ds) + exponent
    if point > 0:
        return prefix + ds[:point] + "." + ds[point:]
    return prefix + "0." + "0" * (-point) + ds


# --- JSON context -------------------------------------------------------------------------------------------

JsonContext = Literal["string", "bare"]


def json_contexts(template: Template) -> dict[int, JsonContext]:
    """Whether each action sits inside a JSON string literal or between JSON tokens.

    Tracked over the literal text in order, through every branch; each branch (and a
    range body) must leave the quotes as it found them, otherwise where a value lands
    would depend on the event.
    """
    out: dict[int, JsonContext] = {}
    end = _json_walk(template.nodes, "bare", out)
    if end == "esc":
        raise TemplateError("payload ends inside a JSON escape", len(template.text))
    return out


def _json_walk(nodes: Sequence[Node], state: str, out: dict[int, JsonContext]) -> str:
    for node in nodes:
        if isinstance(node, Text):
            state = _json_scan(node.text, state)
        elif isinstance(node, Action):
            if node.pipe.decls:
                continue
            if state == "esc":
                raise TemplateError(
                    "a template action directly after a backslash in a JSON string", node.offset
                )
            out[node.offset] = "string" if state == "string" else "bare"
        else:
            ends = set()
            for _pipe, body in node.branches:
                ends.add(_json_walk(body, state, out))
            ends.add(_json_walk(node.else_, state, out) if node.else_ is not None else state)
            if node.kind == "range" and len(ends) == 1 and state not in ends:
                ends.add(state)
            if len(ends) != 1:
                raise TemplateError(
                    f"the JSON quotes inside this {{{{{node.kind}}}}} do not balance: each branch must "
                    "open and close its strings",
                    node.offset,
                )
            state = ends.pop()
    return state


def _json_scan(text: str, state: str) -> str:
    for c in text:
        if state == "bare":
            if c == '"':
                state = "string"
        elif state == "string":
            if c == "\\":
                state = "esc"
            elif c == '"':
                state = "bare"
        else:
            state = "string"
    return state

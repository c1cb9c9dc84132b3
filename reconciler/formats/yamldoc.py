"""Hostile-input-proof YAML loading that remembers where every value came from.

Upstream files are written by people and reviewed in pull requests, but they are
still untrusted input: an alias bomb, a 50 MB file, binary garbage or a duplicate
key must each become one clear `Problem` within a second, never a hang, a crash or
a silently dropped value. PyYAML's composer gives us the node graph with marks
(aliases stay shared references there, so nothing is expanded yet); we build plain
Python values ourselves, counting every node we materialise, and keep a map from
field path to (line, column) so pydantic errors can point at the exact spot.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from reconciler.formats.problems import ConfigError, Problem, field_path

MAX_FILE_BYTES = 256 * 1024
"""Largest config file we parse. Real shipyards and job configs are a few KiB; the
limit keeps the worst case of a hostile but valid file well under a second."""

MAX_TOKENS = 150_000

MAX_NODES = 200_000
"""Materialised nodes per document, aliases counted each time they are used."""

MAX_DEPTH = 64

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

try:  # the libyaml scanner is ~10x faster and keeps marks
    _Loader: type[Any] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - wheels ship libyaml
    _Loader = yaml.SafeLoader


@dataclass
class YamlDoc:
    """A parsed document: the plain value and where each field path starts."""

    file: str
    value: Any
    positions: dict[Loc, tuple[int, int]] = field(default_factory=dict)

    def position(self, loc: Loc) -> tuple[int | None, int | None]:
        """Line/column of the deepest known prefix of `loc` (a missing field points at its parent)."""
        for n in range(len(loc), -1, -1):
            pos = self.positions.get(tuple(loc[:n]))
            if pos is not None:
                return pos
        return None, None

    def problem(self, loc: Loc, message: str) -> Problem:
        line, col = self.position(loc)
        return Problem(file=self.file, line=line, column=col, field=field_path(loc) or None, message=message)


_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.count = 0
        self.positions: dict[Loc, tuple[int, int]] = {}
        self.scalars = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node, message: str, loc: Loc = ()) -> ConfigError:
        return ConfigError(
            [
                Problem(
                    file=self.file,
                    line=node.start_mark.line + 1,
                    column=node.start_mark.column + 1,
                    field=field_path(loc) or None,
                    message=message,
                )
            ]
        )

    def build(self, node: yaml.Node, loc: Loc, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.fail(
                node,
                f"document expands to more than {MAX_NODES} values (YAML aliases used as a bomb?); "
                "expected a plain configuration file",
                loc,
            )
        if depth > MAX_DEPTH:
            raise self.fail(
                node, f"nesting deeper than {MAX_DEPTH} levels; expected a plain configuration file", loc
            )
        if loc not in self.positions:
            self.positions[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in _PLAIN_TAGS:
            raise self.fail(
                node, f"unsupported YAML tag {node.tag!r}; expected plain mappings and lists", loc
            )
        if isinstance(node, yaml.MappingNode):
            self.scalars.flatten_mapping(node)  # resolves `<<` merge keys
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.build(key_node, loc, depth + 1)
                if isinstance(key, list | dict):
                    raise self.fail(key_node, "a mapping key must be a plain value", loc)
                if key in out:
                    raise self.fail(
                        key_node, f"duplicate key {key!r}; each key may appear once", (*loc, str(key))
                    )
                key_loc = (*loc, key if isinstance(key, str) else str(key))
                self.positions[key_loc] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1)
                out[key] = self.build(value_node, key_loc, depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*loc, i), depth + 1) for i, item in enumerate(node.value)]
        try:
            return self.scalars.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self.fail(node, f"invalid value: {exc}", loc) from None
        except (ValueError, OverflowError) as exc:
            raise self.fail(node, f"invalid value: {exc}", loc) from None


def _decode(data: bytes | str, file: str) -> str:
    if isinstance(data, bytes):
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(
                [
                    Problem(
                        file=file,
                        message=f"file is {len(data)} bytes; expected at most {MAX_FILE_BYTES} bytes",
                    )
                ]
            )
        if b"\x00" in data:
            raise ConfigError(
                [Problem(file=file, message="file contains NUL bytes; expected UTF-8 YAML text")]
            )
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                [
                    Problem(
                        file=file, message=f"file is not UTF-8 text (byte {exc.start}); expected UTF-8 YAML"
                    )
                ]
            ) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            [Problem(file=file, message=f"file is {len(data)} characters; expected at most {MAX_FILE_BYTES}")]
        )
    try:
        data.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(
            [
                Problem(
                    file=file,
                    message=f"text is not valid Unicode (position {exc.start}); expected UTF-8 YAML",
                )
            ]
        ) from None
    if "\x00" in data:
        raise ConfigError(
            [Problem(file=file, message="file contains NUL characters; expected UTF-8 YAML text")]
        )
    return data


def load_yaml(data: bytes | str, file: str) -> YamlDoc:
    """Parse one YAML document; raise `ConfigError` with a located problem on anything odd."""
    text = _decode(data, file)
    try:
        has_aliases = _check_shape(text, file)
        node = yaml.compose(text, Loader=_Loader)
    except yaml.composer.ComposerError as exc:
        raise _mark_error(file, exc, "expected a single YAML document") from None
    except yaml.MarkedYAMLError as exc:
        hint = ""
        problem = str(exc.problem or "")
        mark = exc.problem_mark
        at_tab = mark is not None and 0 <= mark.index < len(text) and text[mark.index] == "\t"
        if at_tab or "tab" in problem:
            hint = " (a tab cannot indent YAML; use spaces)"
        raise _mark_error(file, exc, f"YAML syntax error: {problem or exc}{hint}") from None
    except yaml.reader.ReaderError as exc:  # a control character: located, the text stays out of the message
        raise _reader_error(file, text, exc) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file=file, message=f"YAML error: {exc}")]) from None
    if node is None:
        return YamlDoc(file=file, value=None)
    if has_aliases:
        _check_expansion(node, file)
    builder = _Builder(file)
    value = builder.build(node, (), 0)
    return YamlDoc(file=file, value=value, positions=builder.positions)


_OPEN = (
    yaml.BlockMappingStartToken,
    yaml.BlockSequenceStartToken,
    yaml.FlowSequenceStartToken,
    yaml.FlowMappingStartToken,
)
_CLOSE = (yaml.BlockEndToken, yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken)


def _check_shape(text: str, file: str) -> bool:
    """Bound nesting and size with the (iterative) scanner before composing; tell whether aliases occur.

    libyaml's composer recurses per nesting level and crashes the interpreter on a
    file of a hundred thousand `[`; the scanner does not. Without aliases the token
    bound already bounds the number of values, so the expansion check can be skipped.

    The scanner holds tokens back while they may still turn out to be a mapping key, so
    in a run of `[` our count sees none of them until the run ends; a scanner with a
    nesting limit of its own (libyaml in PyYAML 6.0.4 stops at 1000 flow levels) fails
    first, in its own words and at its own depth. The text before its failure point
    holds all the nesting it saw, so scanning that prefix again releases those tokens and
    our located "nesting deeper than" wins, whatever the library's limit or wording.
    """
    if _plainly_small(text):
        return False
    try:
        return _scan_shape(text, file)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        if mark is not None and 0 < mark.index <= len(text):
            # raises ours if that part already nests too deep; a prefix cut mid-token fails in
            # YAML's terms, and then the original error stands
            with contextlib.suppress(yaml.YAMLError):
                _scan_shape(text[: mark.index], file)
        raise


_BLOCK_PREFIX = re.compile(r"^[ ]*(?:[-?][ ]+)*", re.MULTILINE)


def _plainly_small(text: str) -> bool:
    """True when the text provably stays within every bound `_scan_shape` checks, and has no
    alias, without running the (pure-Python) scanner: a fifth of validating a 1,000-service
    upstream was that scan, for files a few hundred bytes long.

    The bounds, all over-estimates: a token is at most four per character (the token, and
    the zero-width key, block start and block end it may bring); an alias needs a `*`;
    flow nesting is at most the number of `[` and `{`; and block collections open only
    at strictly increasing columns within a line's indentation and `- `/`? ` prefix (plus
    the key after it), so their nesting is at most the longest such prefix plus two."""
    if "*" in text or 4 * len(text) + 8 > MAX_TOKENS:
        return False
    flow = text.count("[") + text.count("{")
    if flow > MAX_DEPTH:
        return False
    block = max((m.end() - m.start() for m in _BLOCK_PREFIX.finditer(text)), default=0) + 2
    return block + flow <= MAX_DEPTH


def _scan_shape(text: str, file: str) -> bool:
    depth = 0
    aliases = False
    for count, tok in enumerate(yaml.scan(text, Loader=_Loader)):
        if isinstance(tok, yaml.AliasToken):
            aliases = True
        elif isinstance(tok, _OPEN):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(
                    [
                        Problem(
                            file=file,
                            line=tok.start_mark.line + 1,
                            column=tok.start_mark.column + 1,
                            message=f"nesting deeper than {MAX_DEPTH} levels; "
                            "expected a plain configuration file",
                        )
                    ]
                )
        elif isinstance(tok, _CLOSE):
            depth -= 1
        if count > MAX_TOKENS:
            raise ConfigError(
                [
                    Problem(
                        file=file,
                        line=tok.start_mark.line + 1,
                        message=f"more than {MAX_TOKENS} YAML tokens; expected a plain configuration file",
                    )
                ]
            )
    return aliases


def _check_expansion(root: yaml.Node, file: str) -> None:
    """Reject alias bombs before building anything, pointing at the top-most key that explodes.

    The composed graph shares aliased nodes, so the expanded size of every node can be
    computed once per distinct node (memoised), in time proportional to the file, not
    to its expansion. Locating the culprit descends from the root only through nodes
    used once: below the first shared node, marks name the anchor, not the alias.
    """
    sizes: dict[int, int] = {}
    uses: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            visiting.discard(key)
            total = 1
            for child in _children(node):
                total += sizes[id(child)]
            sizes[key] = min(total, MAX_NODES * 1000)
            continue
        if key in sizes:
            continue
        visiting.add(key)
        stack.append((node, True))
        for child in _children(node):
            uses[id(child)] = uses.get(id(child), 0) + 1
            if id(child) in visiting:
                raise ConfigError(
                    [
                        Problem(
                            file=file,
                            line=node.start_mark.line + 1,
                            column=node.start_mark.column + 1,
                            message="a YAML alias refers to a node that contains it (a recursive alias); "
                            "expected a plain configuration file",
                        )
                    ]
                )
            if id(child) not in sizes:
                stack.append((child, False))
    if sizes[id(root)] <= MAX_NODES:
        return
    node = root
    loc: Loc = ()
    while True:
        nxt: tuple[yaml.Node, Loc] | None = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if sizes[id(value_node)] > MAX_NODES and uses.get(id(value_node), 0) == 1:
                    label = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                    nxt = (value_node, (*loc, str(label)))
                    break
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                if sizes[id(item)] > MAX_NODES and uses.get(id(item), 0) == 1:
                    nxt = (item, (*loc, index))
                    break
        if nxt is None:
            break
        node, loc = nxt
    raise ConfigError(
        [
            Problem(
                file=file,
                line=node.start_mark.line + 1,
                column=node.start_mark.column + 1,
                field=field_path(loc) or None,
                message=f"document expands to more than {MAX_NODES} values through YAML aliases "
                "(an alias bomb?); expected a plain configuration file",
            )
        ]
    )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _reader_error(file: str, text: str, exc: yaml.reader.ReaderError) -> ConfigError:
    position = max(0, min(int(exc.position), len(text)))
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
    return ConfigError(
        [
            Problem(
                file=file,
                line=line,
                column=column,
                message=f"character U+{char:04X} is not allowed in YAML ({exc.reason}); expected printable text",
            )
        ]
    )


def _mark_error(file: str, exc: yaml.MarkedYAMLError, message: str) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    return ConfigError(
        [
            Problem(
                file=file,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
                message=message,
            )
        ]
    )


def _expected(err: Any) -> str:
    kind = err["type"]
    msg = str(err["msg"])
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field; check the spelling against the documented format"
    return msg[0].lower() + msg[1:] if msg else kind


def problems_from_validation(doc: YamlDoc, exc: ValidationError) -> list[Problem]:
    """Map pydantic errors to located problems, dropping pydantic's internal union tags."""
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = tuple(
            p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))
        )
        ctx = err.get("ctx") or {}
        message = _expected(err)
        if "error" in ctx and err["type"] == "value_error":
            message = str(ctx["error"])
        out.append(doc.problem(loc, message))
    return out


def parse_model(
    model: type[M],
    data: bytes | str,
    file: str,
    *,
    empty: Callable[[], M] | None = None,
) -> M:
    """Load YAML and validate it into `model`; every problem is located in the file."""
    doc = load_yaml(data, file)
    return validate_doc(model, doc, empty=empty)


def validate_doc(model: type[M], doc: YamlDoc, *, empty: Callable[[], M] | None = None) -> M:
    if doc.value is None:
        if empty is not None:
            return empty()
        raise ConfigError(
            [Problem(file=doc.file, message=f"file is empty; expected a {model.__name__} document")]
        )
    if not isinstance(doc.value, dict):
        raise ConfigError(
            [doc.problem((), f"expected a mapping at the top level, found {type(doc.value).__name__}")]
        )
    try:
        return model.model_validate(doc.value)
    except ValidationError as exc:
        raise ConfigError(problems_from_validation(doc, exc)) from None

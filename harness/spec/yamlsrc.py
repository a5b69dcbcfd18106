"""Load YAML while remembering where every key and item stands in the file.

The file is read defensively (a regular file of bounded size, opened without blocking, UTF-8
without control characters), parsed into events by PyYAML (libyaml when present) and composed
here, so that the composition can refuse what an experiment never needs: explicit tags (the only
values are the implicit str / int / float / bool / null, sequences and mappings), merge keys,
nesting past YAML_MAX_DEPTH and, while building plain data, more than YAML_MAX_NODES nodes after
alias expansion (an alias bomb is a billion nodes in 540 bytes). Building records a map from each
path (tuple of keys and indexes) to its (line, column), so that a schema error deep in the data is
reported at its place in the file. Duplicate keys, which PyYAML would silently collapse to the
last one, are reported as errors.

Scalars resolve as yaml.safe_load does, except where YAML 1.1 surprises: a plain scalar that
looks like a date stays a string, and only decimal numbers are numbers (`0x10`, `010` (octal 8 in
YAML 1.1) and `1:30` (sexagesimal 90) stay strings, so they reach a kernel config value as written
and an integer field refuses them).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from harness.errors import SpecError, SpecIssue
from harness.spec.model import FILE_MAX_BYTES, YAML_MAX_DEPTH, YAML_MAX_NODES

Path_ = tuple[Any, ...]

_EventLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml: the same events, 15x faster


@dataclass
class SourceMap:
    """Positions (1-based line, column) of every key and item in a YAML document."""

    file: str
    positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Path_) -> tuple[int, int]:
        """Position of the longest prefix of `path` that the file has (a missing key points at its parent)."""
        for n in range(len(path), -1, -1):
            if (pos := self.positions.get(tuple(path[:n]))) is not None:
                return pos
        return (1, 1)

    def issue(self, path: Path_, reason: str) -> SpecIssue:
        line, col = self.locate(path)
        return SpecIssue(self.file, line, col, dotted(path), reason)


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_.+-]+$")


def dotted(path: Path_) -> str:
    """A data path as the user would write it: kernel.config.CONFIG_X, variants[2].set."""
    out = ""
    for p in path:
        if isinstance(p, int) and not isinstance(p, bool):
            out += f"[{p}]"
            continue
        text = p if isinstance(p, str) and _PLAIN_KEY.fullmatch(p) else _short_repr(p)
        out += f".{text}" if out else text
    return out if len(out) <= 100 else "..." + out[-97:]


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- reading the file ------------------------------------------------------------------------

def _file_issue(name: str, reason: str) -> SpecError:
    return SpecError([SpecIssue(name, 0, 0, "", reason)])


def file_kind(mode: int) -> str | None:
    """What a non-regular file is, for the message (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def _open_error(name: str, path: Path, e: OSError) -> SpecError:
    if e.errno == errno.ENOENT and os.path.islink(path):
        return _file_issue(name, "no such file (a symbolic link to a missing file)")
    reasons = {
        errno.ENOENT: "no such file",
        errno.ENOTDIR: "no such file (a component of the path is not a directory)",
        errno.ELOOP: "cannot open: too many levels of symbolic links (a symlink loop?)",
        errno.EACCES: "cannot open: permission denied",
        errno.EPERM: "cannot open: operation not permitted",
        errno.ENAMETOOLONG: "cannot open: file name too long",
        errno.ENXIO: "cannot open: not a regular file (a socket or a device without a driver)",
    }
    return _file_issue(name, reasons.get(e.errno, f"cannot open: {e.strerror or e}"))


def read_bytes_bounded(path: Path, name: str, limit: int, what: str = "an experiment file") -> bytes:
    """The contents of a regular file of at most `limit` bytes, or a file-level SpecError.

    Never blocks or reads without bound: a FIFO, a device or a directory is refused from its
    stat before it is opened (and from fstat after, in case it was swapped), the open is
    non-blocking, and at most limit + 1 bytes are read whatever the size says (/proc files)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise _open_error(name, path, e) from None
    except ValueError:   # an embedded NUL byte
        raise _file_issue(name, "the path has a NUL byte") from None
    if (kind := file_kind(st.st_mode)) is not None:
        raise _file_issue(name, f"is {kind}, not a regular file")
    if st.st_size > limit:
        raise _file_issue(name, f"is {st.st_size} bytes, more than the {limit} {what} may have")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise _open_error(name, path, e) from None
    try:
        st = os.fstat(fd)
        if (kind := file_kind(st.st_mode)) is not None:
            raise _file_issue(name, f"is {kind}, not a regular file")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise _file_issue(name, f"is more than the {limit} bytes {what} may have")
        return b"".join(chunks)
    except OSError as e:
        raise _file_issue(name, f"cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)


def _line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


# C0 controls but tab and newline, DEL, C1 (NEL included: YAML would break lines at it), the
# Unicode line and paragraph separators (the same), a byte-order mark past the start and the
# noncharacters: none has a place in an experiment, and the line breaks would shift every
# position reported after them. A CR is allowed only before a newline (CRLF files).
_BAD_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]|\r(?!\n)")


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 (a leading BOM is fine) without control characters, or a located SpecError."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _file_issue(name, "is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        good = data[: e.start].decode("utf-8", errors="replace")
        line, col = _line_col(good, len(good))
        raise SpecError([SpecIssue(name, line, col, "", f"not valid UTF-8 (byte 0x{data[e.start]:02x}); "
                                   "save the file as UTF-8")]) from None
    if m := _BAD_CHAR.search(text):
        line, col = _line_col(text, m.start())
        ch = m.group(0)
        what = "a carriage return not followed by a newline" if ch == "\r" else f"control character U+{ord(ch):04X}"
        raise SpecError([SpecIssue(name, line, col, "", f"{what} is not allowed in an experiment file")])
    return text


# --- composing: events -> nodes ----------------------------------------------------------------

class _Alias:
    """A use of an anchor: the anchored node, and where the alias itself stands."""

    __slots__ = ("node", "line", "col")

    def __init__(self, node: yaml.Node, line: int, col: int):
        self.node, self.line, self.col = node, line, col


class _Stop(Exception):
    """Composition or building cannot go on: the file's one error."""

    def __init__(self, issue: SpecIssue):
        self.issue = issue


def _mark(obj) -> tuple[int, int]:
    if isinstance(obj, _Alias):
        return (obj.line, obj.col)
    return (obj.start_mark.line + 1, obj.start_mark.column + 1)


class _Composer:
    """PyYAML's Composer, with bounds, and with explicit tags recorded rather than resolved."""

    def __init__(self, loader, name: str):
        self.loader, self.name = loader, name
        self.anchors: dict[str, yaml.Node] = {}
        self.count = 0
        self.where: Path_ = ()

    def stop(self, mark, path: Path_, reason: str) -> _Stop:
        return _Stop(SpecIssue(self.name, mark.line + 1, mark.column + 1, dotted(path), reason))

    def document(self) -> yaml.Node | None:
        ld = self.loader
        ld.get_event()                                   # stream start
        if ld.check_event(StreamEndEvent):
            return None
        ld.get_event()                                   # document start
        root = self.node((), 0)
        ld.get_event()                                   # document end
        if not ld.check_event(StreamEndEvent):
            raise self.stop(ld.peek_event().start_mark, (), "a second YAML document ('---'): "
                            "an experiment file holds one")
        return root

    def _at_end(self, path: Path_, end) -> bool:
        self.where = path
        return self.loader.check_event(end)

    def node(self, path: Path_, depth: int):
        ld = self.loader
        self.where = path        # for a syntax error: the field being read when it came
        event = ld.peek_event()
        if isinstance(event, AliasEvent):
            ld.get_event()
            if event.anchor not in self.anchors:
                raise self.stop(event.start_mark, path,
                                f"alias *{event.anchor[:40]} has no anchor &{event.anchor[:40]} before it")
            return _Alias(self.anchors[event.anchor], event.start_mark.line + 1, event.start_mark.column + 1)
        self.count += 1
        if self.count > YAML_MAX_NODES:
            raise self.stop(event.start_mark, path, f"more than {YAML_MAX_NODES} YAML nodes in the file")
        if depth > YAML_MAX_DEPTH:
            raise self.stop(event.start_mark, path, f"nested deeper than {YAML_MAX_DEPTH} levels")
        if event.anchor is not None and event.anchor in self.anchors:
            raise self.stop(event.start_mark, path, f"anchor &{event.anchor[:40]} is defined twice")
        explicit = event.tag is not None     # '!' included: the non-specific tag is a tag too
        if isinstance(event, ScalarEvent):
            ld.get_event()
            tag = event.tag if explicit else ld.resolve(yaml.ScalarNode, event.value, event.implicit)
            return self._started(yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark,
                                                 style=event.style), event, explicit)
        if isinstance(event, SequenceStartEvent):
            ld.get_event()
            node = self._started(yaml.SequenceNode(event.tag or "tag:yaml.org,2002:seq", [], event.start_mark,
                                                   None, flow_style=event.flow_style), event, explicit)
            while not self._at_end(path, SequenceEndEvent):
                node.value.append(self.node(path + (len(node.value),), depth + 1))
            node.end_mark = ld.get_event().end_mark
            return node
        if isinstance(event, MappingStartEvent):
            ld.get_event()
            node = self._started(yaml.MappingNode(event.tag or "tag:yaml.org,2002:map", [], event.start_mark,
                                                  None, flow_style=event.flow_style), event, explicit)
            while not self._at_end(path, MappingEndEvent):
                key = self.node(path + ("?",), depth + 1)
                label = key.value if isinstance(key, yaml.ScalarNode) else "?"
                node.value.append((key, self.node(path + (label,), depth + 1)))
            node.end_mark = ld.get_event().end_mark
            return node
        raise self.stop(event.start_mark, path, f"unexpected YAML event {type(event).__name__}")

    def _started(self, node: yaml.Node, event, explicit: bool) -> yaml.Node:
        """A node as composed: whether its tag was written out, and its anchor registered."""
        node.explicit_tag = explicit
        if event.anchor is not None:
            self.anchors[event.anchor] = node
        return node


# --- building: nodes -> plain data ---------------------------------------------------------------

_STR, _INT, _FLOAT, _BOOL, _NULL = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null"))
_MERGE, _TIMESTAMP, _VALUE = (f"tag:yaml.org,2002:{t}" for t in ("merge", "timestamp", "value"))
_DECIMAL_INT = re.compile(r"^[-+]?(0|[1-9][0-9_]*)$")
_NON_DECIMAL_FLOAT = re.compile(r":")      # sexagesimal 1:30.5


class _Builder:
    def __init__(self, smap: SourceMap):
        self.smap = smap
        self.issues: list[SpecIssue] = []
        self.count = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def issue(self, node, path: Path_, reason: str) -> None:
        self.issues.append(SpecIssue(self.smap.file, *_mark(node), dotted(path), reason))

    def build(self, node, path: Path_, depth: int, aliases: tuple, stack: frozenset) -> Any:
        if isinstance(node, _Alias):
            target = node.node
            if id(target) in stack:
                raise _Stop(SpecIssue(self.smap.file, node.line, node.col, dotted(path),
                                      "alias refers to a node that contains it (a cycle)"))
            return self.build(target, path, depth, aliases + ((node, path),), stack)
        self.count += 1
        if self.count > YAML_MAX_NODES or depth > YAML_MAX_DEPTH:
            # at the outermost alias being expanded: the use that makes the document explode
            where, wpath = aliases[0] if aliases else (node, path)
            reason = (f"too many nodes after alias expansion (more than {YAML_MAX_NODES})"
                      if self.count > YAML_MAX_NODES else f"nested deeper than {YAML_MAX_DEPTH} levels")
            raise _Stop(SpecIssue(self.smap.file, *_mark(where), dotted(wpath), reason))
        if node.explicit_tag:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            self.issue(node, path, f"YAML tags are not allowed (found {tag[:40]}): write a plain value")
            return None
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path, depth, aliases, stack | {id(node)})
        if isinstance(node, yaml.SequenceNode):
            items = []
            inner = stack | {id(node)}
            for i, item in enumerate(node.value):
                self.smap.positions[path + (i,)] = _mark(item)
                items.append(self.build(item, path + (i,), depth + 1, aliases, inner))
            return items
        return self.scalar(node, path)

    def mapping(self, node, path: Path_, depth: int, aliases: tuple, stack: frozenset) -> dict:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_scalar = key_node.node if isinstance(key_node, _Alias) else key_node
            if not isinstance(key_scalar, yaml.ScalarNode) or key_scalar.explicit_tag:
                self.issue(key_node, path, "keys must be plain scalars")
                continue
            if key_scalar.tag == _MERGE:
                self.issue(key_node, path + ("<<",), "merge keys are not allowed: write the keys out, or "
                                                     "give the differences as a variant's set or a matrix axis")
                continue
            key = self.scalar(key_scalar, path, report=False)
            if not isinstance(key, str):
                self.issue(key_node, path + (key_scalar.value,), f"keys must be strings (YAML reads "
                           f"{_short_repr(key_scalar.value)} as {type(key).__name__}; quote it)")
                continue
            sub = path + (key,)
            if key in out:
                first = self.smap.positions[sub]
                self.issue(key_node, sub, f"duplicate key (first defined at line {first[0]})")
                continue
            self.smap.positions[sub] = _mark(key_node)
            out[key] = self.build(value_node, sub, depth + 1, aliases, stack)
        return out

    def scalar(self, node: yaml.ScalarNode, path: Path_, report: bool = True) -> Any:
        """Resolve a scalar the way yaml.safe_load would, YAML 1.1 surprises excepted (see the module doc)."""
        tag, text = node.tag, node.value
        if tag in (_STR, _TIMESTAMP, _VALUE):
            return text
        if tag == _INT and not _DECIMAL_INT.fullmatch(text):
            return text
        if tag == _FLOAT and _NON_DECIMAL_FLOAT.search(text):
            return text
        if tag == _MERGE:
            if report:
                self.issue(node, path, "'<<' is YAML's merge key: quote it for a string")
            return None
        if tag == _INT and len(text) > 1000:
            if report:
                self.issue(node, path, f"a {len(text)}-character integer is past every bound")
            return None
        if tag not in (_INT, _FLOAT, _BOOL, _NULL):
            if report:
                self.issue(node, path, f"a value YAML resolves as {_short_repr(tag)}; quote it for a string")
            return None
        try:
            return self.constructor.yaml_constructors[tag](self.constructor, node)
        except (ValueError, OverflowError, yaml.YAMLError) as e:   # e.g. an int past Python's digit limit
            if report:
                self.issue(node, path, f"cannot read {_short_repr(text)} as {tag.rsplit(':', 1)[-1]}: "
                                       f"{_short_repr(str(e), 80)}")
            return None


def _syntax_issue(name: str, text: str, e: yaml.MarkedYAMLError, where: Path_) -> SpecIssue:
    mark = e.problem_mark or e.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    lines = text.split("\n")
    at = lines[line - 1][col - 1:col] if line <= len(lines) else ""
    context = e.context or ""
    cm, pm = e.context_mark, e.problem_mark
    if context and cm is not None and pm is not None and (cm.line, cm.column) != (pm.line, pm.column):
        context += f" (from line {e.context_mark.line + 1}, column {e.context_mark.column + 1})"
    reason = ": ".join(x for x in (context, e.problem or "") if x)
    if at == "\t":
        reason += " (a tab: YAML indents with spaces)"
    return SpecIssue(name, line, col, dotted(tuple(p for p in where if p != "?")),
                     f"YAML syntax error: {reason or 'cannot parse'}")


def parse_text(text: str, name: str) -> tuple[Any, SourceMap]:
    """YAML text -> (plain data, SourceMap); any problem raises SpecError."""
    smap = SourceMap(name)
    loader = _EventLoader(text)
    composer = _Composer(loader, name)
    try:
        root = composer.document()
    except _Stop as stop:
        raise SpecError([stop.issue]) from None
    except yaml.MarkedYAMLError as e:
        raise SpecError([_syntax_issue(name, text, e, composer.where)]) from None
    except yaml.YAMLError as e:
        raise SpecError([SpecIssue(name, 1, 1, "", f"YAML error: {_short_repr(str(e), 200)}")]) from None
    except RecursionError:   # cannot happen with the depth bound; a guard in case the parser recurses
        raise SpecError([SpecIssue(name, 0, 0, "", f"nested deeper than {YAML_MAX_DEPTH} levels")]) from None
    finally:
        loader.dispose()
    if root is None:
        raise SpecError([SpecIssue(name, 0, 0, "", "the file is empty (no YAML document)")])
    builder = _Builder(smap)
    smap.positions[()] = _mark(root)
    try:
        data = builder.build(root, (), 0, (), frozenset())
    except _Stop as stop:
        raise SpecError([stop.issue]) from None
    except RecursionError:
        raise SpecError([SpecIssue(name, 0, 0, "", f"nested deeper than {YAML_MAX_DEPTH} levels")]) from None
    if builder.issues:
        raise SpecError(builder.issues)
    return data, smap


def load_yaml(path: Path, display: str | None = None) -> tuple[Any, SourceMap]:
    """Parse `path` into plain data plus its SourceMap; any problem raises SpecError."""
    name = display or str(path)
    text = decode_text(read_bytes_bounded(path, name, FILE_MAX_BYTES), name)
    return parse_text(text, name)

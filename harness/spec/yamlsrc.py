"""Load YAML while remembering where every key and item stands in the file.

PyYAML's composed node tree carries marks; we walk it once to build plain Python data and a
map from each path (tuple of keys and indexes) to its (line, column), so that a schema error
deep in the data can be reported at its place in the file. Duplicate keys, which PyYAML would
silently collapse to the last one, are reported as errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import SpecError, SpecIssue

Path_ = tuple[Any, ...]


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


def dotted(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _build(node: yaml.Node, path: Path_, smap: SourceMap, issues: list[SpecIssue]) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                issues.append(SpecIssue(smap.file, *_mark(key_node), dotted(path), "keys must be plain scalars"))
                continue
            key = _scalar(key_node)
            sub = path + (key,)
            if key in out:
                first = smap.positions[sub]
                issues.append(SpecIssue(smap.file, *_mark(key_node), dotted(sub),
                                        f"duplicate key (first defined at line {first[0]})"))
                continue
            smap.positions[sub] = _mark(key_node)
            out[key] = _build(value_node, sub, smap, issues)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            smap.positions[path + (i,)] = _mark(item)
            items.append(_build(item, path + (i,), smap, issues))
        return items
    return _scalar(node)


def _scalar(node: yaml.ScalarNode) -> Any:
    """Resolve a scalar the way yaml.safe_load would (ints, bools, nulls, strings)."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def load_yaml(path: Path, display: str | None = None) -> tuple[Any, SourceMap]:
    """Parse `path` into plain data plus its SourceMap; any problem raises SpecError."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([SpecIssue(name, 0, 0, "", "no such file")]) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise SpecError([SpecIssue(name, 0, 0, "", f"cannot read: {e}")]) from None
    smap = SourceMap(name)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise SpecError([SpecIssue(name, line, col, "", f"YAML syntax error: {reason}")]) from None
    except yaml.YAMLError as e:
        raise SpecError([SpecIssue(name, 1, 1, "", f"YAML error: {e}")]) from None
    if root is None:
        raise SpecError([SpecIssue(name, 1, 1, "", "the file is empty")])
    issues: list[SpecIssue] = []
    smap.positions[()] = _mark(root)
    data = _build(root, (), smap, issues)
    if issues:
        raise SpecError(issues)
    return data, smap

"""A small device-tree source (DTS/DTSI) reader: enough to take OPP tables and idle states out of
the kernel's own .dtsi files, so that presets cite the tree instead of numbers typed by hand.

It parses the dtc syntax (nodes, labels, `&label { }` overlays, `/delete-node/`, `/delete-property/`,
cells with phandle references, `/bits/ N`, strings, byte strings) and follows quoted includes of
sibling files. C-preprocessor lines are skipped: `<dt-bindings/...>` headers only define macros, and
a macro inside cells is kept as its name (a `Symbol`), which is enough since the values read here
are plain numbers. `#if` blocks are not evaluated (both branches are read); the files used for
presets have none.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.errors import HarnessError


class DtsError(HarnessError):
    """The source does not parse, or lacks what a preset needs."""


@dataclass(frozen=True)
class Ref:
    """A phandle (`<&label>`) or path (`&label` outside cells) reference."""

    label: str


@dataclass(frozen=True)
class Symbol:
    """A macro or expression inside cells, kept unevaluated (e.g. `ARMCLKB`, `(1 << 2)`)."""

    text: str


@dataclass(frozen=True)
class Cells:
    bits: int
    items: tuple[int | Ref | Symbol, ...]


Chunk = Cells | str | bytes | Ref | Symbol


@dataclass
class Node:
    name: str                                   # with the unit address: "cpu@100"
    labels: list[str] = field(default_factory=list)
    props: dict[str, list[Chunk]] = field(default_factory=dict)
    children: dict[str, Node] = field(default_factory=dict)
    parent: Node | None = field(default=None, repr=False)
    origins: list[str] = field(default_factory=list)   # "file:line" of every block that defines it

    @property
    def basename(self) -> str:
        """The name without the unit address, as the kernel's `device_node->name`."""
        return self.name.split("@", 1)[0]

    @property
    def path(self) -> str:
        if self.parent is None:
            return "/"
        up = self.parent.path
        return (up if up != "/" else "") + "/" + self.name

    def cells(self, prop: str) -> list[int | Ref | Symbol]:
        """All cell items of a property, over its comma-separated chunks."""
        out: list[int | Ref | Symbol] = []
        for chunk in self._prop(prop):
            if not isinstance(chunk, Cells):
                raise DtsError(f"{self.where()}: {prop} is not a cell list")
            out.extend(chunk.items)
        return out

    def ints(self, prop: str) -> list[int]:
        items = self.cells(prop)
        if not all(isinstance(i, int) for i in items):
            raise DtsError(f"{self.where()}: {prop} has non-numeric cells {items}")
        return items  # type: ignore[return-value]

    def u32(self, prop: str) -> int:
        vals = self.ints(prop)
        if len(vals) != 1:
            raise DtsError(f"{self.where()}: {prop} has {len(vals)} cells, expected 1")
        return vals[0]

    def refs(self, prop: str) -> list[str]:
        return [i.label for i in self.cells(prop) if isinstance(i, Ref)]

    def string(self, prop: str) -> str:
        chunks = self._prop(prop)
        if not chunks or not isinstance(chunks[0], str):
            raise DtsError(f"{self.where()}: {prop} is not a string")
        return chunks[0]

    def has(self, prop: str) -> bool:
        return prop in self.props

    def where(self) -> str:
        return f"{self.path} ({', '.join(self.origins)})"

    def _prop(self, prop: str) -> list[Chunk]:
        if prop not in self.props:
            raise DtsError(f"{self.where()}: no property {prop}")
        return self.props[prop]


@dataclass
class Tree:
    root: Node
    labels: dict[str, Node]
    files: list[str]                            # every file read, the top one first

    def label(self, name: str) -> Node:
        if name not in self.labels:
            raise DtsError(f"{self.files[0]}: no node labelled {name}")
        return self.labels[name]

    def node(self, path: str) -> Node:
        n = self.root
        for part in [p for p in path.split("/") if p]:
            if part not in n.children:
                raise DtsError(f"{self.files[0]}: no node {path}")
            n = n.children[part]
        return n


# --- lexing ---------------------------------------------------------------------------------------

_PREPROC = re.compile(r"#\s*(include|define|undef|ifdef|ifndef|if|elif|else|endif|error|warning|pragma|line)\b")
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<directive>/(?:dts-v1|plugin|memreserve|delete-node|delete-property|include|bits|omit-if-no-ref)/)
  | (?P<ref>&\{[^}]*\}|&[A-Za-z_][A-Za-z0-9_]*)
  | (?P<label>[A-Za-z_][A-Za-z0-9_]*:)
  | (?P<word>[A-Za-z0-9,._+*\#?@-]+)
  | (?P<punct>[{}<>;=\[\]/(),|&~!^%:-])
""", re.VERBOSE)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    file: str
    line: int
    start: int                                  # offset in the file's stripped text
    end: int


def _strip(text: str) -> tuple[str, list[tuple[int, str]]]:
    """Comments and preprocessor lines blanked out (line numbers kept), and the quoted includes by line.

    Only `#include "x.dtsi"` / `/include/ "x.dtsi"` are followed: `<dt-bindings/...>` headers define macros only.
    """
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':                                    # a string: copy to its end
            j = i + 1
            while j < n and text[j] != '"' and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        else:
            out.append(c)
            i += 1
    lines = "".join(out).split("\n")
    includes = []
    k = 0
    while k < len(lines):
        m = re.match(r'\s*(?:#\s*include|/include/)\s*"([^"]+)"', lines[k])
        if m and m.group(1).endswith((".dts", ".dtsi")):
            includes.append((k + 1, m.group(1)))
        if m or _PREPROC.match(lines[k].lstrip()):
            while lines[k].rstrip().endswith("\\") and k + 1 < len(lines):
                lines[k] = ""
                k += 1
            lines[k] = ""
        k += 1
    return "\n".join(lines).replace("\\\n", " \n"), includes   # cpp joins continued lines


def _lex(body: str, fname: str) -> list[_Tok]:
    toks, pos, line = [], 0, 1
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if not m:
            raise DtsError(f"{fname}:{line}: cannot read {body[pos:pos + 20]!r}")
        kind = m.lastgroup
        if kind != "ws":
            toks.append(_Tok(kind, m.group(), fname, line, m.start(), m.end()))
        line += m.group().count("\n")
        pos = m.end()
    return toks


# --- parsing --------------------------------------------------------------------------------------

class _Parser:
    def __init__(self, read: Callable[[str], str]):
        self.read = read
        self.root = Node("/")
        self.labels: dict[str, Node] = {}
        self.files: list[str] = []
        self.bodies: dict[str, str] = {}
        self.toks: list[_Tok] = []
        self.i = 0

    # Includes are pasted where they stand, as cpp does: a .dtsi may hold a fragment of a node body.
    def tokens(self, path: str, depth: int = 0) -> list[_Tok]:
        if depth > 16:
            raise DtsError(f"{path}: includes nested more than 16 deep (an include loop?)")
        try:
            text = self.read(path)
        except (OSError, KeyError) as e:
            raise DtsError(f"{path}: cannot read ({e})") from e
        if path not in self.files:
            self.files.append(path)
        body, includes = _strip(text)
        self.bodies[path] = body
        toks = _lex(body, path)
        out: list[_Tok] = []
        k = 0
        for line, inc in includes:
            while k < len(toks) and toks[k].line < line:
                out.append(toks[k])
                k += 1
            out.extend(self.tokens(posixpath.normpath(posixpath.join(posixpath.dirname(path), inc)), depth + 1))
        out.extend(toks[k:])
        return out

    def parse_file(self, path: str) -> None:
        self.toks, self.i = self.tokens(path), 0
        while self.i < len(self.toks):
            self.top_item()

    def peek(self, k: int = 0) -> _Tok | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def next(self) -> _Tok:
        t = self.peek()
        if t is None:
            last = self.toks[-1] if self.toks else None
            raise DtsError(f"{last.file}:{last.line}: unexpected end of file" if last else "empty file")
        self.i += 1
        return t

    def expect(self, text: str) -> _Tok:
        t = self.next()
        if t.text != text:
            raise DtsError(f"{t.file}:{t.line}: expected {text!r}, found {t.text!r}")
        return t

    def top_item(self) -> None:
        t = self.peek()
        if t.kind == "directive":
            self.next()
            if t.text in ("/dts-v1/", "/plugin/"):
                self.expect(";")
            elif t.text == "/memreserve/":
                while self.next().text != ";":
                    pass
            elif t.text == "/delete-node/":
                target = self.next()
                node = self.resolve(target)
                if node.parent is not None:
                    del node.parent.children[node.name]
                self.expect(";")
            elif t.text == "/omit-if-no-ref/":
                pass
            else:
                raise DtsError(f"{t.file}:{t.line}: unexpected {t.text}")
            return
        labels = self.labels_here()
        t = self.next()
        if t.text == "/":
            node = self.root
        elif t.kind == "ref":
            node = self.resolve(t)
        else:
            raise DtsError(f"{t.file}:{t.line}: expected a node, found {t.text!r}")
        self.block(node, labels, t)

    def labels_here(self) -> list[str]:
        out = []
        while (t := self.peek()) is not None and t.kind == "label":
            out.append(self.next().text[:-1])
        return out

    def resolve(self, t: _Tok) -> Node:
        text = t.text[1:] if t.text.startswith("&") else t.text
        if text.startswith("{"):
            path = text[1:-1]
            n = self.root
            for part in [p for p in path.split("/") if p]:
                if part not in n.children:
                    raise DtsError(f"{t.file}:{t.line}: no node {path}")
                n = n.children[part]
            return n
        if t.text.startswith("&"):
            if text not in self.labels:
                raise DtsError(f"{t.file}:{t.line}: no node labelled {text}")
            return self.labels[text]
        raise DtsError(f"{t.file}:{t.line}: expected a node reference, found {t.text!r}")

    def block(self, node: Node, labels: list[str], at: _Tok) -> None:
        self.add_labels(node, labels)
        node.origins.append(f"{at.file}:{at.line}")
        self.expect("{")
        while True:
            t = self.peek()
            if t is None:
                raise DtsError(f"{at.file}:{at.line}: block never closed")
            if t.text == "}":
                self.next()
                self.expect(";")
                return
            if t.kind == "directive":
                self.next()
                if t.text == "/delete-property/":
                    node.props.pop(self.next().text, None)
                elif t.text == "/delete-node/":
                    name = self.next()
                    if name.kind == "ref":
                        victim = self.resolve(name)
                        if victim.parent is not None:
                            victim.parent.children.pop(victim.name, None)
                    else:
                        node.children.pop(name.text, None)
                elif t.text == "/omit-if-no-ref/":
                    continue
                else:
                    raise DtsError(f"{t.file}:{t.line}: unexpected {t.text}")
                self.expect(";")
                continue
            labels = self.labels_here()
            name = self.next()
            if name.kind != "word":
                raise DtsError(f"{name.file}:{name.line}: expected a property or node name, found {name.text!r}")
            after = self.next()
            if after.text == "{":
                self.i -= 1
                child = node.children.get(name.text)
                if child is None:
                    child = node.children[name.text] = Node(name.text, parent=node)
                self.block(child, labels, name)
            elif after.text == ";":
                node.props[name.text] = []
            elif after.text == "=":
                node.props[name.text] = self.values()
            else:
                raise DtsError(f"{after.file}:{after.line}: expected '=', ';' or '{{' after {name.text!r}")

    def add_labels(self, node: Node, labels: list[str]) -> None:
        for lab in labels:
            if lab not in node.labels:
                node.labels.append(lab)
            self.labels[lab] = node

    def values(self) -> list[Chunk]:
        chunks: list[Chunk] = []
        while True:
            self.labels_here()                     # labels inside values are legal and ignored
            t = self.next()
            if t.kind == "string":
                chunks.append(_unescape(t.text[1:-1]))
            elif t.kind == "ref":
                chunks.append(Ref(t.text[1:]))
            elif t.text == "/bits/":
                bits = int(self.next().text, 0)
                if bits not in (8, 16, 32, 64):
                    raise DtsError(f"{t.file}:{t.line}: /bits/ {bits}")
                self.expect("<")
                chunks.append(Cells(bits, self.cell_items()))
            elif t.text == "<":
                chunks.append(Cells(32, self.cell_items()))
            elif t.kind == "word" and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t.text):
                chunks.append(Symbol(t.text))      # a macro standing for a string or cells
            elif t.text == "[":
                hexdigits = []
                while (b := self.next()).text != "]":
                    hexdigits.append(b.text)
                chunks.append(bytes.fromhex("".join(hexdigits)))
            else:
                raise DtsError(f"{t.file}:{t.line}: unexpected {t.text!r} in a property value")
            sep = self.next()
            if sep.text == ";":
                return chunks
            if sep.text != ",":
                raise DtsError(f"{sep.file}:{sep.line}: expected ',' or ';', found {sep.text!r}")

    def cell_items(self) -> tuple[int | Ref | Symbol, ...]:
        items: list[int | Ref | Symbol] = []
        while True:
            t = self.next()
            if t.text == ">":
                return tuple(items)
            if t.kind == "ref":
                items.append(Ref(t.text[1:]))
            elif t.text == "(":
                items.append(Symbol("(" + self.balanced() + ")"))
            elif t.kind == "word":
                num = _number(t.text)
                if num is not None:
                    items.append(num)
                elif (p := self.peek()) is not None and p.text == "(":   # a function-like macro
                    self.next()
                    items.append(Symbol(t.text + "(" + self.balanced() + ")"))
                else:
                    items.append(Symbol(t.text))
            elif t.kind == "label":
                continue
            else:
                raise DtsError(f"{t.file}:{t.line}: unexpected {t.text!r} in cells")

    def balanced(self) -> str:
        """The source text up to the `)` matching an already consumed `(`."""
        depth, first, parts = 1, self.peek(), []
        while True:
            t = self.next()
            if t.text == "(":
                depth += 1
            elif t.text == ")":
                depth -= 1
                if depth == 0:
                    if first is not None and first.file == t.file:
                        return " ".join(self.bodies[t.file][first.start:t.start].split())
                    return " ".join(parts)
            parts.append(t.text)


def _number(text: str) -> int | None:
    m = re.fullmatch(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)(?:[uU]?[lL]{0,2}|[lL]{1,2}[uU])", text)
    if not m:
        return None
    digits = m.group(1)
    return int(digits, 16) if digits[:2].lower() == "0x" else int(digits, 8) if digits.startswith("0") else int(digits)


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "0": "\0"}.get(m.group(1), m.group(1)), s)


def parse(path: str, read: Callable[[str], str]) -> Tree:
    """Parse the DTS/DTSI file `path` (and its quoted includes, resolved by `read` relative to it)."""
    p = _Parser(read)
    p.parse_file(path)
    return Tree(p.root, p.labels, p.files)

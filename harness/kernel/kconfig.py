"""Config fragments, and the check that Kconfig kept every symbol a fragment asked for.

`make olddefconfig` silently drops a requested symbol whose dependencies are not met (real
case: arm64 configs with DEBUG_INFO_REDUCED lose DEBUG_INFO_BTF). After merging, every
requested value is compared with the final .config, and a dropped symbol is reported with
the `depends on` expression that failed and the values that made it fail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class Request:
    """One symbol a fragment asks for: value 'n' stands for '# CONFIG_X is not set'."""

    symbol: str   # without the CONFIG_ prefix
    value: str
    origin: str   # file:line

    def line(self) -> str:
        return f"# CONFIG_{self.symbol} is not set" if self.value == "n" else f"CONFIG_{self.symbol}={self.value}"


def parse_fragment(text: str, origin: str) -> list[Request]:
    out = []
    for i, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if m := _SET.match(line):
            out.append(Request(m.group(1)[7:], m.group(2), f"{origin}:{i}"))
        elif m := _UNSET.match(line):
            out.append(Request(m.group(1)[7:], "n", f"{origin}:{i}"))
        elif line and not line.startswith("#"):
            raise HarnessError(f"{origin}:{i}: not a config line: {raw!r}")
    return out


def read_config(path: Path) -> dict[str, str]:
    """Symbol (no prefix) -> value for every set symbol of a .config; unset symbols are absent."""
    values = {}
    for line in path.read_text().splitlines():
        if m := _SET.match(line):
            values[m.group(1)[7:]] = m.group(2)
    return values


def effective_requests(requests: list[Request]) -> dict[str, Request]:
    """Later fragments win, as in merge_config.sh."""
    out: dict[str, Request] = {}
    for r in requests:
        out[r.symbol] = r
    return out


def _norm(value: str) -> str:
    return value.strip('"')


def unmet(requests: list[Request], final: dict[str, str]) -> list[Request]:
    """Requests whose value did not survive into the final config."""
    bad = []
    for r in effective_requests(requests).values():
        got = final.get(r.symbol, "n")
        if _norm(got) != _norm(r.value):
            bad.append(r)
    return bad


# --- Kconfig dependency explanation -----------------------------------------------------------

@dataclass(frozen=True)
class Definition:
    file: str
    line: int
    depends: tuple[str, ...]   # every `depends on` and enclosing `if`/menu/choice condition


_KEYWORDS = ("config", "menuconfig", "choice", "endchoice", "menu", "endmenu", "if", "endif",
             "source", "comment", "mainmenu")


def scan_kconfig(tree: Path, srcarch: str) -> dict[str, list[Definition]]:
    """Definitions of every symbol in the tree's Kconfig files (other arches' files skipped)."""
    defs: dict[str, list[Definition]] = {}
    for f in sorted(tree.rglob("Kconfig*")):
        rel = f.relative_to(tree).as_posix()
        if rel.startswith("arch/") and not rel.startswith(f"arch/{srcarch}/") or not f.is_file():
            continue
        if rel.startswith(("Documentation/", "tools/", "scripts/")):
            continue
        _scan_file(f, rel, defs)
    return defs


def _scan_file(path: Path, rel: str, defs: dict[str, list[Definition]]) -> None:
    stack: list[list[str]] = []       # open if/menu/choice blocks with their conditions
    current: tuple[str, int, list[str]] | None = None   # (symbol, line, depends) being read
    block_open: list[str] | None = None  # a menu/choice whose `depends on` lines follow it
    in_help = False

    def close() -> None:
        nonlocal current
        if current:
            sym, line, deps = current
            outer = [c for frame in stack for c in frame]
            defs.setdefault(sym, []).append(Definition(rel, line, tuple(outer + deps)))
        current = None

    for n, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        stripped = raw.strip()
        if in_help:
            if stripped and not raw[:1].isspace():
                in_help = False
            else:
                continue
        if not stripped or stripped.startswith("#"):
            continue
        word = stripped.split()[0]
        rest = stripped[len(word):].strip()
        if word in ("help", "---help---"):
            in_help = True
            continue
        if word in _KEYWORDS:
            close()
            block_open = None
            if word in ("config", "menuconfig"):
                current = (rest, n, [])
            elif word == "if":
                stack.append([rest])
            elif word in ("menu", "choice"):
                stack.append([])
                block_open = stack[-1]
            elif word in ("endif", "endmenu", "endchoice") and stack:
                stack.pop()
            continue
        if word == "depends" and rest.startswith("on "):
            cond = rest[3:].strip()
            if current is not None:
                current[2].append(cond)
            elif block_open is not None:
                block_open.append(cond)
    close()


_TOKEN = re.compile(r'\s*(\|\||&&|!=|<=|>=|[()!=<>]|"[^"]*"|\$\([^)]*\)|[A-Za-z0-9_]+)')


def evaluate(expr: str, values: dict[str, str]) -> int:
    """Evaluate a Kconfig expression to 0 (n), 1 (m) or 2 (y) against .config values."""
    tokens = [t for t in _TOKEN.findall(expr) if t]
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def value_of(tok: str) -> str:
        if tok.startswith('"'):
            return tok.strip('"')
        if tok.startswith("$("):
            return "y"    # macros ($(cc-option ...)) are toolchain probes: assume they pass
        if tok in ("y", "m", "n") or tok.lstrip("-").isdigit() or tok.startswith("0x"):
            return tok
        return values.get(tok, "n")

    def tri(v: str) -> int:
        return {"y": 2, "m": 1}.get(v, 0)

    def as_num(v: str) -> float | None:
        try:
            return float(int(v, 0))
        except ValueError:
            return None

    def primary() -> int:
        tok = take()
        if tok == "!":
            return 2 - primary()
        if tok == "(":
            v = disj()
            if peek() == ")":
                take()
            return v
        left = value_of(tok)
        if peek() in ("=", "!=", "<", "<=", ">", ">="):
            op = take()
            right = value_of(take())
            a, b = as_num(left), as_num(right)
            if op in ("=", "!="):
                eq = (a == b) if a is not None and b is not None else left == right
                return 2 if eq == (op == "=") else 0
            if a is None or b is None:
                return 0
            return 2 if {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op] else 0
        return tri(left)

    def conj() -> int:
        v = primary()
        while peek() == "&&":
            take()
            v = min(v, primary())
        return v

    def disj() -> int:
        v = conj()
        while peek() == "||":
            take()
            v = max(v, conj())
        return v

    return disj() if tokens else 2


def explain(req: Request, final: dict[str, str], defs: dict[str, list[Definition]]) -> str:
    """Why Kconfig did not keep `req`: the unmet `depends on` with the values that broke it."""
    got = final.get(req.symbol)
    head = f"CONFIG_{req.symbol}: {req.origin} asks for `{req.line()}`, " + \
           (f"the final .config has CONFIG_{req.symbol}={got}" if got else "the final .config leaves it unset")
    if req.symbol not in defs:
        return head + "; no Kconfig in this tree defines it (a typo, or a patch series not applied?)"
    reasons = []
    for d in defs[req.symbol]:
        for cond in d.depends:
            if evaluate(cond, final) == 0:
                syms = sorted(set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", cond)))
                shown = ", ".join(f"{s}={final.get(s, 'n')}" for s in syms)
                reasons.append(f"unmet dependency `depends on {cond}` ({shown}) at {d.file}:{d.line}")
    if not reasons:
        reasons.append("its dependencies are met: it is probably forced by a `select`, a choice or "
                       "a default of another symbol")
    return head + "; " + "; ".join(dict.fromkeys(reasons))

"""Malformed and hostile experiment files through the real CLI, one subprocess each.

Every case must exit 2 within 5 s with one located line per problem (`error: FILE:LINE:COL: field:
reason`, or `error: FILE: reason` for the file as a whole), matching the expectation stored with
the case, print no traceback and create nothing in the cache or results directory. The static
cases are tests/corpus/*.yaml, each with `# expect: <regex>` header lines (one per error line, in
order, matched against what follows `error: FILE`). Cases that cannot be a file in git (a FIFO, a
symlink loop, a 50 MB file, a directory, an unreadable file, bytes that are not UTF-8) are made in
a temporary directory by the GENERATED builders below.

The subprocesses run on a pool as wide as the machine, started when the first case is asked for,
so the corpus takes seconds per core rather than seconds per case; each case is still its own test.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from harness import paths
from harness.errors import SpecError
from harness.spec import load_experiment, yamlsrc

CORPUS = Path(__file__).resolve().parent / "corpus"
TIMEOUT_S = 90.0
REPO_ROOT = Path(__file__).resolve().parent.parent
EXPECT = re.compile(r"^# expect: (.+)$")
# What follows "error: FILE" on every line: ":LINE:COL: " (or ": " for the file) then the message.
LOCATED = re.compile(r"^(?::(?P<line>[1-9][0-9]*):(?P<col>[1-9][0-9]*))?: \S.*$")


@dataclass
class Case:
    name: str
    expects: list[str]
    path: Path | None = None                       # a static corpus file
    build: Callable[[Path], Path] | None = None    # or: make the input in a temp dir, return its path
    wrap: Callable[[], list[str]] = field(default=lambda: [])   # command prefix (setpriv for root)


def _static_cases() -> list[Case]:
    cases = []
    for f in sorted(CORPUS.glob("*.yaml")):
        head = f.read_bytes()[:4096].decode("utf-8", errors="replace").lstrip("\ufeff")
        # `{repo}` stands for the checkout's own path (the messages name resolved paths)
        expects = [m.group(1).replace("{repo}", re.escape(str(REPO_ROOT)))
                   for line in head.splitlines() if (m := EXPECT.match(line.rstrip("\r")))]
        cases.append(Case(f.stem, expects, path=f))
    return cases


# --- generated cases ------------------------------------------------------------------------------

def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name
    return build


def _fifo(d: Path) -> Path:
    os.mkfifo(d / "fifo.yaml")
    return d / "fifo.yaml"


def _symlink_loop(d: Path) -> Path:
    os.symlink(d / "b.yaml", d / "a.yaml")
    os.symlink(d / "a.yaml", d / "b.yaml")
    return d / "a.yaml"


def _dangling(d: Path) -> Path:
    os.symlink(d / "gone.yaml", d / "link.yaml")
    return d / "link.yaml"


def _sparse(size: int) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        with open(d / "big.yaml", "wb") as fh:
            fh.truncate(size)
        return d / "big.yaml"
    return build


def _directory(d: Path) -> Path:
    (d / "dir.yaml").mkdir()
    return d / "dir.yaml"


def _unreadable(d: Path) -> Path:
    f = d / "secret.yaml"
    f.write_text("name: x\n")
    f.chmod(0)
    return f


def _unreadable_wrap() -> list[str]:
    """Root reads any file: drop the capabilities that let it (setpriv), or skip."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a mode-000 file stays readable")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def _path_through_file(d: Path) -> Path:
    (d / "plain").write_text("x")
    return d / "plain" / "x.yaml"


def _socket(d: Path) -> Path:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(d / "sock.yaml"))           # left bound until the directory goes
    _SOCKETS.append(s)
    return d / "sock.yaml"


_SOCKETS: list[socket.socket] = []


def _experiment_with(name: str, make: Callable[[Path], str], body: str) -> Callable[[Path], Path]:
    """An experiment whose body names a path made in the temp dir (a FIFO, a loop, a big file)."""
    def build(d: Path) -> Path:
        f = d / f"{name}.yaml"
        f.write_text(body.format(path=make(d)))
        return f
    return build


def _mk_fifo(d: Path) -> str:
    os.mkfifo(d / "waits.fifo")
    return "waits.fifo"


def _mk_loop(d: Path) -> str:
    os.symlink(d / "l2.tar.xz", d / "l1.tar.xz")
    os.symlink(d / "l1.tar.xz", d / "l2.tar.xz")
    return str(d / "l1.tar.xz")


def _mk_big_waits(d: Path) -> str:
    with open(d / "waits.txt", "wb") as fh:
        fh.truncate(17 << 20)
    return "waits.txt"


def _mk_tree_without_git(d: Path) -> str:
    t = d / "linux"
    (t / "kernel" / "sched").mkdir(parents=True)
    (t / "Makefile").write_text("all:\n")
    (t / "Kconfig").write_text("")
    return "linux"


WAIT_FILE = "name: x\nworkload:\n  wait: {{distribution: file, file: {path}}}\n"
SOURCE = "name: x\nkernel: {{source: {path}}}\n"
GENERATED: list[Case] = [
    Case("gen_empty_file", [r": the file is empty \(no YAML document\)$"], build=_write("empty.yaml", b"")),
    Case("gen_whitespace_only", [r": the file is empty"], build=_write("ws.yaml", b"\n   \n\n")),
    Case("gen_fifo", [r": is a FIFO \(named pipe\), not a regular file$"], build=_fifo),
    Case("gen_symlink_loop", [r": cannot open: too many levels of symbolic links"], build=_symlink_loop),
    Case("gen_dangling_symlink", [r": no such file \(a symbolic link to a missing file\)$"], build=_dangling),
    Case("gen_file_50mb", [r": is 52428800 bytes, more than the 1048576 an experiment file may have$"],
         build=_sparse(50 << 20)),
    Case("gen_file_one_byte_over", [r": is 1048577 bytes, more than the 1048576"],
         build=_write("over.yaml", b"#" * (1 << 20) + b"\n")),
    Case("gen_directory", [r": is a directory, not a regular file$"], build=_directory),
    Case("gen_unreadable", [r": cannot open: permission denied$"], build=_unreadable, wrap=_unreadable_wrap),
    Case("gen_missing", [r": no such file$"], build=lambda d: d / "nope.yaml"),
    Case("gen_path_through_file", [r": no such file \(a component of the path is not a directory\)$"],
         build=_path_through_file),
    Case("gen_socket", [r": is a socket, not a regular file$"], build=_socket),
    Case("gen_device", [r": is a character device, not a regular file$"], build=lambda d: Path("/dev/null")),
    Case("gen_latin1", [r":2:17: not valid UTF-8 \(byte 0xe9\)"],
         build=_write("latin1.yaml", b"name: x\ndescription: caf\xe9\n")),
    Case("gen_utf16", [r": is UTF-16 .*save it as UTF-8$"], build=_write("u16.yaml", "name: x\n".encode("utf-16"))),
    Case("gen_overlong_utf8", [r":1:9: not valid UTF-8 \(byte 0xc0\)"],
         build=_write("overlong.yaml", b"name: x/\xc0\xaf\n")),
    Case("gen_encoded_surrogate", [r":2:14: not valid UTF-8 \(byte 0xed\)"],
         build=_write("surrogate.yaml", b"name: x\ndescription: \xed\xa0\x80\n")),
    Case("gen_long_line_then_error", [r":2:1: repeats: Input should be greater than or equal to 1 \(got 0\)$"],
         build=_write("long.yaml", b"#" + b"x" * ((1 << 20) - 100) + b"\nrepeats: 0\nname: x\n")),
    Case("gen_wait_file_fifo", [r":3:30: workload\.wait\.file: wait-time file .*waits\.fifo is a FIFO \(named pipe\), "
                                r"not a regular file$"], build=_experiment_with("wf", _mk_fifo, WAIT_FILE)),
    Case("gen_wait_file_17mb", [r":3:30: workload\.wait\.file: wait-time file .*waits\.txt is 17825792 bytes, more "
                                r"than 16777216$"], build=_experiment_with("wb", _mk_big_waits, WAIT_FILE)),
    Case("gen_source_fifo", [r":2:10: kernel\.source: kernel source .*waits\.fifo is a FIFO \(named pipe\), "
                             r"not a kernel tree or a tarball$"], build=_experiment_with("sf", _mk_fifo, SOURCE)),
    Case("gen_source_symlink_loop", [r":2:10: kernel\.source: kernel source .*l1\.tar\.xz cannot be read \(Too many "
                                     r"levels of symbolic links\)$"], build=_experiment_with("sl", _mk_loop, SOURCE)),
    Case("gen_source_tree_without_git", [r":2:10: kernel\.source: kernel source .*linux is a kernel tree but not a "
                                         r"git repository"],
         build=_experiment_with("sg", _mk_tree_without_git, SOURCE)),
]

CASES = {c.name: c for c in _static_cases() + GENERATED}


# --- running -------------------------------------------------------------------------------------------

@dataclass
class Result:
    shown: str            # the path as given on the command line
    code: int | None
    stdout: str
    stderr: str
    seconds: float
    leftovers: list[str]  # anything that appeared in the cache or results directory


def _run(case: Case, root: Path) -> Result:
    d = Path(tempfile.mkdtemp(prefix=case.name + "-", dir=root))
    work, cache, results = d / "in", d / "cache", d / "results"
    for x in (work, cache, results):
        x.mkdir()
    if case.path is not None:
        target = case.path.relative_to(paths.REPO_ROOT)
    else:
        target = case.build(work)
    env = {**os.environ, "HARNESS_CACHE_DIR": str(cache), "HARNESS_RESULTS_DIR": str(results),
           "XDG_CACHE_HOME": str(cache / "xdg"), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [*case.wrap(), sys.executable, "-m", "harness", "plan", str(target)]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=paths.REPO_ROOT, env=env, capture_output=True, text=True,
                           errors="replace", timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
        code, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        code, out, err = None, str(e.stdout or ""), str(e.stderr or "")
    seconds = time.monotonic() - t0
    leftovers = [str(p.relative_to(d)) for x in (cache, results) for p in x.rglob("*")]
    return Result(str(target), code, out, err, seconds, leftovers)


class _Pool:
    """Runs the selected cases' subprocesses ahead, a core each; a test waits for its own."""

    def __init__(self, names: list[str], root: Path):
        self.names, self.root = names, root
        self.pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
        self.futures: dict[str, Future] = {}
        self.lock = threading.Lock()

    def result(self, case: Case) -> Result:
        with self.lock:
            if not self.futures:
                for name in self.names:
                    c = CASES[name]
                    try:
                        c.wrap()
                    except pytest.skip.Exception:
                        continue
                    self.futures[name] = self.pool.submit(_run, c, self.root)
            fut = self.futures.get(case.name) or self.pool.submit(_run, case, self.root)
        return fut.result()


@pytest.fixture(scope="module")
def corpus_pool(request, tmp_path_factory):
    selected = [item.callspec.params["name"] for item in request.session.items
                if getattr(item, "callspec", None) and item.originalname == "test_corpus_case"]
    pool = _Pool(selected or list(CASES), tmp_path_factory.mktemp("corpus"))
    yield pool
    pool.pool.shutdown(wait=True)
    for s in _SOCKETS:
        s.close()


def test_corpus_is_big_enough():
    assert len(CASES) >= 60
    static = [c for c in CASES.values() if c.path is not None]
    assert all(c.expects for c in static), [c.name for c in static if not c.expects]


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_case(name, corpus_pool):
    case = CASES[name]
    case.wrap()                                    # may skip
    r = corpus_pool.result(case)
    everything = r.stdout + r.stderr
    assert r.code is not None, f"no answer within {TIMEOUT_S} s:\n{everything}"
    assert "Traceback" not in everything, everything
    assert r.code == 2, everything
    assert r.seconds < TIMEOUT_S
    assert r.stdout == "", r.stdout
    assert r.leftovers == [], f"created in the cache or results directory: {r.leftovers}"
    lines = r.stderr.splitlines()
    assert len(lines) == len(case.expects), r.stderr
    prefix = f"error: {r.shown}"
    for line, expect in zip(lines, case.expects, strict=True):
        assert line.startswith(prefix), line
        rest = line[len(prefix):]
        assert LOCATED.match(rest), f"not a located error line: {line}"
        assert re.match(expect, rest), f"{line}\n  expected after the file name: {expect}"


# --- the same corpus without libyaml --------------------------------------------------------------------

def _issues(path: Path) -> list[tuple[int, int, str]]:
    try:
        load_experiment(path)
    except SpecError as e:
        return [(i.line, i.column, i.field) for i in e.issues]
    raise AssertionError(f"{path} loaded")


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="already pure Python")
def test_pure_python_parser_locates_the_same(monkeypatch):
    """Where libyaml is missing, PyYAML's own parser gives the same positions and fields for every
    static case, and stays fast on the bombs."""
    static = [c.path for c in CASES.values() if c.path is not None]
    expected = {p: _issues(p) for p in static}
    monkeypatch.setattr(yamlsrc, "_EventLoader", yaml.SafeLoader)
    for p in static:
        t0 = time.monotonic()
        assert _issues(p) == expected[p], p.name
        assert time.monotonic() - t0 < TIMEOUT_S / 2, p.name

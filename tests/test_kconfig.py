"""Fragment parsing, Kconfig expression evaluation and the dropped-symbol explanation,
on a small synthetic Kconfig tree (the real tree is exercised in test_kernel_build.py)."""

import pytest

from harness.errors import HarnessError
from harness.kernel import kconfig
from harness.kernel.kconfig import Request, evaluate


def test_parse_fragment_set_unset_and_comments():
    reqs = kconfig.parse_fragment("# comment\nCONFIG_A=y\n\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\n", "f.config")
    assert [(r.symbol, r.value, r.origin) for r in reqs] == [
        ("A", "y", "f.config:2"), ("B", "n", "f.config:4"), ("C", '"x y"', "f.config:5")]
    assert reqs[1].line() == "# CONFIG_B is not set"


def test_parse_fragment_rejects_garbage():
    with pytest.raises(HarnessError, match=r"f.config:2: not a config line"):
        kconfig.parse_fragment("CONFIG_A=y\nCONFIG_B y\n", "f.config")


@pytest.mark.parametrize("expr,expected", [
    ("A", 2), ("B", 0), ("M", 1), ("!A", 0), ("!B", 2), ("A && B", 0), ("A || B", 2),
    ("A && M", 1), ("!(A && B)", 2), ("N >= 116", 2), ("N < 100", 0), ('S = "abc"', 2),
    ('S != "abc"', 0), ("A && (B || !C)", 2), ("$(cc-option,-foo)", 2), ("", 2), ("UNKNOWN", 0),
])
def test_evaluate(expr, expected):
    values = {"A": "y", "M": "m", "N": "124", "S": '"abc"'}
    assert evaluate(expr, {k: v.strip('"') for k, v in values.items()}) == expected


def test_unmet_later_fragment_wins_and_unset_matches_absent():
    reqs = [Request("A", "y", "a:1"), Request("A", "n", "b:1"), Request("B", "n", "b:2"), Request("C", "y", "b:3")]
    bad = kconfig.unmet(reqs, {"C": "y"})
    assert bad == []
    bad = kconfig.unmet(reqs, {"A": "y"})
    assert [r.symbol for r in bad] == ["A", "C"]


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "arch" / "arm64").mkdir(parents=True)
    (tmp_path / "arch" / "x86").mkdir(parents=True)
    (tmp_path / "lib" / "Kconfig.debug").write_text("\n".join([
        'menu "Debugging"', "\tdepends on DEBUG_KERNEL", "", "if DEBUG_INFO", "",
        "config DEBUG_INFO_BTF", '\tbool "BTF"', "\tdepends on !DEBUG_INFO_SPLIT && !DEBUG_INFO_REDUCED",
        "\tdepends on BPF_SYSCALL", "\thelp", "\t  depends on NOT_A_REAL_DEPENDENCY (help text is skipped)",
        "", "endif", "", "endmenu", ""]))
    (tmp_path / "arch" / "x86" / "Kconfig").write_text("config ONLY_X86\n\tbool\n\tdepends on X86_THING\n")
    (tmp_path / "arch" / "arm64" / "Kconfig").write_text("config ONLY_X86\n\tbool\n\tdepends on ARM_THING\n")
    return tmp_path


def test_scan_collects_enclosing_conditions(tree):
    defs = kconfig.scan_kconfig(tree, "arm64")
    (d,) = defs["DEBUG_INFO_BTF"]
    assert d.file == "lib/Kconfig.debug" and d.line == 6
    assert d.depends == ("DEBUG_KERNEL", "DEBUG_INFO", "!DEBUG_INFO_SPLIT && !DEBUG_INFO_REDUCED", "BPF_SYSCALL")
    assert [x.depends for x in defs["ONLY_X86"]] == [("ARM_THING",)]   # other arches' files skipped


def test_explain_names_the_unmet_dependency_and_its_value(tree):
    defs = kconfig.scan_kconfig(tree, "arm64")
    final = {"DEBUG_KERNEL": "y", "DEBUG_INFO": "y", "DEBUG_INFO_REDUCED": "y", "BPF_SYSCALL": "y"}
    msg = kconfig.explain(Request("DEBUG_INFO_BTF", "y", "tracing.config:15"), final, defs)
    assert "tracing.config:15 asks for `CONFIG_DEBUG_INFO_BTF=y`" in msg
    assert "`depends on !DEBUG_INFO_SPLIT && !DEBUG_INFO_REDUCED` (DEBUG_INFO_REDUCED=y, DEBUG_INFO_SPLIT=n)" in msg
    assert "lib/Kconfig.debug:6" in msg
    assert "BPF_SYSCALL" not in msg          # met dependencies are not blamed


def test_explain_unknown_symbol(tree):
    msg = kconfig.explain(Request("AGENT_LATENCY", "y", "x:1"), {}, kconfig.scan_kconfig(tree, "x86"))
    assert "no Kconfig in this tree defines it" in msg


def test_build_progress_follows_make_stages():
    from rich.console import Console

    from harness.kernel.progress import BuildProgress

    p = BuildProgress("t", console=Console(file=open("/dev/null", "w")), interval=1e9)
    seen = []
    for line in ["  CC      kernel/fork.o", "  GZIP    kernel/config_data.gz", "  LD      vmlinux.o",
                 "  BTF     .btf.vmlinux.bin.o", "  LD      vmlinux", "  AS      arch/x86/boot/header.o",
                 "Kernel: arch/x86/boot/bzImage is ready  (#1)"]:
        p.feed(line + "\n")
        seen.append(p.stage)
    assert seen == ["compile", "compile", "link", "BTF", "link", "image", "done"]
    assert p.objects == 2   # CC and AS count as steps; GZIP, LD and BTF do not

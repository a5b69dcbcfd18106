"""Where a cell runs when it is not a VM: `machine.target` and the targets inventory.

`machine.target` is `ssh://[user@]host[:port]` or the name of an entry in the inventory, a YAML
file read like an experiment (bounded, no tags or aliases beyond the limits, positions kept for
errors). The inventory is the first that exists of:

    $HARNESS_TARGETS                              (a file; set but missing is an error)
    <the experiment's directory>/targets.yaml
    $XDG_CONFIG_HOME/agent-latency/targets.yaml   (~/.config/agent-latency/targets.yaml)

Neither file holds secrets: keys, agents and known_hosts come from the user's SSH configuration
(or an `ssh_config` file the entry names), and a password in a URL is refused. Everything in here
that later reaches a remote shell (the user, the host, the remote work directory) is checked
against a strict pattern now, so the backend never quotes anything it has not validated.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError, model_validator

from harness.errors import SpecError
from harness.spec.model import ARCHES, CMDLINE_ITEM_MAX, CMDLINE_TOKEN, SAFE_PATH, Arch, Name, Strict, _name

INVENTORY_FILE = "targets.yaml"
ENV_INVENTORY = "HARNESS_TARGETS"
SCHEME = "ssh://"
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\]")
DEFAULT_WORKDIR = "/var/tmp/agent-latency"


class TargetError(ValueError):
    pass


@dataclass(frozen=True)
class Address:
    """A parsed ssh:// address. `user`/`port` None: the SSH configuration's (or ssh's) default."""

    host: str
    user: str | None = None
    port: int | None = None

    @property
    def url(self) -> str:
        return SCHEME + (f"{self.user}@" if self.user else "") + self.host + (f":{self.port}" if self.port else "")


def parse_url(text: str) -> Address:
    """ssh://[user@]host[:port] -> Address; anything else (a password, a path, a query, odd
    characters) is a TargetError that says what is wrong."""
    if not text.startswith(SCHEME):
        raise TargetError(f"{text[:40]!r} is not an ssh:// address")
    rest = text[len(SCHEME):]
    if rest.endswith("/"):
        rest = rest[:-1]
    if any(c in rest for c in "/?#"):
        raise TargetError("an ssh:// target is ssh://[user@]host[:port]: no path, query or fragment")
    user = None
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
        if ":" in user:
            raise TargetError("the target holds a password (user:password@): YAML never holds passwords; use a "
                              "key (ssh-agent, or IdentityFile in your ~/.ssh/config)")
        if not _USER.fullmatch(user):
            raise TargetError(f"user {user[:40]!r} is not a plain user name (a-z, 0-9, _ . -)")
    port = None
    m = re.fullmatch(r"(.*?)(?::([0-9]{1,5}))?", rest)
    host, port_text = m.group(1), m.group(2)
    if port_text is not None:
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise TargetError(f"port {port} is not between 1 and 65535")
    if not _HOST.fullmatch(host):
        raise TargetError(f"host {host[:60]!r} is not a host name, IPv4 or [IPv6] address")
    return Address(host, user, port)


def _url(v: str) -> str:
    try:
        parse_url(v)
    except TargetError as e:
        raise ValueError(str(e)) from None
    return v


def target_field(v: str) -> str:
    """machine.target: an ssh:// address or an inventory name (resolved by the loader)."""
    if v.startswith(SCHEME) or "://" in v or "@" in v:
        if not v.startswith(SCHEME):
            raise ValueError(f"{v[:40]!r}: only ssh:// targets are supported")
        return _url(v)
    return _name(v)


def _abs_safe(v: str) -> str:
    if not v.startswith("/") or not SAFE_PATH.fullmatch(v) or "/../" in v + "/" or len(v) > 200:
        raise ValueError(f"{v[:40]!r} is not an absolute plain path (letters, digits and _ . / + - only, no ..)")
    return v


def _boot_token(v: str) -> str:
    """One parameter of a target's own boot command line (root=, console=, panic= are its to say)."""
    if len(v) > CMDLINE_ITEM_MAX or not CMDLINE_TOKEN.fullmatch(v):
        raise ValueError(f"{v[:40]!r} is not a single kernel parameter token (letters, digits and _ . / + : , = - "
                         "only, the first a letter or digit)")
    if v.startswith("harness."):
        raise ValueError("harness.* parameters are the harness's own (the deploy marker)")
    return v


def _local_path(v: str) -> str:
    if "\x00" in v or len(v) > 1024:
        raise ValueError("not a path")
    return v


class TargetEntry(Strict):
    """One machine of the inventory."""

    url: Annotated[str, AfterValidator(_url)] = Field(description="ssh://[user@]host[:port]; host may be a Host "
                                                      "alias of the SSH configuration")
    arch: Arch = Field("x86_64", description="what `uname -m` must say (checked at every connection)")
    workdir: Annotated[str, AfterValidator(_abs_safe)] = Field(
        DEFAULT_WORKDIR, description="where the harness puts a cell's files on the target (removed after)")
    ssh_config: Annotated[str, AfterValidator(_local_path)] | None = Field(
        None, description="an SSH client configuration file to use instead of ~/.ssh/config (keys, "
                          "known_hosts, ports)")
    energy: Literal["auto", "rapl", "hwmon", "none"] = Field(
        "auto", description="the energy source to record: auto = RAPL if present, else hwmon, else none")
    deploy: Literal["none", "kexec"] = Field(
        "none", description="none: measure the kernel the target runs; kexec: boot each cell's kernel on it "
                            "(harness/target/deploy.py), and the target's own again after the run")
    cmdline: list[Annotated[str, AfterValidator(_boot_token)]] = Field(
        [], max_length=32, description="deploy: what a deployed kernel's command line needs on this machine "
                                       "(root=, console=, panic=...); the cell's own parameters follow")
    deploy_timeout_s: int = Field(600, ge=5, le=3600, description="deploy: how long the target may take from "
                                  "the kexec to answering SSH on the new kernel (or on its fallback)")
    restore: Literal["reboot", "none"] = Field(
        "reboot", description="deploy: after the run, reboot into the target's own kernel, or leave the last "
                              "cell's kernel running")
    clock: Literal["realtime", "virtual"] = Field(
        "realtime", description="virtual: the target is a QEMU guest under -icount (the SSH test box), so its "
                                "figures are in virtual time, as a local VM's")
    connect_timeout_s: int = Field(20, ge=1, le=600)
    status_poll_s: float = Field(60.0, ge=0.5, le=3600, description="how often the host looks at the run's "
                                 "status (progress) while it runs; each look is an SSH round trip the target serves, "
                                 "so a longer interval disturbs the loop less. In between, the host waits on the "
                                 "run's lock (util-linux flock), so the run's end is seen at once whatever this is; "
                                 "a target without flock is polled every 2 s")
    reconnect_s: int = Field(120, ge=0, le=3600, description="how long a lost connection is retried mid-run "
                             "before the cell fails (the run on the target goes on meanwhile)")


    @model_validator(mode="after")
    def _deploy_needs_a_root(self) -> TargetEntry:
        if self.deploy != "none" and not any(t.startswith("root=") for t in self.cmdline):
            raise ValueError("deploy: kexec needs the deployed kernel's command line in `cmdline`, with its "
                             "root= at least (the harness's kernels have no initrd)")
        return self


class Inventory(Strict):
    targets: dict[Name, TargetEntry] = Field({}, max_length=1000)
    fleets: dict[Name, Annotated[list[Name], Field(min_length=1, max_length=256)]] = Field(
        {}, description="a name for several targets; cells with that target spread over them")


@dataclass(frozen=True)
class Target:
    """A resolved target: what the SSH backend needs."""

    name: str                      # the inventory name, or the URL itself
    address: Address
    entry: TargetEntry
    inventory: Path | None = None

    @property
    def label(self) -> str:
        return self.name


def inventory_path(experiment_dir: Path) -> Path | None:
    """The inventory in effect for an experiment in `experiment_dir` (None: there is none)."""
    env = os.environ.get(ENV_INVENTORY)
    if env:
        return Path(env).expanduser()
    for p in (experiment_dir / INVENTORY_FILE,
              Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "agent-latency" / INVENTORY_FILE):
        if p.is_file():
            return p
    return None


def load_inventory(path: Path) -> Inventory:
    """Read and validate an inventory; problems are SpecErrors located in the inventory file."""
    from harness.spec.loader import _schema_issues
    from harness.spec.yamlsrc import load_yaml
    data, smap = load_yaml(path, display=str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError([smap.issue((), "a targets inventory is a mapping with `targets:` (and `fleets:`)")])
    try:
        inv = Inventory.model_validate(data)
    except ValidationError as e:
        raise SpecError(_schema_issues(e, smap.issue, smap.positions.__contains__)) from None
    issues = []
    for fname, members in inv.fleets.items():
        for i, m in enumerate(members):
            if m not in inv.targets:
                issues.append(smap.issue(("fleets", fname, i), f"no target {m!r} in this inventory"))
            elif m in members[:i]:
                issues.append(smap.issue(("fleets", fname, i), f"target {m!r} is listed twice"))
        if fname in inv.targets:
            issues.append(smap.issue(("fleets", fname), f"{fname!r} names both a target and a fleet"))
    if issues:
        raise SpecError(issues)
    return inv


def resolve(value: str, arch: str, experiment_dir: Path) -> list[Target]:
    """machine.target -> the targets it names (one, or a fleet's members). TargetError says why not."""
    if value.startswith(SCHEME):
        return [Target(value, parse_url(value), TargetEntry(url=value, arch=arch))]
    path = inventory_path(experiment_dir)
    if path is None:
        raise TargetError(f"target {value!r} is not an ssh:// address and there is no targets inventory "
                          f"(${ENV_INVENTORY}, {experiment_dir / INVENTORY_FILE}, "
                          f"~/.config/agent-latency/{INVENTORY_FILE})")
    if not path.is_file():
        raise TargetError(f"the targets inventory {path} (${ENV_INVENTORY}) does not exist")
    inv = load_inventory(path)
    names = inv.fleets.get(value) or ([value] if value in inv.targets else None)
    if names is None:
        known = sorted(inv.targets) + sorted(inv.fleets)
        raise TargetError(f"no target or fleet {value!r} in {path} (it has: {', '.join(known) or 'none'})")
    kinds = {(inv.targets[n].deploy, inv.targets[n].clock) for n in names}
    if len(kinds) > 1:
        raise TargetError(f"fleet {value!r} mixes targets that deploy kernels or keep virtual time with ones "
                          f"that do not ({path}): a fleet's members run the same cells alike")
    out = []
    for n in names:
        e = inv.targets[n]
        if e.arch != arch:
            raise TargetError(f"target {n!r} is {e.arch} ({path}), the cell is {arch}")
        out.append(Target(n, parse_url(e.url), e, path))
    return out


__all__ = ["ARCHES", "Address", "Inventory", "Target", "TargetEntry", "TargetError", "inventory_path",
           "load_inventory", "parse_url", "resolve", "target_field"]

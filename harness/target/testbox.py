"""A stand-in for a real board in the tests: a QEMU x86_64 guest with a Debian 12 rootfs running a
real sshd, reached on a port forwarded to 127.0.0.1.

The rootfs (systemd, openssh-server, kexec-tools, bpftrace; no recommends) is built once with
mmdebstrap and cached under the cache's `rootfs/` as an ext4 image plus the Debian kernel and
initrd it ships (the box boots those; a harness kernel built with kernel/configs/testbox.config
is kexec'd into it for kernel deploy, harness/target/deploy.py, and a reset brings Debian's back). It
holds no key: every session makes a throwaway ed25519 client key and a throwaway host key, writes
them into its own copy of the image (debugfs: no mount, no loop device), and a known_hosts and an
ssh_config of its own, so nothing under the real user's ~/.ssh is read or written and the client
knows the host key before the first connection (no trust on first use).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from harness import procs
from harness.errors import HarnessError
from harness.guest.rootfs import MIRROR, SECURITY, RootfsProgress, _run_logged, _version
from harness.guest.vm import X86_TCG_CPU  # the local VMs' CPU: a kernel in the box executes as in a VM
from harness.kernel.cache import BuildCache, sha256_json

RELEASE = "bookworm"
PACKAGES = ("systemd-sysv", "udev", "dbus", "linux-image-amd64", "initramfs-tools", "openssh-server",
            "kexec-tools", "iproute2", "procps", "kmod", "util-linux", "bpftrace")
IMAGE_MB = 3072
RECIPE = 1
HOST = "127.0.0.1"
BOX_USER = "root"

# Run inside the new rootfs (mmdebstrap --customize-hook, "$1" is the root): a static address on
# QEMU's user network, sshd by key only, no host keys (each session brings its own), no kexec on
# reboot, a quiet boot, and systemd petting the box's watchdog (i6300esb) and arming it across a
# kexec: the fallback for a deployed kernel that does not boot (WATCHDOG below). Fixed text:
# nothing of the session's goes into the cached image.
_CUSTOMIZE = r"""
set -e
R="$1"
echo testbox > "$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 testbox\n' > "$R/etc/hosts"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' > "$R/etc/fstab"
mkdir -p "$R/etc/systemd/network"
printf '[Match]\nName=en* eth*\n\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\nDNS=10.0.2.3\n' \
	> "$R/etc/systemd/network/10-qemu.network"
systemctl --root="$R" enable systemd-networkd.service
rm -f "$R"/etc/ssh/ssh_host_*
printf 'PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nHostKey /etc/ssh/ssh_host_ed25519_key\nUseDNS no\n' \
	> "$R/etc/ssh/sshd_config.d/testbox.conf"
printf 'LOAD_KEXEC=false\n' > "$R/etc/default/kexec"
mkdir -p "$R/etc/systemd/system.conf.d"
printf '[Manager]\nRuntimeWatchdogSec=60s\nKExecWatchdogSec=10min\nRebootWatchdogSec=10min\n' \
	> "$R/etc/systemd/system.conf.d/harness-watchdog.conf"
mkdir -p "$R/root/.ssh" && chmod 700 "$R/root/.ssh"
passwd --root "$R" -l root
systemctl --root="$R" mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
	systemd-timesyncd.service getty@tty1.service
"""  # noqa: E501


# The box's own boot (its Debian kernel, from QEMU's -kernel: what a reset comes back to). The
# watchdog is locked once armed (nowayout), so a deployed kernel's driver cannot stop it: a kernel
# that hangs, or whose userspace never pets it, is reset back into this boot.
BOX_CMDLINE = "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=1 panic=-1 i6300esb.nowayout=1"
# What a harness kernel deployed into the box boots with (the inventory entry's `cmdline`): the
# box's root and console, a reboot on panic (the fallback), and a heartbeat long enough to reach
# systemd under TCG.
DEPLOY_CMDLINE = ("root=/dev/vda", "rw", "console=ttyS0", "panic=-1", "i6300esb.nowayout=1",
                  "i6300esb.heartbeat=600")


@dataclass(frozen=True)
class BaseImage:
    """The cached, key-less box: an ext4 image and the kernel and initrd to boot it with."""

    dir: Path

    @property
    def image(self) -> Path:
        return self.dir / "rootfs.ext4"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"


def base_key() -> str:
    return sha256_json({"recipe": RECIPE, "release": RELEASE, "packages": sorted(PACKAGES), "hook": _CUSTOMIZE,
                        "image_mb": IMAGE_MB, "mmdebstrap": _version("mmdebstrap")})[:16]


def ensure_base(cache: BuildCache, console: Console | None = None) -> BaseImage:
    """The cached box image, built on first use (mmdebstrap, a few minutes; progress shown)."""
    key = base_key()
    out = BaseImage(cache.dir("rootfs") / f"sshbox-x86_64-{key}")
    with cache.lock(f"rootfs-sshbox-{key}"):
        if (out.dir / ".harness-complete").is_file():
            return out
        for tool in ("mmdebstrap", "mke2fs"):
            if shutil.which(tool) is None:
                raise HarnessError(f"{tool} not found: install it (bash scripts/setup.sh)")
        cache.require_free(6.0, "building the SSH test box image")
        tmp = out.dir.with_name(out.dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tree = tmp / "tree"
        tmp.mkdir(parents=True)
        log_path = cache.dir("logs") / f"rootfs-sshbox-{key}.log"
        sources = (f"deb {MIRROR} {RELEASE} main\ndeb {MIRROR} {RELEASE}-updates main\n"
                   f"deb {SECURITY} {RELEASE}-security main\n")
        cmd = ["mmdebstrap", "--arch=amd64", "--variant=apt", f"--include={','.join(PACKAGES)}",
               "--aptopt=APT::Install-Recommends \"false\"",
               *[f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale")],
               f"--customize-hook={_CUSTOMIZE}", RELEASE, str(tree), "-"]
        with open(log_path, "w") as fh, RootfsProgress("sshbox-x86_64", console) as progress:
            rc = _run_logged(cmd, sources, fh, progress)
        if rc != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
            raise HarnessError(f"building the SSH test box failed; log: {log_path}\n{tail}")
        kernels = sorted((tree / "boot").glob("vmlinuz-*"))
        initrds = sorted((tree / "boot").glob("initrd.img-*"))
        if not kernels or not initrds:
            shutil.rmtree(tmp, ignore_errors=True)
            raise HarnessError(f"the SSH test box has no kernel or initrd under /boot; log: {log_path}")
        base = BaseImage(tmp)
        shutil.copyfile(kernels[-1], base.kernel)
        shutil.copyfile(initrds[-1], base.initrd)
        _run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "testbox", "-d", str(tree), str(base.image), f"{IMAGE_MB}M"],
             "making the test box's ext4 image")
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(tree)], check=False)
        (tmp / ".harness-complete").write_text(" ".join(cmd[:4]) + "\n")
        tmp.rename(out.dir)
    return out


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise HarnessError(f"{what} failed ({cmd[0]} exit {r.returncode}): {r.stderr.strip()[-400:]}")
    return r


def free_port() -> int:
    """A TCP port free on the loopback now (QEMU binds it a moment later)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Keys:
    """A session's throwaway keys and the client files that trust exactly this box."""

    dir: Path
    port: int

    @property
    def client_key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    def target(self, alias: str = "testbox") -> str:
        return alias

    def wrong_known_hosts(self) -> Path:
        """A known_hosts that names another key for this box: a host-key mismatch."""
        other = self.dir / "other_host_key"
        if not other.exists():
            _keygen(other, "other")
        path = self.dir / "known_hosts.wrong"
        path.write_text(f"[{HOST}]:{self.port} {_pub(other)}\n")
        return path


def _keygen(path: Path, comment: str) -> None:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], "ssh-keygen")


def _pub(key: Path) -> str:
    return " ".join(Path(f"{key}.pub").read_text().split()[:2])


def make_keys(d: Path, port: int) -> Keys:
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    k = Keys(d, port)
    _keygen(k.client_key, "harness-testbox-client")
    _keygen(k.host_key, "harness-testbox-host")
    k.known_hosts.write_text(f"[{HOST}]:{port} {_pub(k.host_key)}\n")
    k.ssh_config.write_text(
        f"Host testbox\n  HostName {HOST}\n  Port {port}\n  User {BOX_USER}\n  IdentityFile {k.client_key}\n"
        f"  IdentitiesOnly yes\n  UserKnownHostsFile {k.known_hosts}\n  StrictHostKeyChecking yes\n")
    return k


def session_image(base: BaseImage, keys: Keys, dest: Path) -> Path:
    """The session's copy of the box image with its keys written in (root-owned, mode 0600/0644)."""
    _run(["cp", "--sparse=always", str(base.image), str(dest)], "copying the test box image")
    staged = keys.dir / "stage"
    staged.mkdir(exist_ok=True)
    auth = staged / "authorized_keys"
    auth.write_text(_pub(keys.client_key) + "\n")
    os.chmod(auth, 0o600)
    shutil.copyfile(keys.host_key, staged / "hostkey")
    os.chmod(staged / "hostkey", 0o600)
    shutil.copyfile(f"{keys.host_key}.pub", staged / "hostkey.pub")
    os.chmod(staged / "hostkey.pub", 0o644)
    cmds = "\n".join([
        "cd /root/.ssh", f"write {auth} authorized_keys",
        "cd /etc/ssh", f"write {staged / 'hostkey'} ssh_host_ed25519_key",
        f"write {staged / 'hostkey.pub'} ssh_host_ed25519_key.pub",
        "set_inode_field /root/.ssh/authorized_keys mode 0100600",
        "set_inode_field /etc/ssh/ssh_host_ed25519_key mode 0100600",
        "set_inode_field /etc/ssh/ssh_host_ed25519_key.pub mode 0100644",
        *[f"set_inode_field {p} {f} 0" for p in ("/root/.ssh/authorized_keys", "/etc/ssh/ssh_host_ed25519_key",
                                                  "/etc/ssh/ssh_host_ed25519_key.pub") for f in ("uid", "gid")],
    ]) + "\n"
    _run(["debugfs", "-w", "-f", "-", str(dest)], "writing the session's keys into the box image", input=cmds)
    check = _run(["debugfs", "-R", "cat /root/.ssh/authorized_keys", str(dest)], "reading the keys back")
    if _pub(keys.client_key) not in check.stdout:
        raise HarnessError("the session's client key did not land in the box image")
    return dest


def wait_for_ssh(port: int, timeout_s: float, alive=lambda: True) -> float:
    """Seconds until the box's sshd sends its banner (QEMU's user network accepts a connection
    before the guest listens, so a connect alone proves nothing)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if not alive():
            raise HarnessError("the test box's QEMU exited before sshd came up")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=5) as s:
            s.settimeout(10)
            if s.recv(64).startswith(b"SSH-2.0-"):
                return time.monotonic() - t0
        time.sleep(2)
    raise HarnessError(f"the test box's sshd did not answer on {HOST}:{port} within {timeout_s:.0f} s")


@dataclass
class Box:
    """A running test box: where to reach it and how."""

    keys: Keys
    console: Path
    boot_s: float
    proc: subprocess.Popen
    icount: bool = False

    @property
    def port(self) -> int:
        return self.keys.port


def qemu_command(base: BaseImage, image: Path, port: int, console: Path, cpus: int = 2, memory: str = "1G",
                 kvm: bool = False, icount: bool = False, icount_shift: int = 0) -> list[str]:
    """The box's QEMU. A reset (a reboot, a panic, the watchdog) boots the Debian kernel again:
    that is the fallback a deployed kernel relies on. `icount`: QEMU virtual time, as a local VM
    under TCG runs (harness/guest/vm.py), on the local VMs' CPU model, so the box's figures compare
    with a local run's. Under
    -icount the box's own kernel (Debian's 6.1) hangs bringing up its second CPU here (seen
    2026-12-03, q35 and pc alike), so it boots on one (maxcpus=1); the others wait in their reset
    state, and a kernel deployed by kexec brings them all up itself."""
    cmd = ["qemu-system-x86_64", "-machine", "q35" + (",accel=kvm" if kvm else ",accel=tcg"), "-smp", str(cpus),
           "-m", memory, "-cpu", "host" if kvm else X86_TCG_CPU if icount else "max", "-display", "none",
           "-kernel", str(base.kernel), "-initrd", str(base.initrd),
           "-append", BOX_CMDLINE + (" maxcpus=1" if icount and not kvm else ""),
           "-drive", f"file={image},format=raw,if=virtio,cache=unsafe",
           "-netdev", f"user,id=n0,hostfwd=tcp:{HOST}:{port}-:22", "-device", "virtio-net-pci,netdev=n0",
           "-device", "i6300esb", "-serial", f"file:{console}", "-monitor", "none"]
    if icount and not kvm:
        cmd += ["-icount", f"shift={icount_shift},sleep=on"]
    return cmd


def inventory_entry(box: Box, deploy: bool = True, cmdline: tuple[str, ...] = DEPLOY_CMDLINE,
                    **extra: object) -> dict:
    """The box as a targets inventory entry (`targets: {testbox: ...}`): its session's ssh_config,
    kernel deploy by kexec with the box's boot line, and virtual time when it runs under -icount."""
    entry: dict = {"url": "ssh://testbox", "ssh_config": str(box.keys.ssh_config), "connect_timeout_s": 20,
                   "reconnect_s": 120}
    if deploy:
        entry.update(deploy="kexec", cmdline=list(cmdline), deploy_timeout_s=900)
    if box.icount:
        entry["clock"] = "virtual"
    entry.update(extra)
    return entry


@contextlib.contextmanager
def running_box(cache: BuildCache, workdir: Path | None = None, boot_timeout_s: float = 900,
                console: Console | None = None, icount: bool = False, cpus: int = 2,
                memory: str = "1G", icount_shift: int = 0) -> Iterator[Box]:
    """Build (once) and boot the test box; yields it with its throwaway keys; QEMU is gone after."""
    base = ensure_base(cache, console)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sshbox-", dir=cache.dir("tmp"))))
        port = free_port()
        keys = make_keys(workdir / "keys", port)
        image = session_image(base, keys, workdir / "disk.ext4")
        log = workdir / "console.log"
        cmd = qemu_command(base, image, port, log, cpus=cpus, memory=memory, icount=icount,
                           icount_shift=icount_shift)
        out = open(workdir / "qemu.out", "w")
        stack.callback(out.close)
        proc = stack.enter_context(procs.spawn_group(["nice", "-n", "10", *cmd], stdout=out,
                                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        boot_s = wait_for_ssh(port, boot_timeout_s, alive=lambda: proc.poll() is None)
        yield Box(keys, log, boot_s, proc, icount)

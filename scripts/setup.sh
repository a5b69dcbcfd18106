#!/usr/bin/env bash
# One-shot, idempotent machine setup: Debian packages (never recommends) and the
# harness Python package with its dependencies. Safe to re-run.
#
#   bash scripts/setup.sh            # everything
#   bash scripts/setup.sh --no-apt   # Python side only (no root needed)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

APT_PACKAGES=(
  # kernel source and build toolchain (x86_64 native, arm64 cross)
  linux-source-6.12 build-essential bc bison flex libelf-dev libssl-dev dwarves
  cpio kmod rsync xz-utils zstd ccache git gcc-aarch64-linux-gnu libc6-dev-arm64-cross
  # guests: QEMU (x86_64 + arm64 system emulation), udev for virtme-ng's virtio-serial
  qemu-system-x86 qemu-system-arm qemu-utils udev busybox-static
  # probes in the x86_64 guest run the host's bpftrace over the 9p root
  bpftrace
  # Python with pip for the harness itself (a pyenv or venv python works as well)
  python3 python3-pip
  # arm64 root filesystem
  mmdebstrap arch-test qemu-user-static binfmt-support
  # headless browser: the HTML report's screenshot and console test
  chromium
  # sched_ext schedulers (kernel fragment sched-ext): BPF objects need clang >= 16; the loaders libelf and zlib
  clang-16 llvm-16 zlib1g-dev
  # arm64's sched_ext loaders are linked statically (the arm64 root filesystem has no libelf):
  # Debian's arm64 archives through multiarch (the arm64 dpkg architecture is added below; apt
  # keeps the host's libelf1, zlib1g and libzstd1 at the same versions as theirs)
  libelf-dev:arm64 zlib1g-dev:arm64 libzstd-dev:arm64
)

want_apt=1
[[ ${1:-} == --no-apt ]] && want_apt=0

if (( want_apt )); then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if (( ${#missing[@]} )); then
    sudo=""; (( EUID == 0 )) || sudo="sudo"
    if [[ $(dpkg --print-architecture) != arm64 ]] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
      echo "setup: adding the dpkg architecture arm64 (multiarch: arm64's static libraries)"
      $sudo dpkg --add-architecture arm64
    fi
    echo "setup: installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "setup: Debian packages already installed"
  fi
fi

py=${PYTHON:-python3}
pip_flags=()
# Debian's system python refuses pip installs (PEP 668); a pyenv/venv python does not.
if "$py" -c 'import sys,sysconfig,os; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"),"EXTERNALLY-MANAGED")) else 1)'; then
  pip_flags+=(--break-system-packages)
fi
echo "setup: installing the harness package ($("$py" --version))"
"$py" -m pip install -q "${pip_flags[@]}" -e "$here[dev]"
echo "setup: done"

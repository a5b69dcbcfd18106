#!/usr/bin/env bash
# One LAVA job run locally by Debian 12's lava-dispatcher on a QEMU device (TCG), the way
# tests/fixtures/lava/ was made (README, "Board farms (LAVA)"):
#
#   bash scripts/lava_local_run.sh [EXPERIMENT] [WORKDIR]
#
# The dispatcher goes into a chroot of its own (mmdebstrap, about 2 minutes and 1.1 GB: it pulls
# 138 packages, mdadm, grub and libvirt among them, that have no business on a build host). The
# device's root filesystem is a copy of the SSH test box's image (harness/target/testbox.py) with
# root's password emptied (LAVA logs in on the serial console) and this harness's workload build
# at /opt/agentloop (the image has no wget or curl; the job checks the build's digest). The
# device dictionary is tests/fixtures/lava/qemu-device.yaml (written by hand: lava-server renders
# it from its device-type templates, and lava-server is not installed). libguestfs, which builds
# the test overlay's disk, is forced to TCG (its KVM start fails under a nested hypervisor).
# Needs root (chroot, bind mounts). Prints the job's test cases and the files read back.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
exp=${1:-$here/tests/fixtures/lava/experiment.yaml}
work=${2:-/var/tmp/agent-latency-lava}
chroot_dir=$work/chroot
data=$chroot_dir/data
py=${PYTHON:-python3}

[ "$(id -u)" = 0 ] || { echo "lava_local_run: needs root (chroot and bind mounts)" >&2; exit 2; }
mkdir -p "$work"
if [ ! -x "$chroot_dir/usr/bin/lava-run" ]; then
	rm -rf "$chroot_dir"
	mmdebstrap --variant=apt --include=lava-dispatcher,linux-image-amd64 bookworm "$chroot_dir" \
		http://deb.debian.org/debian
fi
mkdir -p "$data/out"

# the kernel (built already: python -m harness build EXPERIMENT), the workload, the box image
cd "$here"
"$py" -m harness build "$exp" >/dev/null
read -r kernel workload base < <("$py" - "$exp" <<'EOF'
import json, sys
from harness import paths
from harness.kernel.build import KernelBuilder
from harness.kernel.cache import BuildCache
from harness.runner import Runner
from harness.spec import load_experiment
from harness.target import testbox
from harness.workload import build
cache = BuildCache(paths.cache_dir())
builder = KernelBuilder(cache)
(p,) = Runner(load_experiment(sys.argv[1]), paths.results_dir(), cache=cache, builder=builder).plan()[:1]
built = cache.lookup(builder.request_key(p.request)[0])
meta = json.loads((built / "metadata.json").read_text())
print(built / meta["artifacts"]["image"], build.workload_dir(cache, p.cell.spec.arch) / "agentloop",
      testbox.ensure_base(cache).image)
EOF
)
cp "$kernel" "$data/bzImage"
cp --sparse=always "$base" "$data/rootfs.ext4"
debugfs -R "cat /etc/shadow" "$data/rootfs.ext4" 2>/dev/null | sed 's/^root:[^:]*:/root::/' > "$work/shadow"
for cmd in "rm /etc/shadow" "write $work/shadow /etc/shadow" "sif /etc/shadow mode 0100640" \
	"sif /etc/shadow gid 42" "rm /opt/agentloop" "write $workload /opt/agentloop" "sif /opt/agentloop mode 0100755"; do
	debugfs -w -R "$cmd" "$data/rootfs.ext4" >/dev/null 2>&1 || true
done
cp "$here/tests/fixtures/lava/qemu-device.yaml" "$data/qemu-device.yaml"
"$py" -m harness lava "$exp" -o "$work/jobs" --kernel-url file:///data/bzImage \
	--rootfs-url file:///data/rootfs.ext4 --workload-url http://10.0.2.2:1/agentloop >/dev/null
job=$(ls "$work"/jobs/*.yaml | head -1)
cp "$job" "$data/job.yaml"

for d in proc sys dev dev/pts; do
	mountpoint -q "$chroot_dir/$d" || mount --bind "/$d" "$chroot_dir/$d"
done
trap 'for d in dev/pts dev sys proc; do umount "$chroot_dir/$d" 2>/dev/null || true; done' EXIT
rc=0
chroot "$chroot_dir" env LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg HOME=/root \
	lava-run --device /data/qemu-device.yaml --job-id 1 --output-dir /data/out /data/job.yaml \
	> "$work/lava-run.log" 2>&1 || rc=$?
echo "lava-run exit $rc; log: $work/lava-run.log"
"$py" - "$work/lava-run.log" <<'EOF'
import sys
from harness.target import lava
text = open(sys.argv[1]).read()
print("test cases:", lava.results_from_log(text))
got = lava.files_from_log(text)
print("files read back:", sorted(got.files), "refused:", got.refused)
EOF
exit $rc

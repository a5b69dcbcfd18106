"""arm64 end to end: cross-built kernel, Debian arm64 rootfs, TCG `-M virt`, the agent loop.
Opt-in (`nox -s tests-arm64`): a cold arm64 kernel and rootfs take about 25 minutes here."""

import json

import pytest

from harness import paths
from harness.cli import main

pytestmark = [pytest.mark.kernel, pytest.mark.arm64]


def test_arm64_smoke_run(tmp_path, capsys):
    exp = tmp_path / "smoke-arm64.yaml"
    exp.write_text((paths.EXPERIMENTS_DIR / "smoke.yaml").read_text().replace("arch: [x86_64]", "arch: [arm64]"))
    code = main(["run", str(exp), "--results-dir", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert code == 0, out
    (run_dir,) = (tmp_path / "results").iterdir()
    result = json.loads((run_dir / "arm64-base" / "result.json").read_text())
    assert result["status"] == "ok" and result["stats"]["steps"] == 300
    assert result["accel"] == "tcg" and result["guest_cpu_model"] == "cortex-a57"
    assert result["guest_status"]["kernel"].startswith("6.12.")
    assert result["rootfs"] and "arm64" in result["rootfs"]
    assert result["probes"]["wakeup_latency"]["events"] >= 330   # Debian's arm64 bpftrace in the rootfs

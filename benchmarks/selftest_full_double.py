"""Time `deploykit doctor --selftest --full --evidence DIR` through the TensorRT test double, per API profile
(issue 19: under 60 s for the 10.x and 11.x profiles together on the 2-core development machine).

    python benchmarks/selftest_full_double.py                 # both profiles, the default (full-size) run
    python benchmarks/selftest_full_double.py --profile 11 --json benchmarks/results/selftest_full_double.json

Each run is a fresh process (imports included) with the double installed at the `tensorrt` module boundary
(tests/fakes/tensorrt_double) and a new evidence folder and calibration cache. Wall time is the process's; CPU
seconds its user + system time (less distorted by other work on a shared machine); the per-check seconds come
from the evidence's summary.json. The CPU model and the load average before and after are recorded: shared CPUs
distort timings, so compare figures taken back to back. These are CPU figures of the double, never TensorRT's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BOOT = """
import sys
import pytest
sys.path.insert(0, {root!r})
from tests.fakes.fixtures import install_double
install_double(pytest.MonkeyPatch(), {profile!r})
from deploykit.cli import main
sys.argv = ["deploykit", "doctor", "--selftest", "--full", "--evidence", {evidence!r}]
main()
"""


def run(profile: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="selftest-double-") as tmp:
        evidence = Path(tmp) / "evidence"
        env = {**os.environ, "DEPLOYKIT_CACHE_DIR": str(Path(tmp) / "cache")}
        load_before = os.getloadavg()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", BOOT.format(root=str(ROOT), profile=profile,
                                                                 evidence=str(evidence))],
                              env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        summary = json.loads((evidence / "summary.json").read_text()) if (evidence / "summary.json").is_file() \
            else {}
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-2000:])
    return {"profile": profile, "exit_code": done.returncode, "wall_s": round(wall, 1),
            "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
            "load_before": load_before, "load_after": os.getloadavg(),
            "checks_s": {c["name"]: round(c["seconds"], 1) for c in summary.get("checks", [])},
            "passed": summary.get("passed"), "simulated": summary.get("simulated")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("10", "11"), action="append")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    runs = [run(profile) for profile in args.profile or ("10", "11")]
    from deploykit.environment import cpu_model

    report = {"cpu": cpu_model(), "cores": os.cpu_count(), "runs": runs,
              "total_wall_s": round(sum(r["wall_s"] for r in runs), 1)}
    for r in runs:
        print(f"profile {r['profile']}: exit {r['exit_code']}, {r['wall_s']} s wall, {r['cpu_s']} s CPU, load "
              f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}")
    print(f"total {report['total_wall_s']} s wall on {report['cpu']} ({report['cores']} cores)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

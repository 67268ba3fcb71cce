"""Time the demo's `deploykit deploy` end to end and per step (issue 13 item 6: under 90 s on 2 cores).

    python benchmarks/bench_deploy_time.py                       # one run, fresh out folder and calibration cache
    python benchmarks/bench_deploy_time.py --repeat 2 --json benchmarks/results/deploy_time.json
    python benchmarks/bench_deploy_time.py --profile /tmp/deploy.prof   # cProfile the run in-process

Each run uses a new temporary --out folder and a new DEPLOYKIT_CACHE_DIR, so no step is skipped and no
calibration range is reused from an earlier run: the figure is what a first `deploy` costs. Wall time is the
whole CLI process (imports included), CPU seconds its user + system time (less distorted by other work on a
shared machine than wall time, though OpenMP spin-waits inflate it); the per-step seconds (wall) come from the
run's summary.json. The CPU model is from /proc/cpuinfo, with the load average before and after the run:
shared CPUs distort timings, so compare figures taken back to back.
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
DEMO_ARGS = [
    "deploy", "deeplabv3plus_mobilenetv2",
    "--weights", str(ROOT / "benchmarks/checkpoints/deeplabv3plus_mobilenetv2_small.pt"),
    "--calib-data", str(ROOT / "benchmarks/data/calib"), "--calib-n", "16",
    "--inputs", str(ROOT / "benchmarks/data/heldout"),
    "--accuracy-budget", "pixel_agreement>=0.99", "--backend", "auto",
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def one_run(extra: list[str], profile: str | None) -> dict[str, Any]:
    """One deploy in a fresh out folder and cache; wall seconds, per-step seconds, the INT8 budget record."""
    with tempfile.TemporaryDirectory(prefix="deploy-time-") as tmp:
        out = Path(tmp) / "out"
        env = {**os.environ, "DEPLOYKIT_CACHE_DIR": str(Path(tmp) / "cache"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        head = [sys.executable, "-m", "cProfile", "-o", profile, "-m", "deploykit"] if profile else \
            [sys.executable, "-m", "deploykit"]
        load = os.getloadavg()[0]
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run([*head, *DEMO_ARGS, "--out", str(out), "--json", *extra], env=env,
                              capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        if done.returncode not in (0, 2) or not (out / "summary.json").exists():
            sys.stderr.write(done.stderr[-4000:])
            raise SystemExit(f"deploy failed with exit status {done.returncode}")
        summary = json.loads((out / "summary.json").read_text())
    int8 = next((b for b in summary["builds"] if b.get("precision") == "int8"), {})
    budget = (int8.get("report") or {}).get("budget", {})
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2), "exit": done.returncode,
            "steps": {s["name"]: s["seconds"] for s in summary["steps"]},
            "budget": {k: budget.get(k) for k in ("reached", "kept", "candidates", "evaluations")},
            "parity_passed": summary["parity"]["passed"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", default=None, help="Also write the figures to this file.")
    parser.add_argument("--profile", default=None, help="cProfile output file (single run).")
    parser.add_argument("extra", nargs="*", help="Extra deploy options after --, e.g. -- --threads 2.")
    args = parser.parse_args()
    runs = [one_run(args.extra, args.profile) for _ in range(args.repeat)]
    result = {"cpu": cpu_model(), "cores": os.cpu_count(), "command": " ".join(["deploykit", *DEMO_ARGS]),
              "runs": runs}
    for number, run in enumerate(runs, start=1):
        steps = ", ".join(f"{name} {seconds:.1f}" for name, seconds in run["steps"].items())
        print(f"run {number}: {run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} s CPU (load {run['load_before']} -> "
              f"{run['load_after']}): {steps}; "
              f"INT8 kept {len(run['budget']['kept'] or [])} of {run['budget']['candidates']} "
              f"in {run['budget']['evaluations']} evaluations, reached {run['budget']['reached']}")
    print(f"cpu: {result['cpu']} ({result['cores']} cores)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

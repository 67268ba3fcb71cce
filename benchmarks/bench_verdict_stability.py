"""Do the verdict's speed-ups hold on a busy machine? The demo's deploy timing step, repeated quiet and beside
bursty CPU neighbours, timed the product's way (deploykit.bench.interleave: every contender round-robin in one
run) and the way deploy timed before (each contender alone, in turn), with every run's figures (issue 24).

    python benchmarks/bench_verdict_stability.py --out-dir benchmarks/results              # the full comparison
    python benchmarks/bench_verdict_stability.py --runs 1 --bench-seconds 1 --out-dir /tmp/vs  # a short check

First the demo's deploy builds its artifacts into --deploy-dir (scripts/demo.sh's command, skipped when that
folder already holds its summary.json). Then, --runs times over, for each condition (quiet; beside --neighbours
processes that are busy and idle in turns of 0.2-1.5 s each, seeded) and each way of timing:
- interleaved: PyTorch eager and every artifact in one round-robin run, as `deploy` times them now;
- sequential: each contender timed alone for the same seconds, one after the other, as `deploy` did before;
with deploy's own settings (--bench-seconds per contender after 0.5 s of warm-up each, all cores). Each run's
BenchReport goes through the deploy's own verdict (deploykit.pipeline.verdict.decide, with the deploy's builds
and parity), and its stated speed-ups are recorded with their intervals, next to the INT8 artifact's speed-up
over FP32 and over PyTorch (the figures the verdict states when it ships INT8).

The target: across every run of one way of timing, quiet and busy together, each ratio's largest value is at
most 15% above its smallest. Writes OUT_DIR/NAME.md and NAME.json with every run; the CPU and the machine's load
(1-minute average before and after, other processes' share of the cores) are recorded beside each run. On a
shared machine the "quiet" runs are not quiet: the load columns say how quiet they were.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = "deeplabv3plus_mobilenetv2"
DEMO_WEIGHTS = ROOT / "benchmarks" / "checkpoints" / "deeplabv3plus_mobilenetv2_small.pt"
DEMO_ARGS = ["--weights", str(DEMO_WEIGHTS), "--calib-data", str(ROOT / "benchmarks/data/calib"), "--calib-n", "16",
             "--inputs", str(ROOT / "benchmarks/data/heldout"), "--accuracy-budget", "pixel_agreement>=0.99"]
LIMIT = 1.15  # largest / smallest value of one ratio across all runs of one way of timing
WAYS = ("interleaved", "sequential")


def say(message: object) -> None:
    print(f"[verdict_stability] {message}", file=sys.stderr, flush=True)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per condition and way of timing")
    parser.add_argument("--bench-seconds", type=float, default=None, help="seconds per contender (deploy's default)")
    parser.add_argument("--neighbours", type=int, default=2, help="bursty CPU neighbours in the busy condition")
    parser.add_argument("--burst", default="0.2,1.5", metavar="MIN,MAX",
                        help="seconds a neighbour stays busy, then idle (uniform in MIN..MAX)")
    parser.add_argument("--precisions", default=None, help="deploy --precisions (default: the demo's, all)")
    parser.add_argument("--backend", default="auto", help="deploy --backend (the demo's: auto)")
    parser.add_argument("--deploy-dir", type=Path, default=ROOT / "out" / "verdict_stability",
                        help="where the demo's deploy builds its artifacts (reused when its summary.json exists)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default="verdict_stability")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def deploy_demo(args: argparse.Namespace) -> Path:
    """The demo's deploy into --deploy-dir (its own CLI, as a user runs it); reused when already there."""
    summary = args.deploy_dir / "summary.json"
    if summary.is_file():
        say(f"reusing the deploy in {args.deploy_dir}")
        return summary
    command = [sys.executable, "-m", "deploykit", "deploy", DEMO_MODEL, *DEMO_ARGS, "--backend", args.backend,
               "--out", str(args.deploy_dir), *(["--precisions", args.precisions] if args.precisions else []),
               *(["--threads", str(args.threads)] if args.threads else [])]
    say("building the demo's artifacts: " + " ".join(command[2:]))
    done = subprocess.run(command, check=False, cwd=ROOT)
    if not summary.is_file():
        raise SystemExit(f"the demo's deploy failed (exit status {done.returncode})")
    return summary


NEIGHBOUR = """
import random, sys, time
rng = random.Random(int(sys.argv[1]))
low, high = float(sys.argv[2]), float(sys.argv[3])
while True:  # busy (a tight loop), then idle, in turns of low..high seconds, until terminated
    until = time.perf_counter() + rng.uniform(low, high)
    while time.perf_counter() < until:
        pass
    time.sleep(rng.uniform(low, high))
"""


@contextmanager
def neighbours(count: int, low: float, high: float, seed: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` bursty neighbour processes for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", NEIGHBOUR, str(seed + k), str(low), str(high)])
             for k in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def time_once(state: dict[str, Any], way: str, seconds: float, threads: int | None) -> Any:
    """One timing of the deploy's contenders, the product's way (one round-robin run) or one after the other."""
    from deploykit.bench.interleave import TimingConfig
    from deploykit.bench.run import BenchReport
    from deploykit.pipeline.deploy import BENCH_WARMUP_S
    from deploykit.targets.bench import run_bench

    config = TimingConfig(warmup_s=BENCH_WARMUP_S, duration_s=seconds)
    targets = [state["reference"], *state["candidates"]]
    if way == "interleaved":
        return run_bench(targets, config=config, threads=threads, roofline=False)
    reports = [run_bench(target, config=config, threads=threads, roofline=False) for target in targets]
    return BenchReport(results=[r for report in reports for r in report.results], skipped=[],
                       environment=reports[0].environment, peaks=None, config=config.to_dict(),
                       load=reports[-1].load)


def figures(state: dict[str, Any], bench: Any) -> dict[str, Any]:
    """What the verdict states for this timing, and the INT8 artifact's speed-ups (None without INT8)."""
    from deploykit.bench.harness import speedup
    from deploykit.pipeline.verdict import artifact_run, decide, reference_run
    from deploykit.precision.table import BASELINE

    verdict = decide(state["builds"], state["parity"], bench)
    torch, fp32, int8 = (reference_run(bench.results), artifact_run(bench.results, "fp32"),
                         artifact_run(bench.results, "int8"))

    def ratio(slow: Any, fast: Any) -> dict[str, Any] | None:
        return speedup(slow, fast).to_dict() if slow and fast else None
    return {"ship": verdict.ship, "verdict": verdict.lines()[0],
            "speedup_vs_torch": verdict.speedup_vs_torch.to_dict() if verdict.speedup_vs_torch else None,
            "speedup_vs_fp32": verdict.speedup_vs_fp32.to_dict() if verdict.speedup_vs_fp32 and
            verdict.precision != BASELINE.name else None,  # the verdict states none when it ships FP32
            "int8_vs_fp32": ratio(fp32, int8), "int8_vs_torch": ratio(torch, int8),
            "medians_ms": {f"{r.backend} {r.precision}": round(r.latency.median, 3) for r in bench.results},
            "load": bench.load.to_dict() if bench.load else None}


def load_state(summary_path: Path, threads: int | None) -> dict[str, Any]:
    """The deploy's builds and parity (from its summary) and its contenders, opened as deploy opens them."""
    from deploykit.pipeline.results import DeployResult
    from deploykit.targets.resolve import open_target, source_label, torch_target
    from deploykit.zoo.sources import load_model

    result = DeployResult.from_dict(json.loads(summary_path.read_text()), summary_path.parent)
    loaded = load_model(result.model, options=result.options, weights=result.weights)
    reference = torch_target(loaded, source_label(result.model, result.options, result.weights), threads=threads)
    candidates = [open_target(str(b.path), threads=threads, sidecar=b.sidecar) for b in result.builds]
    return {"builds": result.builds, "parity": result.parity, "reference": reference, "candidates": candidates,
            "artifacts": [f"{b.path.name} ({b.backend})" for b in result.builds]}


RATIOS = ("speedup_vs_torch", "speedup_vs_fp32", "int8_vs_fp32", "int8_vs_torch")


def spreads(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per way of timing and ratio: smallest, largest, largest / smallest, and whether that is within LIMIT. The
    verdict's ratios are compared only across runs that shipped the same artifact (otherwise they are different
    ratios)."""
    out: dict[str, dict[str, Any]] = {}
    for way in WAYS:
        mine = [r for r in runs if r["way"] == way]
        ships = {r["ship"] for r in mine}
        table: dict[str, Any] = {"ships": sorted(s or "nothing" for s in ships)}
        for key in RATIOS:
            values = [r[key]["value"] for r in mine if r.get(key) and (len(ships) == 1 or key.startswith("int8"))]
            if values:
                top, bottom = max(values), min(values)
                table[key] = {"min": round(bottom, 3), "max": round(top, 3), "max_over_min": round(top / bottom, 3),
                              "within": top / bottom <= LIMIT}
        out[way] = table
    return out


def environment(args: argparse.Namespace, state: dict[str, Any], seconds: float) -> dict[str, Any]:
    from deploykit.environment import cpu_flags, cpu_model, package_version

    shown = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    return {"cpu": cpu_model(), "cpu_flags": sorted(cpu_flags() & set(shown)), "cores": os.cpu_count(),
            "threads": args.threads or "all cores", "bench_seconds": seconds, "runs": args.runs,
            "neighbours": args.neighbours, "burst_s": args.burst, "artifacts": state["artifacts"],
            "versions": {n: package_version(n) or "absent" for n in ("deploykit", "torch", "onnxruntime", "openvino")}}


def _ratio_text(ratio: dict[str, Any] | None) -> str:
    from deploykit.bench.stats import Ratio  # its text says when a run had too few rounds for an interval

    parsed = Ratio.from_dict(ratio)
    return "-" if parsed is None else parsed.text()


def markdown(runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]], env: dict[str, Any]) -> str:
    from deploykit.bench.load import MachineLoad
    from deploykit.report.format import markdown_table

    lines = ["# Verdict speed-ups on a quiet and a busy machine (the demo's deploy timing step)", "",
             f"CPU: {env['cpu']}, {env['cores']} cores ({', '.join(env['cpu_flags'])}); threads {env['threads']}; "
             f"{env['bench_seconds']:g} s per contender after 0.5 s of warm-up each; artifacts "
             f"{', '.join(env['artifacts'])}; busy = {env['neighbours']} neighbours busy and idle in turns of "
             f"{env['burst_s'].replace(',', '-')} s. Versions: "
             f"{', '.join(f'{k} {v}' for k, v in env['versions'].items())}.", "",
             "## Every run", ""]
    rows = [[r["run"], r["condition"], r["way"], r["ship"] or "nothing", _ratio_text(r["speedup_vs_torch"]),
             _ratio_text(r["speedup_vs_fp32"]), _ratio_text(r["int8_vs_fp32"]), _ratio_text(r["int8_vs_torch"]),
             ", ".join(f"{k} {v:.1f}" for k, v in r["medians_ms"].items()),
             MachineLoad.from_dict(r["load"]).describe() if r.get("load") else "-"] for r in runs]
    lines += [markdown_table(["run", "condition", "timing", "ships", "verdict: over PyTorch", "verdict: over FP32",
                              "INT8 over FP32", "INT8 over PyTorch", "medians ms", "machine load"], rows), "",
              f"## Spread across all runs of each way of timing (target: largest / smallest <= {LIMIT:.2f})", ""]
    spread_rows = [[way, key, *(f"{table[key][k]:.3f}" for k in ("min", "max", "max_over_min")),
                    "met" if table[key]["within"] else "MISSED", ", ".join(table["ships"])]
                   for way, table in summary.items() for key in RATIOS if key in table]
    lines += [markdown_table(["timing", "ratio", "smallest", "largest", "largest / smallest", "within 15%",
                              "shipped"], spread_rows), "",
              "Ratios are ratios of medians with their 95% bootstrap interval (paired by round when the contenders "
              "ran round-robin in one run). The verdict's own ratios are compared only across runs that shipped "
              "the same artifact; the INT8 ratios are compared across all runs.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from deploykit.io.outputs import write_json, write_text
    from deploykit.pipeline.deploy import DEFAULT_BENCH_SECONDS

    args = _parse(argv)
    seconds = args.bench_seconds or DEFAULT_BENCH_SECONDS
    low, high = (float(v) for v in args.burst.split(","))
    state = load_state(deploy_demo(args), args.threads)
    runs: list[dict[str, Any]] = []
    for number in range(1, args.runs + 1):
        for condition in ("quiet", "busy"):
            for way in (WAYS if number % 2 else WAYS[::-1]):  # alternate which way goes first
                count = args.neighbours if condition == "busy" else 0
                with neighbours(count, low, high, args.seed + 100 * number):
                    found = figures(state, time_once(state, way, seconds, args.threads))
                runs.append({"run": number, "condition": condition, "way": way, **found})
                say(f"run {number} {condition} {way}: {found['verdict']}")
    summary = spreads(runs)
    env = environment(args, state, seconds)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.out_dir / f"{args.name}.json", {"environment": env, "runs": runs, "spread": summary}, force=True)
    text = markdown(runs, summary, env)
    write_text(args.out_dir / f"{args.name}.md", text, force=True)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What deploykit serve's HTTP front costs: the same served model timed through the front (the port clients
reach) and straight at Triton's private HTTP port behind it, in one run, round-robin with a pause between the
two, and the median over rounds of each round's ratio (README "Serving").

    python benchmarks/bench_serve_front.py --out-dir benchmarks/results     # about 4 minutes on 2 cores
    python benchmarks/bench_serve_front.py --model tests.fixtures.user_models:tiny_segmenter --weights "" \\
        --input 1,3,64,64 --rounds 3 --duration 1      # a quick check

The front reads each request body whole and checks the tensor header before passing it on (deploykit/serve/
front.py), so its cost grows with the body: the demo's 513x513 float tensor is a 3.2 MB body. The load generator
is `deploykit bench --url`'s, on the same machine as the server (it takes CPU from it on 2 cores): only the
ratio within a round means much, not the absolute figures.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_cpu_peers import SHOWN_FLAGS
from bench_serve import build, free_port, served_model_parser, start

from deploykit.bench.remote import LoadConfig, run_remote_bench
from deploykit.environment import cpu_flags, probe

CONTENDERS = ("front", "triton")


def one_level(urls: dict[str, str], shape: tuple[int, ...], clients: int, rounds: int, config: LoadConfig,
              pause_s: float) -> dict[str, Any]:
    """`rounds` rounds, each timing every contender once (which goes first alternates); per contender the
    median of its rounds' p50 and throughput, and the median of the rounds' front/triton ratios."""
    level = LoadConfig(concurrency=(clients,), duration_s=config.duration_s, warmup_s=config.warmup_s)
    per_round: list[dict[str, dict[str, float]]] = []
    for index in range(rounds):
        order = CONTENDERS if index % 2 == 0 else CONTENDERS[::-1]
        measured = {}
        for name in order:
            result = run_remote_bench(urls[name], "model", config=level, input_shape=shape).results[0]
            measured[name] = {"p50_ms": result.latency.median, "qps": result.throughput_qps,
                              "errors": float(result.errors)}
            time.sleep(pause_s)
        per_round.append(measured)
    summary: dict[str, Any] = {"concurrency": clients, "rounds": per_round}
    for name in CONTENDERS:
        summary[name] = {key: statistics.median(r[name][key] for r in per_round) for key in ("p50_ms", "qps")}
    summary["p50_ratio"] = statistics.median(r["front"]["p50_ms"] / r["triton"]["p50_ms"] for r in per_round)
    summary["qps_ratio"] = statistics.median(r["front"]["qps"] / r["triton"]["qps"] for r in per_round)
    summary["errors"] = sum(r[name]["errors"] for r in per_round for name in CONTENDERS)
    return summary


def table(levels: list[dict[str, Any]]) -> str:
    lines = ["| concurrency | front p50 ms | Triton p50 ms | p50 front/Triton | front infer/s | Triton infer/s "
             "| infer/s front/Triton |", "|---|---|---|---|---|---|---|"]
    for s in levels:
        lines.append(f"| {s['concurrency']} | {s['front']['p50_ms']:.1f} | {s['triton']['p50_ms']:.1f} | "
                     f"{s['p50_ratio']:.3f} | {s['front']['qps']:.2f} | {s['triton']['qps']:.2f} | "
                     f"{s['qps_ratio']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = served_model_parser(__doc__.split("\n")[0], concurrency="1,4", duration=8.0, warmup=1.0,
                                 writes="serve_front.json and serve_front.md")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between contenders")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.input.split(","))
    config = LoadConfig(duration_s=args.duration, warmup_s=args.warmup)
    with tempfile.TemporaryDirectory(prefix="bench-serve-front-") as tmp:
        artifact = build(args.model, args.weights, args.input, Path(tmp))
        port = free_port()
        process, _, private = start(artifact, port, None)
        urls = {"front": f"http://127.0.0.1:{port}", "triton": f"http://127.0.0.1:{private}"}
        try:
            levels = [one_level(urls, shape, int(c), args.rounds, config, args.pause)
                      for c in args.concurrency.split(",")]
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    environment = probe().to_dict()
    flags = ", ".join(f for f in SHOWN_FLAGS if f in cpu_flags()) or "none of " + ", ".join(SHOWN_FLAGS)
    body_mb = 4 * shape[0] * shape[1] * shape[2] * shape[3] / 2**20
    text = (f"{args.model} {'x'.join(map(str, shape))} ({body_mb:.1f} MB binary tensor bodies), ONNX Runtime fp32 "
            f"artifact with --head argmax, on {environment.get('cpu')}, {os.cpu_count()} cores ({flags}); "
            f"{args.rounds} rounds of {args.duration:g} s per contender, medians over rounds\n\n"
            f"{table(levels)}\n")
    print(text)
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        summary = {"model": args.model, "input": list(shape), "cpu": environment.get("cpu"),
                   "cpu_flags": sorted(cpu_flags()), "config": vars(args) | {"out_dir": str(args.out_dir)},
                   "levels": levels}
        (args.out_dir / "serve_front.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        (args.out_dir / "serve_front.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()

"""`deploykit serve` measured end to end: start-up, throughput and latency per concurrency level for tensors and
for images, and the SIGTERM drain, on the demo's model (README "Serving").

    python benchmarks/bench_serve.py --out-dir benchmarks/results          # about 2 minutes on 2 cores
    python benchmarks/bench_serve.py --model tests.fixtures.user_models:tiny_segmenter --weights "" \\
        --input 1,3,64,64 --duration 1 --concurrency 1,4     # a quick check

Exports the model with `--head argmax` (a uint8 class map leaves the server, not 21 float planes), builds the
ONNX Runtime fp32 artifact, starts `deploykit serve` on a free loopback port, then measures with the same load
generator as `deploykit bench --url`: the tensor model at the input size and the image model with a 512x512
JPEG photograph, level by level, alternating the two. Clients run on the same machine as the server, so on a
small machine they take CPU from it; the load average before and after is recorded: compare figures taken back
to back, on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from deploykit.bench.remote import LoadConfig, run_remote_bench
from deploykit.environment import cpu_flags, probe

ROOT = Path(__file__).resolve().parent.parent
DEMO_WEIGHTS = ROOT / "benchmarks/checkpoints/deeplabv3plus_mobilenetv2_small.pt"


def deploykit(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "deploykit", *args], check=True, stdout=subprocess.DEVNULL)


def build(model: str, weights: str, input_shape: str, folder: Path) -> Path:
    source, artifact = folder / "model.onnx", folder / "model.fp32.ort.onnx"
    deploykit("export", model, *(["--weights", weights] if weights else []), "--input-shape", input_shape,
              "--head", "argmax", "-o", str(source))
    deploykit("build-engine", str(source), "--backend", "onnxruntime", "-o", str(artifact))
    return artifact


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


def start(artifact: Path, port: int, threads: int | None) -> tuple[subprocess.Popen[bytes], float, int]:
    """`deploykit serve` on `port`, once ready: the process, the seconds to ready, and Triton's private HTTP port
    (read from serve's progress line; bench_serve_front.py times the front against it)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "deploykit", "serve", str(artifact), "--name", "model",
                                "--port", str(port), *(["--threads", str(threads)] if threads else [])],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    private: list[int] = []

    def read_progress() -> None:  # and keep draining it, so that serve never blocks on a full pipe
        assert process.stderr is not None
        for line in process.stderr:
            found = re.search(rb"private HTTP port [0-9.]+:(\d+)", line)
            if found:
                private.append(int(found.group(1)))

    threading.Thread(target=read_progress, daemon=True).start()
    while time.perf_counter() - started < 300:
        if process.poll() is not None:
            raise SystemExit(f"deploykit serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2):
                if not private:
                    raise SystemExit("deploykit serve did not name Triton's private port")
                return process, time.perf_counter() - started, private[0]
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("deploykit serve was not ready after 300 s")


def measure(url: str, shape: tuple[int, ...], levels: list[int], config: LoadConfig) -> dict[str, list[Any]]:
    """Each level for tensors, then for images, before the next level (so both see the same moment's load)."""
    runs: dict[str, list[Any]] = {"model": [], "model_image": []}
    for level in levels:
        one = LoadConfig(concurrency=(level,), duration_s=config.duration_s, warmup_s=config.warmup_s)
        runs["model"].append(run_remote_bench(url, "model", config=one, input_shape=shape).to_dict())
        runs["model_image"].append(run_remote_bench(url, "model_image", config=one).to_dict())
    return runs


def table(runs: dict[str, list[Any]]) -> str:
    lines = ["| model | concurrency | infer/s | p50 ms | p99 ms | server batches (size x executions) |",
             "|---|---|---|---|---|---|"]
    for name, reports in runs.items():
        for report in reports:
            r = report["results"][0]
            batches = ", ".join(f"{b['batch_size']}x{b['executions']}" for b in r["server_batches"]
                                if b["model"] == "model")
            lines.append(f"| {name} | {r['concurrency']} | {r['throughput_qps']:.2f} | {r['latency']['median']:.1f} "
                         f"| {r['latency']['p99']:.1f} | {batches} |")
    return "\n".join(lines)


def served_model_parser(description: str, *, concurrency: str, duration: float, warmup: float,
                        writes: str) -> argparse.ArgumentParser:
    """The options every serving benchmark takes: which model at which input, the load, where results go."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="deeplabv3plus_mobilenetv2")
    parser.add_argument("--weights", default=str(DEMO_WEIGHTS), help='"" for the builder\'s initialisation')
    parser.add_argument("--input", default="1,3,513,513", help="N,C,H,W of the tensor requests")
    parser.add_argument("--concurrency", default=concurrency)
    parser.add_argument("--duration", type=float, default=duration, help="timed seconds per measurement")
    parser.add_argument("--warmup", type=float, default=warmup)
    parser.add_argument("--out-dir", type=Path, default=None, help=f"write {writes} here")
    return parser


def main() -> None:
    parser = served_model_parser(__doc__.split("\n")[0], concurrency="1,4,16", duration=10.0, warmup=2.0,
                                 writes="serve.json and serve.md")
    parser.add_argument("--threads", type=int, default=None, help="the server's intra-op threads")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.input.split(","))
    levels = [int(v) for v in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        artifact = build(args.model, args.weights, args.input, Path(tmp))
        port = free_port()
        process, ready_s, _ = start(artifact, port, args.threads)
        try:
            runs = measure(f"http://127.0.0.1:{port}", shape, levels, LoadConfig(duration_s=args.duration,
                                                                                  warmup_s=args.warmup))
        finally:
            stopping = time.perf_counter()
            process.send_signal(signal.SIGTERM)
            code = process.wait(60)
            stop_s = time.perf_counter() - stopping
    environment = probe().to_dict()
    summary = {"model": args.model, "input": list(shape), "ready_s": ready_s, "sigterm_to_exit_s": stop_s,
               "exit_code": code, "cpu": environment.get("cpu"), "cpu_flags": sorted(cpu_flags()), "runs": runs}
    text = (f"{args.model} {'x'.join(map(str, shape))}, ONNX Runtime fp32 artifact with --head argmax, "
            f"{environment.get('cpu')}; ready after {ready_s:.1f} s, SIGTERM to exit {stop_s:.1f} s (status {code})"
            f"\n\n{table(runs)}\n")
    print(text)
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "serve.json").write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
        (args.out_dir / "serve.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()

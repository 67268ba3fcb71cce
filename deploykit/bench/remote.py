"""`deploykit bench --url URL --model NAME`: a client-side load generator for any KServe v2 endpoint
(Triton, `deploykit serve`, MLServer, KServe), measured as perf_analyzer measures: at each concurrency level N,
N clients each keep one request in flight (a new one as soon as the answer arrives) for a fixed time after a
warm-up; latency is request to full answer, throughput the answered requests over the walltime. Requests whose
answer is an error are counted, not timed. The server's batch sizes come from Triton's statistics extension
(`GET /v2/models/stats`, differences over each level) where the endpoint has it.

Inputs: the model's metadata (`GET /v2/models/NAME`) gives names, datatypes and shapes; unknown dimensions come
from --input-shape (the batch axis is 1). Tensors come from --inputs (an .npz, checked against the metadata
before any inference request) or are generated (integers in a small range the report states). A BYTES input
gets an encoded image (--image, default a photograph from scikit-image, else generated pixels). Bodies use
Triton's binary tensor extension when the server lists it (and tritonclient is installed), else JSON; they are
built once, before timing, several distinct ones in turn.

Clients are Python threads on keep-alive connections: on a small machine they share its cores with the server,
so a loopback figure is a floor for what the server does with a separate client machine.
"""

from __future__ import annotations

import functools
import http.client
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deploykit.bench.harness import BenchResult
from deploykit.bench.kserve_bodies import (
    Body,
    check_bodies_fit,
    encoded_image,
    generated_note,
    given_requests,
    make_bodies,
    model_inputs,
    read_inputs,
    resolve_shape,
)
from deploykit.bench.kserve_http import MAX_DOCUMENT, Answer, Endpoint, exchange, json_object
from deploykit.bench.load import LoadProbe, MachineLoad
from deploykit.bench.run import BenchReport, environment_manifest
from deploykit.bench.stats import summarize
from deploykit.errors import InputError
from deploykit.types import Progress

STATS = "/v2/models/stats"  # Triton's statistics extension, every model


@dataclass(frozen=True)
class LoadConfig:
    concurrency: tuple[int, ...] = (1, 4, 16)
    duration_s: float = 5.0  # timed, per level
    warmup_s: float = 1.0  # per level, not timed
    timeout_s: float = 60.0  # one request

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_inference(endpoint: Endpoint, path: str, body: Body, model: str, timeout: float,
                    generated: str | None = None) -> None:
    """One request before timing: an input the model refuses, or an answer that is not a KServe v2 inference
    response (a web page that answers 200 to anything), fails here in one line instead of being timed.
    `generated`: what was generated without a valid range (said when the model refuses it)."""
    connection = endpoint.connect(timeout)
    where = f"POST {endpoint.url}{path[len(endpoint.prefix):]}"
    try:
        answer = exchange(connection, "POST", path, deadline=time.perf_counter() + timeout, keep=MAX_DOCUMENT,
                          whole=False, body=body.data, headers=body.headers)
    except (OSError, http.client.HTTPException) as exc:
        raise InputError(f"{where} failed ({type(exc).__name__}: {exc}); is {endpoint.url} a KServe v2 endpoint "
                         "that answers within the request timeout?") from None
    finally:
        connection.close()
    text = answer.body[:200].decode("utf-8", "replace")
    if answer.status != 200:
        raise InputError(f"{model} refused a request ({where} answered {answer.status}: {text}); check --model and "
                         "--input-shape against the model's inputs" + (f"; {generated}" if generated else ""))
    if not _is_inference_response(answer):
        raise InputError(f"{where} answered 200 with {text!r}, not a KServe v2 inference response (a JSON object "
                         f"with \"outputs\"); is {endpoint.url} a KServe v2 endpoint (Triton, deploykit serve)? "
                         "Check --url")


def _is_inference_response(answer: Answer) -> bool:
    """Whether a 200 answer is KServe v2's: a JSON object with "outputs" (the JSON header before binary tensors)."""
    size = answer.headers.get("Inference-Header-Content-Length", "")
    if size.isdigit():
        head, whole = answer.body[:int(size)], int(size) <= len(answer.body)
    else:
        head, whole = answer.body, answer.complete
    if not whole:  # JSON tensors larger than MAX_DOCUMENT: only their opening is checked
        return head.lstrip()[:1] == b"{"
    document = json_object(head)
    return document is not None and isinstance(document.get("outputs"), list)


@dataclass
class LevelRun:
    samples_ms: list[float]
    errors: list[str]
    walltime_s: float
    snapshot: Any = None  # what `snapshot` returned at the start of timing


def run_level(endpoint: Endpoint, path: str, bodies: Sequence[Body], clients: int, config: LoadConfig,
              snapshot: Callable[[], Any] = lambda: None) -> LevelRun:
    """`clients` threads, each with one request in flight, warm-up then `duration_s` timed; `snapshot`
    (the server's statistics) is taken when the warm-up ends."""
    start = time.perf_counter()
    timed_from, timed_until = start + config.warmup_s, start + config.warmup_s + config.duration_s
    samples: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        connection = endpoint.connect(config.timeout_s)
        turn = index
        try:
            while (now := time.perf_counter()) < timed_until:
                body = bodies[turn % len(bodies)]
                turn += 1
                try:
                    answered = exchange(connection, "POST", path, deadline=now + config.timeout_s, keep=200,
                                        body=body.data, headers=body.headers)
                    status, answer = answered.status, answered.body
                except (OSError, http.client.HTTPException) as exc:
                    status, answer = 0, str(exc).encode()
                    connection.close()
                    connection = endpoint.connect(config.timeout_s)
                done = time.perf_counter()
                if now < timed_from:
                    continue
                if status == 200:
                    samples[index].append((done - now) * 1e3)
                else:
                    with lock:
                        errors.append(f"{status}: {answer[:200].decode('utf-8', 'replace')}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, timed_from - time.perf_counter()))
    taken = snapshot()
    for thread in threads:
        thread.join()
    ended = max(time.perf_counter(), timed_until)
    return LevelRun([s for per in samples for s in per], errors, ended - timed_from, taken)


def _batch_counts(stats: Any) -> dict[tuple[str, int], int]:
    """Executions per (model, batch size); empty when the statistics are not Triton's: they are an optional
    extension, so a server whose statistics are off the schema reports no batches rather than failing the run."""
    counts: dict[tuple[str, int], int] = {}
    try:
        for model in (stats or {}).get("model_stats", []):
            for entry in model.get("batch_stats", []):
                executions = int(entry.get("compute_infer", {}).get("count", 0))
                counts[(str(model["name"]), int(entry["batch_size"]))] = executions
    except (AttributeError, KeyError, TypeError, ValueError):
        return {}
    return counts


def batch_difference(before: Any, after: Any) -> list[dict[str, Any]]:
    """Executions per (model, batch size) between two statistics snapshots, the changed ones only."""
    old, new = _batch_counts(before), _batch_counts(after)
    return [{"model": model, "batch_size": size, "executions": count - old.get((model, size), 0)}
            for (model, size), count in sorted(new.items()) if count - old.get((model, size), 0) > 0]


def run_remote_bench(url: str, model: str, *, config: LoadConfig | None = None,
                     input_shape: Sequence[int] | None = None, image: Path | None = None, binary: bool | None = None,
                     inputs_file: Path | None = None, progress: Progress | None = None) -> BenchReport:
    """Measure `model` at `url` at each concurrency level; see the module docstring."""
    say = progress or (lambda _msg: None)
    config = config or LoadConfig()
    if not config.concurrency or any(c < 1 for c in config.concurrency):
        raise InputError(f"concurrency levels must be positive; got {list(config.concurrency)}")
    if config.duration_s <= 0 or config.warmup_s < 0:
        raise InputError("--duration must be positive and --warmup not negative")
    endpoint = Endpoint.parse(url)
    arrays = read_inputs(inputs_file) if inputs_file is not None else None
    server = endpoint.get("/v2") or {}
    inputs = model_inputs(endpoint, model)
    if image is not None and not any(s["datatype"] == "BYTES" for s in inputs):
        raise InputError(f"--image {image}: {model} has no BYTES input to send it to (it takes "
                         f"{', '.join(s['name'] + ' ' + s['datatype'] for s in inputs)}); give its tensors as "
                         "--inputs FILE.npz, or bench the model that takes encoded images (deploykit serve's "
                         "NAME_image)")
    given = given_requests(inputs_file, arrays, inputs, input_shape) if inputs_file and arrays is not None else {}
    shapes = {spec["name"]: given[spec["name"]][0].shape if spec["name"] in given else resolve_shape(spec, input_shape)
              for spec in inputs}
    if binary is None:
        extensions = server.get("extensions")
        binary = isinstance(extensions, list) and "binary_tensor_data" in extensions
    image_bytes = encoded_image(image) if any(s["datatype"] == "BYTES" for s in inputs) else b""
    check_bodies_fit(inputs, shapes, image_bytes, binary)
    bodies = make_bodies(inputs, shapes, image_bytes, binary, given=given)
    path = f"{endpoint.prefix}/v2/models/{urllib.parse.quote(model)}/infer"
    generated = generated_note(inputs, given)
    check_inference(endpoint, path, bodies[0], model, config.timeout_s, generated)
    probe = LoadProbe()
    results = []
    first = shapes[inputs[0]["name"]]
    for clients in config.concurrency:
        say(f"{model} at {url}: {clients} concurrent client(s), {config.warmup_s:g} s warm-up + "
            f"{config.duration_s:g} s")
        stats = functools.partial(endpoint.get, STATS, optional=True)
        run = run_level(endpoint, path, bodies, clients, config, snapshot=stats)
        before, after = run.snapshot, stats()
        if not run.samples_ms:
            raise InputError(f"no request to {model} at {url} succeeded ({len(run.errors)} errors; first: "
                             + (f"{run.errors[0]})" if run.errors else
                                f"none answered within {config.duration_s:g} s); give a longer --duration"))
        qps = len(run.samples_ms) / run.walltime_s
        results.append(BenchResult(
            target=f"{model} at {url}", backend=f"KServe v2 ({server.get('name', 'server')})", precision="",
            batch=int(first[0]) if first else 1, input_shape=tuple(first), latency=summarize(run.samples_ms),
            mode=f"served (KServe v2 over HTTP, {'binary' if binary else 'JSON'} tensors): request to answer",
            throughput_qps=qps, images_per_s=qps * (int(first[0]) if first else 1), walltime_s=run.walltime_s,
            warmup_iterations=0, distinct_inputs=len(bodies), threads=None, samples_ms=run.samples_ms,
            concurrency=clients, errors=len(run.errors), server_batches=batch_difference(before, after)))
    load = probe.stop()
    # The server under test is another process on this machine, so its CPU time is not other work: only the load
    # average before the run says whether the machine was busy.
    # The report carries only that: the whole probe counted the server as other work ("other processes kept 1.96
    # of 2 cores busy") and its after-average the server's own load.
    served = MachineLoad(load.cores, load.seconds, load.load_before, load_after=None, others_cores=None)
    notes = [f"the machine was busy before timing ({served.describe()}): the clients and the server shared it "
             "with other work; rerun on a quiet machine"] if served.busy else []
    if generated:
        notes.append(generated)
    errors = sum(r.errors for r in results)
    if errors:
        notes.append(f"{errors} request(s) were answered with an error and not timed")
    environment = environment_manifest(None, served)
    environment["server"] = {"url": url, "model": model, "name": server.get("name"), "version": server.get("version")}
    return BenchReport(results=results, skipped=[], environment=environment, peaks=None,
                       config={**config.to_dict(), "binary": binary}, notes=notes, load=served)


def serving_rows(report: BenchReport) -> list[list[object]]:
    """perf_analyzer's table: concurrency, throughput, latency percentiles, errors and the server's batches."""
    rows: list[list[object]] = []
    for r in report.results:
        batches = ", ".join(f"{b['model']} {b['batch_size']}x{b['executions']}" for b in r.server_batches)
        rows.append([r.concurrency, r.latency.count, r.errors, r.throughput_qps, r.latency.median, r.latency.p90,
                     r.latency.p95, r.latency.p99, r.latency.mean, batches or "-"])
    return rows


SERVING_HEADERS = ["concurrency", "requests", "errors", "infer/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms",
                   "mean ms", "server batches (model size x executions)"]

"""`deploykit bench --url URL --model NAME`: a client-side load generator for any KServe v2 endpoint
(Triton, `deploykit serve`, MLServer, KServe), measured as perf_analyzer measures: at each concurrency level N,
N clients each keep one request in flight (a new one as soon as the answer arrives) for a fixed time after a
warm-up; latency is request to full answer, throughput the answered requests over the walltime. Requests whose
answer is an error are counted, not timed. The server's batch sizes come from Triton's statistics extension
(`GET /v2/models/stats`, differences over each level) where the endpoint has it.

Inputs: the model's metadata (`GET /v2/models/NAME`) gives names, datatypes and shapes; unknown dimensions come
from --input-shape (the batch axis is 1). A BYTES input gets an encoded image (--image, default a photograph
from scikit-image, else generated pixels). Bodies use Triton's binary tensor extension when the server lists it
(and tritonclient is installed), else JSON; they are built once, before timing, several distinct ones in turn.
Clients are Python threads on keep-alive connections: on a small machine they share its cores with the server,
so a loopback figure is a floor for what the server does with a separate client machine.
"""

from __future__ import annotations

import functools
import http.client
import io
import json
import math
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from deploykit.bench.harness import BenchResult
from deploykit.bench.load import LoadProbe, MachineLoad
from deploykit.bench.run import BenchReport, environment_manifest
from deploykit.bench.stats import summarize
from deploykit.environment import check_memory
from deploykit.errors import BackendUnavailable, InputError, optional_import
from deploykit.io.images import sample_photographs
from deploykit.types import Progress

_NUMPY = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
          "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
          "FP32": np.float32, "FP64": np.float64}
DISTINCT_BODIES = 8
STATS = "/v2/models/stats"  # Triton's statistics extension, every model
# Measured (tracemalloc, 8 bodies of a 1x3x512x512 FP32 input): a JSON body keeps 20.6 bytes a value and building
# one takes 57 more at its peak (Python floats, then text); a binary body keeps 4.4 and building it takes 8.
JSON_KEPT, JSON_BUILDING = 21, 58
MAX_DOCUMENT = 16 << 20  # bytes of a metadata or statistics document, or an answer's JSON: far above real ones
READ_CHUNK = 1 << 16


@dataclass(frozen=True)
class LoadConfig:
    concurrency: tuple[int, ...] = (1, 4, 16)
    duration_s: float = 5.0  # timed, per level
    warmup_s: float = 1.0  # per level, not timed
    timeout_s: float = 60.0  # one request

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    prefix: str  # a path before /v2, e.g. behind a gateway

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        fix = f"--url {url}: give http://HOST:PORT[/PREFIX] (plain HTTP; put TLS in front with a proxy)"
        try:
            parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
            port = parsed.port  # a port that is not a number in 0-65535 raises here
        except ValueError as exc:  # also an unclosed IPv6 bracket
            raise InputError(f"{fix}: {exc}") from None
        if parsed.scheme != "http" or not parsed.hostname:
            raise InputError(fix)
        if parsed.username is not None or parsed.password is not None:
            raise InputError(f"{fix}: bench sends no credentials and would write them into its report; "
                             "drop USER:PASSWORD@ (reach a server that needs them through a local proxy)")
        if parsed.query or parsed.fragment or any(c.isspace() or not c.isprintable() for c in parsed.netloc
                                                  + parsed.path):
            raise InputError(f"{fix}: the URL has a query, a fragment, spaces or control characters, which bench "
                             "would not send")
        try:
            parsed.hostname.encode("idna")  # what http.client sends in the Host header
        except UnicodeError:
            raise InputError(f"{fix}: {parsed.hostname!r} is not a host name") from None
        # a request line is ASCII: a path of other characters goes percent-encoded, as a browser sends it
        return cls(parsed.hostname, port or 80, urllib.parse.quote(parsed.path.rstrip("/"), safe="/%:@!$&'()*+,;=~"))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        return f"http://{host}:{self.port}{self.prefix}"

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def get(self, path: str, timeout: float = 10.0, *, optional: bool = False) -> Any:
        """GET a JSON object; None when the endpoint does not have it (an answer other than 200). An answer that
        is not a JSON object (an HTML page, a broken or endless body) is bad input, or None when `optional`."""
        connection = self.connect(timeout)
        where = f"GET {self.url}{path}"
        try:
            answer = exchange(connection, "GET", self.prefix + path, deadline=time.perf_counter() + timeout,
                              keep=MAX_DOCUMENT, whole=False)
        except TimeoutError:
            if optional:
                return None
            raise InputError(f"{where} got no whole answer within {timeout:g} s; is {self.url} a KServe v2 "
                             "endpoint (Triton, deploykit serve), and not overloaded?") from None
        except OSError as exc:
            if optional:
                return None
            raise InputError(f"cannot reach {self.url} ({exc or type(exc).__name__}: {where}); is the server "
                             "up? (deploykit serve ARTIFACT)") from None
        except http.client.HTTPException as exc:
            if optional:
                return None
            raise InputError(f"{where} answered with broken HTTP ({type(exc).__name__}: {exc}); is {self.url} "
                             "a KServe v2 endpoint (Triton, deploykit serve)?") from None
        finally:
            connection.close()
        if answer.status != 200:
            return None
        document = _json_object(answer.body) if answer.complete else None
        if document is None and not optional:
            what = "more than 16 MB" if not answer.complete else repr(answer.body[:60])[1:]
            raise InputError(f"{where} answered {what}, not a JSON object; is {self.url} a KServe v2 endpoint "
                             "(Triton, deploykit serve)? Check --url")
        return document


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(data)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    return document if isinstance(document, dict) else None


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes  # its first `keep` bytes
    complete: bool  # whether `body` is all of it


def exchange(connection: http.client.HTTPConnection, method: str, path: str, *, deadline: float, keep: int,
             whole: bool = True, body: bytes | None = None, headers: Mapping[str, str] | None = None) -> Answer:
    """One request and its answer by `deadline` (else TimeoutError), keeping the body's first `keep` bytes. The
    deadline bounds the whole answer, not each read, so a server trickling bytes cannot hold a client forever;
    the rest is read and dropped (`whole`: the answer arrived when its last byte did) or left unread, so an
    endless or huge body costs no memory."""
    def left() -> float:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise TimeoutError(f"no whole answer within the request's time ({method} {path})")
        return remaining

    connection.timeout = left()
    connection.request(method, path, body=body, headers=dict(headers or {}))
    sock = connection.sock  # getresponse() hands it to the response when the server closes after answering
    response = connection.getresponse()
    kept = bytearray()
    while True:
        if sock is not None:
            sock.settimeout(left())
        chunk = response.read1(READ_CHUNK)  # one read: returns what arrived, not a full chunk
        kept += chunk[: keep - len(kept)]
        if not chunk or (len(kept) >= keep and not whole):
            # read1 leaves a finished response open, which would refuse the next request on this connection;
            # one left unread is closed with its connection by the caller
            response.close()
            return Answer(response.status, response.headers, bytes(kept), not chunk)


@dataclass(frozen=True)
class Body:
    data: bytes
    headers: dict[str, str]


def model_inputs(endpoint: Endpoint, model: str) -> list[dict[str, Any]]:
    """The model's inputs from its metadata, checked against KServe v2's schema (name, datatype, shape of
    integers) before any request is built from them."""
    path = f"/v2/models/{urllib.parse.quote(model)}"
    meta = endpoint.get(path)
    if meta is None:
        raise InputError(f"the endpoint has no model {model!r} (GET {endpoint.url}{path} failed); check --model "
                         "and --url")
    inputs = meta.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InputError(f"GET {endpoint.url}{path} lists no inputs (KServe v2 metadata has \"inputs\": [{{name, "
                         "datatype, shape}]); is --url a KServe v2 endpoint and --model a model with inputs?")
    for index, spec in enumerate(inputs):
        if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("datatype"), str)
                and isinstance(spec.get("shape"), list)
                and all(isinstance(d, int) and not isinstance(d, bool) for d in spec["shape"])):
            raise InputError(f"GET {endpoint.url}{path}: inputs[{index}] is {json.dumps(spec)[:120]}, not KServe "
                             "v2 metadata ({name, datatype, shape of integers}); check --url")
    return inputs


def resolve_shape(spec: Mapping[str, Any], input_shape: Sequence[int] | None) -> tuple[int, ...]:
    """The request shape of one input: --input-shape for an input of its rank, else its dims with the batch of
    --input-shape (1 without it), so that a model whose inputs differ in rank (a score map and a size) takes
    one --input-shape; an input with unknown dims besides the batch needs --input-shape of its rank."""
    dims = [int(d) for d in spec["shape"]]
    if spec["datatype"] == "BYTES":
        return tuple(1 if d < 0 else d for d in dims)
    if input_shape is not None and len(input_shape) == len(dims):
        return tuple(int(d) for d in input_shape)
    if any(d < 0 for d in dims[1:]):
        example = ",".join(str(d if d > 0 else 1 if i == 0 else 512) for i, d in enumerate(dims))
        given = f"--input-shape has {len(input_shape)} dimensions; " if input_shape is not None else ""
        raise InputError(f"{given}input {spec['name']} has unknown dimensions {dims}; give --input-shape of its "
                         f"{len(dims)} dimensions, e.g. {example}")
    batch = int(input_shape[0]) if input_shape else 1
    return tuple(batch if i == 0 and d < 0 else d for i, d in enumerate(dims))


def encoded_image(path: Path | None) -> bytes:
    """The bytes of --image, or a photograph (scikit-image) / generated pixels encoded as JPEG."""
    if path is not None:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read --image {path}: {exc.strerror}") from None
    try:
        rgb = sample_photographs(("astronaut",))[0]
    except BackendUnavailable:  # no scikit-image: pixels with some structure, so the JPEG is not trivially small
        rows = np.linspace(0, 255, 512, dtype=np.float32)
        rgb = np.stack([np.add.outer(rows, rows) / 2, np.outer(rows, np.ones(512)), rows[::-1][None].repeat(512, 0)],
                       axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def check_bodies_fit(inputs: Sequence[Mapping[str, Any]], shapes: Mapping[str, tuple[int, ...]], image: bytes,
                     binary: bool) -> None:
    """Refuse requests too large to build here, before building them: the shapes come from the server's metadata
    or --input-shape, and under overcommit the allocations succeed and the OOM killer ends bench without a word."""
    kept = building = 0
    for spec in inputs:
        count = math.prod(shapes[spec["name"]])
        if spec["datatype"] == "BYTES":
            kept, building = kept + count * len(image), building + count * len(image)
            continue
        itemsize = np.dtype(_NUMPY.get(spec["datatype"], np.float64)).itemsize
        kept += count * (itemsize + 1 if binary else JSON_KEPT)
        building += count * (2 * itemsize if binary else JSON_BUILDING)
    described = ", ".join(f"{s['name']} {'x'.join(map(str, shapes[s['name']]))}" for s in inputs)
    check_memory(DISTINCT_BODIES * kept + building, f"building {DISTINCT_BODIES} distinct requests of {described}",
                 "give a smaller --input-shape")


def make_bodies(inputs: Sequence[Mapping[str, Any]], shapes: Mapping[str, tuple[int, ...]], image: bytes,
                binary: bool, count: int = DISTINCT_BODIES, seed: int = 0) -> list[Body]:
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(count):
        arrays: dict[str, np.ndarray] = {}
        for spec in inputs:
            name, datatype, shape = spec["name"], spec["datatype"], shapes[spec["name"]]
            if datatype == "BYTES":
                arrays[name] = np.full(shape, image, dtype=object)
            elif datatype not in _NUMPY:
                raise InputError(f"input {name} has datatype {datatype}, which bench --url cannot generate")
            elif np.issubdtype(_NUMPY[datatype], np.floating):
                arrays[name] = rng.standard_normal(shape, dtype=np.float32).astype(_NUMPY[datatype])
            else:
                arrays[name] = np.zeros(shape, dtype=_NUMPY[datatype])
        bodies.append(_binary_body(arrays, inputs) if binary else _json_body(arrays, inputs))
    return bodies


def _json_body(arrays: Mapping[str, np.ndarray], inputs: Sequence[Mapping[str, Any]]) -> Body:
    def values(array: np.ndarray) -> list[Any]:
        flat = array.ravel().tolist()
        return [v.decode("latin-1") if isinstance(v, bytes) else v for v in flat]

    document = {"inputs": [{"name": s["name"], "shape": list(arrays[s["name"]].shape), "datatype": s["datatype"],
                            "data": values(arrays[s["name"]])} for s in inputs]}
    return Body(json.dumps(document).encode(), {"Content-Type": "application/json"})


def _binary_body(arrays: Mapping[str, np.ndarray], inputs: Sequence[Mapping[str, Any]]) -> Body:
    """Triton's binary tensor extension, built by tritonclient (outputs come back binary as well)."""
    triton_http = optional_import("tritonclient.http", "binary requests", "pip install 'deploykit[triton]'",
                                  "tritonclient[all]")
    tensors = []
    for spec in inputs:
        tensor = triton_http.InferInput(spec["name"], list(arrays[spec["name"]].shape), spec["datatype"])
        tensor.set_data_from_numpy(arrays[spec["name"]], binary_data=True)
        tensors.append(tensor)
    data, json_size = triton_http.InferenceServerClient.generate_request_body(tensors)
    headers = {"Content-Type": "application/octet-stream"}
    if json_size is not None:
        headers["Inference-Header-Content-Length"] = str(json_size)
    return Body(data, headers)


def check_inference(endpoint: Endpoint, path: str, body: Body, model: str, timeout: float) -> None:
    """One request before timing: an input the model refuses, or an answer that is not a KServe v2 inference
    response (a web page that answers 200 to anything), fails here in one line instead of being timed."""
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
                         "--input-shape against the model's inputs")
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
    document = _json_object(head)
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
                     progress: Progress | None = None) -> BenchReport:
    """Measure `model` at `url` at each concurrency level; see the module docstring."""
    say = progress or (lambda _msg: None)
    config = config or LoadConfig()
    if not config.concurrency or any(c < 1 for c in config.concurrency):
        raise InputError(f"concurrency levels must be positive; got {list(config.concurrency)}")
    if config.duration_s <= 0 or config.warmup_s < 0:
        raise InputError("--duration must be positive and --warmup not negative")
    endpoint = Endpoint.parse(url)
    server = endpoint.get("/v2") or {}
    inputs = model_inputs(endpoint, model)
    shapes = {spec["name"]: resolve_shape(spec, input_shape) for spec in inputs}
    if binary is None:
        extensions = server.get("extensions")
        binary = isinstance(extensions, list) and "binary_tensor_data" in extensions
    image_bytes = encoded_image(image) if any(s["datatype"] == "BYTES" for s in inputs) else b""
    check_bodies_fit(inputs, shapes, image_bytes, binary)
    bodies = make_bodies(inputs, shapes, image_bytes, binary)
    path = f"{endpoint.prefix}/v2/models/{urllib.parse.quote(model)}/infer"
    check_inference(endpoint, path, bodies[0], model, config.timeout_s)
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
    before = MachineLoad(load.cores, load.seconds, load.load_before, load_after=None, others_cores=None)
    notes = [w for w in (before.warning(),) if w]
    errors = sum(r.errors for r in results)
    if errors:
        notes.append(f"{errors} request(s) were answered with an error and not timed")
    environment = environment_manifest(None, load)
    environment["server"] = {"url": url, "model": model, "name": server.get("name"), "version": server.get("version")}
    return BenchReport(results=results, skipped=[], environment=environment, peaks=None,
                       config={**config.to_dict(), "binary": binary}, notes=notes, load=load)


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

"""Triton's administration (repository load and unload, shared memory, log and trace settings) is served to the
server's own machine only: with `serve --host 0.0.0.0` a client elsewhere could unload the models or register
shared-memory regions (it got Triton's answers, 200 for the repository index). Inference, health and metadata
stay open to every client."""

from __future__ import annotations

import http.client
import signal
import socket
from collections.abc import Iterator

import numpy as np
import pytest

from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.serve.front import is_admin_path, why_forbidden
from deploykit.serve.grpc_front import peer_address
from deploykit.zoo.sources import load_model
from tests.serve.test_server import Server, answer, start_server, tensor_body  # skips without the bundled server

USER = "tests.fixtures.user_models:tiny_segmenter"


def _own_address() -> str | None:
    """This machine's IPv4 address on its default route: a client that is not loopback, without a second host."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: connect only picks the route
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    address = _own_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback to reach the server from")
    path = tmp_path_factory.mktemp("admin") / "seg.onnx"
    onnx_from_torch(load_model(USER, options={"num_classes": 4}), path, input_shape=(1, 3, 32, 32), simplify=False)
    running = start_server([path], "--name=seg", "--no-images", grpc=True, host="0.0.0.0")
    yield running, address
    running.process.send_signal(signal.SIGTERM)
    running.process.wait(30)


def _post(host: str, port: int, path: str, body: bytes = b"{}") -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("path", ["/v2/repository/index", "/v2/repository/models/seg/unload",
                                  "/v2/systemsharedmemory/region/r/register", "/v2/logging", "/v2/trace/setting",
                                  "/v2/models/seg/trace/setting"])
def test_administration_from_another_machine_is_forbidden(served: tuple[Server, str], path: str) -> None:
    server, address = served
    status, body = _post(address, server.port, path)
    assert status == 403, body[:300]
    assert b"served to clients on the server's own machine only" in body


def test_the_same_machine_administers_and_every_client_infers(served: tuple[Server, str]) -> None:
    server, address = served
    status, body = _post("127.0.0.1", server.port, "/v2/repository/index")
    assert status == 200 and b'"seg"' in body
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    remote = Server(server.process, server.port, server.artifact, server.grpc_port, address)
    assert answer(*remote.post("seg", *tensor_body(x)), "output").shape == (1, 4, 32, 32)


def test_grpc_administration_from_another_machine_is_denied(served: tuple[Server, str]) -> None:
    from tritonclient.grpc import InferenceServerClient, InferenceServerException

    server, address = served
    assert InferenceServerClient(f"127.0.0.1:{server.grpc_port}").get_model_repository_index().models
    remote = InferenceServerClient(f"{address}:{server.grpc_port}")
    assert remote.is_model_ready("seg")
    with pytest.raises(InferenceServerException, match="served to clients on the server's own machine only"):
        remote.get_model_repository_index()


@pytest.mark.parametrize(("client", "forbidden"), [("127.0.0.1", False), ("127.8.9.1", False), ("::1", False),
                                                   ("::ffff:127.0.0.1", False), ("::ffff:10.1.2.3", True),
                                                   ("10.1.2.3", True), ("fe80::1%eth0", True), (None, True),
                                                   ("not an address", True)])
def test_only_loopback_clients_administer(client: str | None, forbidden: bool) -> None:
    assert (why_forbidden("/v2/logging", client) is not None) == forbidden


def test_administration_paths_and_grpc_peers_are_read() -> None:
    assert is_admin_path("/v2/repository/models/m/load") and is_admin_path("/v2/cudasharedmemory/status")
    assert is_admin_path("/v2/models/m/versions/1/trace/setting")
    assert not is_admin_path("/v2/models/m/infer") and not is_admin_path("/v2/health/ready")
    assert not is_admin_path("/v2/models/repository")  # a model may be named so
    assert peer_address("ipv4:127.0.0.1:5000") == "127.0.0.1"
    assert peer_address("ipv6:[::1]:5000") == "::1"
    assert peer_address("ipv6:%5B::1%5D:5000") == "::1"  # as grpc writes it
    assert peer_address("ipv6:%5Bfe80::1%25eth0%5D:5000") == "fe80::1%eth0"
    assert peer_address("unix:/tmp/socket") is None


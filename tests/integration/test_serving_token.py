"""A project's model server with a token: `fjord model token --new` gives it one (mode 600, never on
a command line), serving.start passes it, Fjord's own calls carry it, and a caller without it gets
401 (REST) or UNAUTHENTICATED (gRPC)."""

from __future__ import annotations

import stat

import grpc
import httpx
import psutil
import pytest

from fjord.projects import create_project
from jobs.serve import serving
from tests.conftest import run_fjord
from tests.serving_models import publish_version

pytestmark = pytest.mark.slow


def test_a_project_with_a_token_serves_only_callers_that_carry_it(tmp_path) -> None:
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    project = create_project("fraud")
    publish_version(project, tmp_path / "m")
    serving.create_or_update("m", 1, project="fraud")
    assert run_fjord("model", "token", "--project", "fraud").returncode == 3  # none yet: not found
    made = run_fjord("model", "token", "--project", "fraud", "--new")
    assert made.returncode == 0 and made.stdout.strip() == serving.token(project="fraud")
    token_file = serving._token_file("fraud")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    url = serving.start(project="fraud")
    try:
        serving.wait_available("m", 1, project="fraud", timeout_s=120)  # its own calls carry the token
        assert serving.predict("m", {"instances": [{"x": 1.0, "y": 2.0}]}, project="fraud")["predictions"]
        assert httpx.get(f"{url}/v1/models/m", timeout=30).status_code == 401
        pid = serving.server_state("fraud")["pid"]
        assert serving.token(project="fraud") not in " ".join(psutil.Process(pid).cmdline())
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "m"
        with (
            grpc.insecure_channel(serving.server_state("fraud")["grpc"]) as channel,
            pytest.raises(grpc.RpcError) as caught,
        ):
            model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        assert serving.stop(project="fraud")
    removed = run_fjord("model", "token", "--project", "fraud", "--remove")
    assert removed.returncode == 0 and not token_file.exists()
    assert run_fjord("model", "token", "--project", "fraud", "--new", "--remove").returncode == 2


def test_a_start_whose_port_was_taken_meanwhile_fails_instead_of_returning_the_other_server(
    tmp_path, monkeypatch
) -> None:
    """Two starts may pick the same free port (8501 is everyone's first choice). The one that loses the
    bind exits; its start said "ready" as soon as the port answered, so it returned the winner's URL and
    its caller talked to another project's server (CI, 2026-12-07: a reset connection mid-test)."""
    import socket

    from fjord.errors import ServiceError

    project = create_project("fraud")
    publish_version(project, tmp_path / "m")
    serving.create_or_update("m", 1, project="fraud")
    with socket.socket() as squatter:  # the other start's server, bound in the meantime
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        chosen = iter([taken, 0])  # the REST port (taken), then gRPC's (any)
        monkeypatch.setattr(serving, "free_port", lambda preferred=None: next(chosen) or _any_port())
        with pytest.raises(ServiceError, match=f"cannot bind 127.0.0.1:{taken}"):
            serving.start(project="fraud")
    assert serving.server_state("fraud") is None  # nothing recorded as running


def _any_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

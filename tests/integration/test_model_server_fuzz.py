"""The REST API fuzzed from its OpenAPI description (jobs/serve/openapi.yaml) with schemathesis:
whatever the generated request, valid or not, the server answers without a 5xx, with JSON."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import REPO
from tests.integration.serving_server import ServerProcess
from tests.serving_models import write_version

pytestmark = pytest.mark.slow

schema = schemathesis.openapi.from_path(str(REPO / "jobs" / "serve" / "openapi.yaml"))


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz") / "m"
    write_version(base, 1)
    process = ServerProcess(
        "--model_name=m", f"--model_base_path={base}", "--max_body_bytes=1000000",
        log=tmp_path_factory.mktemp("fuzz-logs") / "server.log",
    )  # fmt: skip
    process.wait_ready("m")
    yield process
    assert process.stop() == 0


# One test per API operation, with the operation in its id: schemathesis' own parametrize gives every
# operation the same node id, and pytest-xdist's grouped scheduling keys work by node id, so it ran
# one operation of nine.
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_no_request_gets_a_server_error(operation, fuzzed_server):
    @given(case=operation.as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    def answers_without_a_server_error(case):
        response = case.call(base_url=fuzzed_server.url, timeout=30)
        assert response.status_code < 500, (case.path, case.body, response.text)
        assert "error" in response.json() or response.status_code == 200

    answers_without_a_server_error()

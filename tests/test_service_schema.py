"""Property-based requests over the service's own OpenAPI schema (schemathesis + hypothesis).

A real ``gridtsne serve`` on 127.0.0.1 answers a few hundred generated requests per endpoint,
valid and invalid bodies, paths and query strings alike, with a valid API key. Every answer must
be a documented status (no 5xx), of the documented content type, matching the documented schema.
The server only queues jobs, so no request starts work; the run is bounded by example counts
(about a minute in all on a 2-core machine), never by timings.
"""
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from tests.service_server import Server

EXAMPLES = 150  # per endpoint and generation mode: a few hundred requests each


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schema")
    (folder / "photos").mkdir()
    (folder / "photos" / "a.jpg").write_bytes(b"never decoded: this server queues only")
    server = Server(folder / "srv", "--output_root", folder / "maps",
                    "--allow_input", folder / "photos", "--allow_input", "https://",
                    "--max_concurrent_jobs", "0", "--max_active_per_key", "0",
                    "--requests_per_minute", "0")
    key = server.create_key("fuzz")
    with server:
        yield server, key


OPERATIONS = [("POST", "/v2/visualizations"), ("GET", "/v2/visualizations"),
              ("GET", "/v2/visualizations/{job_id}"), ("DELETE", "/v2/visualizations/{job_id}"),
              ("GET", "/v2/visualizations/{job_id}/log"), ("GET", "/healthz")]
POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
# (operation, generation mode, fewest distinct requests): schema-breaking requests only where
# the schema constrains something (a bare string id or /healthz has nothing to break).
RUNS = [(op, POSITIVE, 20) for op in OPERATIONS[:-1]] + [(OPERATIONS[-1], POSITIVE, 1)] + [
    (op, NEGATIVE, 20) for op in (OPERATIONS[0], OPERATIONS[1], OPERATIONS[4])]


@pytest.fixture(scope="module")
def api_schema(served):
    server, _ = served
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    documented = {(method.upper(), path) for path, item in schema.raw_schema["paths"].items()
                  for method in item}
    assert documented == set(OPERATIONS)  # a new endpoint is fuzzed too: list it here
    return schema


@pytest.mark.parametrize("operation,mode,fewest", RUNS,
                         ids=[f"{m} {p} {mode.value}" for (m, p), mode, _ in RUNS])
def test_every_answer_is_documented_and_no_5xx(served, api_schema, operation, mode, fewest):
    server, key = served
    method, path = operation
    operation = api_schema[path][method]
    statuses = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case):
        headers = {**(case.headers or {}), "Authorization": f"Key {key}"}
        response = case.call(base_url=server.url, headers=headers, timeout=30)
        statuses.append(response.status_code)
        case.validate_response(response, checks=(not_a_server_error, status_code_conformance,
                                                 content_type_conformance,
                                                 response_schema_conformance))

    call()
    assert len(statuses) >= fewest and max(statuses) < 500, statuses

"""Property-based fuzzing of both fronts of the gateway and of the JAX runtime (hypothesis, seeded, bounded).

Mutated valid requests (bytes flipped, inserted, deleted, truncated), wrong JSON types at every field of a
REST body, field-level and raw-byte mutations of protobuf messages sent through a generic gRPC call (so
bytes that are not a valid message reach the server), and odd metadata/readiness/config calls. For every
case: a 4xx with the protocol's `{"error": ...}` body, or a client-error gRPC code, or a valid answer; never
a traceback, a Python class name or an unbounded message. Then, per run: the servers' request counters
moved only under OK and client-error codes (each inference request counted once), neither process logged
a traceback, and a valid request still gets the answer it got before the run.

Client-error codes are the 4xx rows of `gateway.errors.ErrorCode` that a client can cause on its own:
INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, OUT_OF_RANGE, PAYLOAD_TOO_LARGE. RESOURCE_EXHAUSTED (429)
is left out: it says the server is overloaded (the Prometheus rules count it as a server-side error), and
one client sending small requests one at a time cannot cause it honestly; on the gRPC client it is also
what a status whose details exceed the 16 KiB metadata limit turns into. DEADLINE_EXCEEDED (and a
runtime's CANCELLED) is accepted only for a case carrying a `timeout` parameter short enough to expire.

`FUZZ_CASES_PER_FRONT` and `FUZZ_SEED` in the environment scale or reseed a run for a longer local hunt.
"""

from __future__ import annotations

import collections
import os
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gateway.local_stack import LocalStack
from gateway.proto import inference_pb2 as pb
from tests.integration.fuzz_grpc import (
    GRPC_SEEDS,
    UNARY_METHODS,
    VALID_INFER_REQUEST,
    GrpcCase,
    UnaryCase,
    grpc_cases,
    unary_cases,
)
from tests.integration.fuzz_mutations import element_count, flatten, parse_or_none
from tests.integration.fuzz_rest import (
    REST_SEEDS,
    RestCase,
    RestGetCase,
    infer_path,
    rest_cases,
    rest_get_cases,
)

pytestmark = pytest.mark.integration

CASES_PER_FRONT: Final = int(os.environ.get("FUZZ_CASES_PER_FRONT", "1000"))
"""Inference cases per front (gateway REST, gateway gRPC, runtime REST, runtime gRPC)."""
OTHER_CASES: Final = max(1, CASES_PER_FRONT // 5)
"""Metadata, readiness and config calls per front."""
STREAMS: Final = max(1, CASES_PER_FRONT // 20)
"""ModelStreamInfer calls per gRPC front, each with 1 to 5 messages."""
FUZZ_SEED: Final = int(os.environ.get("FUZZ_SEED", "20261129"))
CALL_TIMEOUT_S: Final = 5.0
MAX_ERROR_CHARS: Final = 2048
"""An error quotes a client's long string clipped (256 characters), never whole: well under this."""
MAX_DETAILS_BYTES: Final = 2048 + 64
"""gRPC status details, as UTF-8: the listener cuts them to 2048 bytes (plus a note of the length), so
that percent-encoded they stay under the clients' metadata limits."""
FORBIDDEN: Final = ("Traceback", "<class '", 'File "', "Unexpected <class")

CLIENT_ERRORS: Final = frozenset(
    {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "OUT_OF_RANGE", "PAYLOAD_TOO_LARGE"}
)
DEADLINE_ERRORS: Final = frozenset({"DEADLINE_EXCEEDED", "CANCELLED"})
GRPC_CLIENT_ERRORS: Final = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
REST_CLIENT_ERRORS: Final = frozenset({400, 404})
SERVICE: Final = "/inference.GRPCInferenceService/"
MODEL_OUTPUTS: Final = {"transformer": ("embedding", 32), "cnn": ("probabilities", 10)}
"""The example models' one output each: its name and its width (shape [batch, width], FP32)."""


def _settings(cases: int) -> settings:
    return settings(
        max_examples=cases,
        deadline=None,
        database=None,
        derandomize=False,
        print_blob=False,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )


# --- the servers, their counters and their logs -----------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One server of the stack as the fuzz sees it."""

    name: str
    rest: str
    grpc: str
    metrics: str
    counter: str  # the metric counting its inference requests, by `code`


def _targets(stack: LocalStack) -> dict[str, Target]:
    p = stack.ports
    return {
        "gateway": Target(
            "gateway",
            f"http://{p.host}:{p.gateway_rest}",
            f"{p.host}:{p.gateway_grpc}",
            f"http://{p.host}:{p.gateway_metrics}/metrics",
            "gateway_requests_total",
        ),
        "runtime": Target(
            "runtime",
            f"http://{p.host}:{p.runtime_http}",
            f"{p.host}:{p.runtime_grpc}",
            f"http://{p.host}:{p.runtime_metrics}/metrics",
            "jax_runtime_requests_total",
        ),
    }


def _codes(target: Target) -> collections.Counter[str]:
    """The target's inference request counter summed by `code`."""
    counts: collections.Counter[str] = collections.Counter()
    for family in text_string_to_metric_families(httpx.get(target.metrics, timeout=10).text):
        for sample in family.samples:
            if sample.name == target.counter:
                counts[sample.labels["code"]] += int(sample.value)
    return counts


class _Tee(list[str]):
    """A ManagedProcess's `output` that also keeps every line appended while it is installed (the output
    list itself keeps only the last 500, and a run may log more)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines)
        self.seen: list[str] = []

    def append(self, line: str) -> None:
        self.seen.append(line)
        super().append(line)


@pytest.fixture(scope="module")
def logs(stack: LocalStack) -> Iterator[dict[str, _Tee]]:
    """Every line the gateway and the runtime print while this module runs."""
    processes = {"gateway": stack.gateway, "runtime": stack.runtime}
    tees: dict[str, _Tee] = {}
    for name, process in processes.items():
        assert process is not None
        tees[name] = _Tee(process.output)
        process.output = tees[name]
    yield tees
    for process in processes.values():
        assert process is not None
        process.output = list(process.output)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=CALL_TIMEOUT_S) as client:
        yield client


@pytest.fixture(scope="module")
def channels(stack: LocalStack) -> Iterator[dict[str, grpc.Channel]]:
    """One channel per server, with the standard client's limits (16 KiB of metadata, 4 MiB messages)."""
    opened = {name: grpc.insecure_channel(t.grpc) for name, t in _targets(stack).items()}
    yield opened
    for channel in opened.values():
        channel.close()


@dataclass
class Tally:
    """What a run sent: bounds on the inference requests the target must have counted."""

    min_counted: int = 0
    max_counted: int = 0
    short_deadline: bool = False

    def sent(self, answered: int = 1, sent: int = 1) -> None:
        self.min_counted += answered
        self.max_counted += sent


def _traceback_tail(lines: list[str], keep: int = 12) -> str:
    """The last lines of the traceback `lines` starts with: the innermost frames and the exception."""
    end = 1
    while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
        end += 1
    return "".join(lines[max(0, end + 1 - keep) : end + 1])


def _fuzz(
    stack: LocalStack,
    logs: dict[str, _Tee],
    target: str,
    reference: Callable[[], np.ndarray],
    run: Callable[[Tally], None],
) -> None:
    """Run `run` against `target`, then check counters, logs, and that `reference` answers as before."""
    targets = _targets(stack)
    expected = reference()
    before = {name: _codes(t) for name, t in targets.items()}
    marks = {name: len(tee.seen) for name, tee in logs.items()}
    tally = Tally()
    failure: Exception | None = None
    try:
        run(tally)
    except Exception as exc:  # reported below, together with what the after-run checks find
        failure = exc
    problems: list[str] = []
    allowed = CLIENT_ERRORS | {"OK"} | (DEADLINE_ERRORS if tally.short_deadline else set())
    for name, t in targets.items():
        moved = _codes(t) - before[name]
        odd = {code: n for code, n in moved.items() if code not in allowed}
        if odd:
            problems.append(f"{t.counter} moved under codes other than OK and client errors: {odd}")
        if name == target and not tally.min_counted <= moved.total() <= tally.max_counted:
            problems.append(
                f"{t.counter} moved by {moved.total()} ({dict(moved)}) for {tally.min_counted}.."
                f"{tally.max_counted} inference requests: each must be counted once"
            )
    for name, tee in logs.items():
        lines = tee.seen[marks[name] :]
        starts = [i for i, line in enumerate(lines) if "Traceback" in line]
        if starts:
            problems.append(
                f"{name} logged {len(starts)} tracebacks during the run; the first ends:\n"
                + _traceback_tail(lines[starts[0] :])
            )
    for name, process in (("gateway", stack.gateway), ("runtime", stack.runtime)):
        if process is None or process.proc is None or process.proc.poll() is not None:
            problems.append(f"the {name} process is no longer running")
    try:
        np.testing.assert_allclose(reference(), expected, rtol=1e-5, atol=1e-6)
    except Exception as exc:
        problems.append(f"a valid request no longer gets its answer: {exc}")
    if failure is not None:
        for problem in problems:
            failure.add_note(problem)
        raise failure
    assert not problems, "\n".join(problems)


# --- per-case checks ---------------------------------------------------------------------------------------


def _check_message(message: str, answer: str, sent: bytes | str = b"", limit: int = MAX_ERROR_CHARS) -> None:
    """No internals (unless the client sent that very text, to be echoed) and a bounded length."""
    text = sent.decode("utf-8", "replace") if isinstance(sent, bytes) else sent
    leaked = [marker for marker in FORBIDDEN if marker in message and marker not in text]
    assert not leaked, f"the error leaks internals ({leaked}): {answer}"
    assert len(message) <= limit, f"an error message of {len(message)} characters: {answer}"


def _check_details(details: str, answer: str, sent: bytes | str = b"") -> None:
    _check_message(details, answer, sent)
    assert len(details.encode()) <= MAX_DETAILS_BYTES, (
        f"status details of {len(details.encode())} bytes: {answer}"
    )


def _check_error_body(response: httpx.Response, answer: str, sent: bytes | str = b"") -> None:
    content_type = response.headers.get("content-type", "")
    try:
        doc = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        doc = None
    assert content_type.startswith("application/json") and isinstance(doc, dict), f"not JSON: {answer}"
    assert list(doc) == ["error"] and isinstance(doc["error"], str), f"not an error body: {answer}"
    _check_message(doc["error"], answer, sent)


def _check_outputs(model: str, outputs: Sequence[tuple[str, str, Any, int]], answer: str) -> None:
    """Each output (name, datatype, shape, element count) is one the model has, consistently shaped."""
    name, width = MODEL_OUTPUTS.get(model, ("", 0))
    for out_name, datatype, shape, count in outputs:
        assert out_name == name and datatype == "FP32", f"an output the model does not have: {answer}"
        assert isinstance(shape, list) and len(shape) == 2 and shape[1] == width, f"odd shape: {answer}"
        assert count == element_count(shape), f"data does not fill its shape: {answer}"


def _rest_outputs(response: httpx.Response, answer: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The response's JSON header and its outputs as arrays, framing checked."""
    length = response.headers.get("inference-header-content-length")
    body = response.content
    header = body if length is None else body[: int(length)]
    doc = orjson.loads(header)
    assert isinstance(doc, dict) and isinstance(doc.get("outputs"), list), f"not an OIP response: {answer}"
    blobs, arrays = memoryview(body)[len(header) :], {}
    for out in doc["outputs"]:
        if "data" in out:
            arrays[out["name"]] = np.asarray(flatten(out["data"]), dtype=np.float32)
        else:
            size = out["parameters"]["binary_data_size"]
            arrays[out["name"]] = np.frombuffer(blobs[:size], dtype=np.float32)
            blobs = blobs[size:]
    assert len(blobs) == 0, f"binary data beyond the outputs: {answer}"
    return doc, arrays


def _send(http: httpx.Client, method: str, url: str, **kwargs: Any) -> tuple[httpx.Response, int]:
    """One request and the attempts it took: sent again, once, on a new connection if the kept-alive one
    turns out closed (a server may close it after an earlier answer; what matters is how it answers this
    request)."""
    try:
        return http.request(method, url, **kwargs), 1
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
        return http.request(method, url, **kwargs), 2


def _check_rest(case: RestCase, response: httpx.Response) -> None:
    status = response.status_code
    answer = f"{case.describe()}\n  -> {status} {response.content[:1500]!r}"
    if status != 200:
        expired = case.short_deadline and status == 504
        assert status in REST_CLIENT_ERRORS or expired, f"not a client error: {answer}"
        _check_error_body(response, answer, case.sent_text())
        return
    assert case.must_refuse is None, f"accepted although {case.must_refuse}: {answer}"
    doc, arrays = _rest_outputs(response, answer)
    assert doc.get("model_name") == case.model, f"the answer names another model: {answer}"
    outputs = [(o["name"], o["datatype"], o["shape"], arrays[o["name"]].size) for o in doc["outputs"]]
    _check_outputs(case.model, outputs, answer)


def _call(method: Any, data: bytes) -> tuple[grpc.StatusCode, str, bytes]:
    try:
        return grpc.StatusCode.OK, "", method(data, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", b""


def _check_infer_response(response: pb.ModelInferResponse, answer: str) -> None:
    assert len(response.raw_output_contents) == len(response.outputs), f"raw contents miscounted: {answer}"
    outputs = [
        (o.name, o.datatype, list(o.shape), len(raw) // 4)
        for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    ]
    _check_outputs(response.model_name, outputs, answer)


def _check_grpc(case: GrpcCase, code: grpc.StatusCode, details: str, data: bytes) -> None:
    answer = f"{case}\n  {case.describe()}\n  -> {code.name} {details[:1500]!r}"
    if code is grpc.StatusCode.OK:
        assert case.must_refuse is None, f"accepted although {case.must_refuse}: {answer}"
        response = parse_or_none(pb.ModelInferResponse, data)
        assert response is not None, f"the answer is not a ModelInferResponse: {answer}"
        _check_infer_response(response, answer)
        return
    expired = case.short_deadline and code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert code in GRPC_CLIENT_ERRORS or expired, f"not a client error: {answer}"
    _check_details(details, answer, case.data)


def _request_id(data: bytes) -> str:
    message = parse_or_none(pb.ModelInferRequest, data)
    return message.id if message is not None else ""


def _rest_reference(http: httpx.Client, target: Target) -> Callable[[], np.ndarray]:
    seed_case = REST_SEEDS[0]
    body, headers = seed_case.frame(seed_case.doc)

    def reference() -> np.ndarray:
        response = http.post(target.rest + infer_path(seed_case.model), content=body, headers=headers)
        assert response.status_code == 200, response.text
        return _rest_outputs(response, response.text)[1]["embedding"]

    return reference


def _grpc_reference(channel: grpc.Channel) -> Callable[[], np.ndarray]:
    infer = channel.unary_unary(SERVICE + "ModelInfer")

    def reference() -> np.ndarray:
        response = pb.ModelInferResponse.FromString(
            infer(VALID_INFER_REQUEST.SerializeToString(), timeout=10)
        )
        return np.frombuffer(response.raw_output_contents[0], dtype=np.float32)

    return reference


# --- the tests --------------------------------------------------------------------------------------------

TARGETS: Final = ("gateway", "runtime")


@pytest.mark.parametrize("target", TARGETS)
def test_seed_requests_are_served(
    target: str, stack: LocalStack, http: httpx.Client, channels: dict[str, grpc.Channel]
) -> None:
    """Every unmutated seed the fuzz starts from is a valid request both fronts answer correctly."""
    t = _targets(stack)[target]
    for rest_seed in REST_SEEDS:
        body, headers = rest_seed.frame(rest_seed.doc)
        rest_case = RestCase(rest_seed.name, (), infer_path(rest_seed.model), rest_seed.model, body, headers)
        response = http.post(t.rest + rest_case.path, content=body, headers=headers)
        assert response.status_code == 200, f"{rest_seed.name}: {response.text}"
        _check_rest(rest_case, response)
    infer = channels[target].unary_unary(SERVICE + "ModelInfer")
    for name, message in GRPC_SEEDS.items():
        grpc_case = GrpcCase(name, data=message.SerializeToString())
        code, details, data = _call(infer, grpc_case.data)
        assert code is grpc.StatusCode.OK, f"{name}: {code} {details}"
        _check_grpc(grpc_case, code, details, data)


@pytest.mark.parametrize("target", TARGETS)
def test_rest_infer_fuzz(target: str, stack: LocalStack, logs: dict[str, _Tee], http: httpx.Client) -> None:
    """Mutated REST inference requests get a 4xx error body or a valid answer; counters, logs stay clean."""
    t = _targets(stack)[target]

    def run(tally: Tally) -> None:
        @_settings(CASES_PER_FRONT)
        @seed(FUZZ_SEED)
        @given(case=rest_cases())
        def fuzz(case: RestCase) -> None:
            tally.short_deadline |= case.short_deadline
            response, attempts = _send(
                http, "POST", t.rest + case.path, content=case.body, headers=case.headers
            )
            tally.sent(answered=1, sent=attempts)
            _check_rest(case, response)

        fuzz()

    _fuzz(stack, logs, target, _rest_reference(http, t), run)


@pytest.mark.parametrize("target", TARGETS)
def test_grpc_infer_fuzz(
    target: str, stack: LocalStack, logs: dict[str, _Tee], channels: dict[str, grpc.Channel]
) -> None:
    """Mutated ModelInfer messages, sent as raw bytes, get a client-error code or a valid answer."""
    infer = channels[target].unary_unary(SERVICE + "ModelInfer")

    def run(tally: Tally) -> None:
        @_settings(CASES_PER_FRONT)
        @seed(FUZZ_SEED)
        @given(case=grpc_cases())
        def fuzz(case: GrpcCase) -> None:
            tally.short_deadline |= case.short_deadline
            code, details, data = _call(infer, case.data)
            tally.sent()
            _check_grpc(case, code, details, data)

        fuzz()

    _fuzz(stack, logs, target, _grpc_reference(channels[target]), run)


@pytest.mark.parametrize("target", TARGETS)
def test_grpc_stream_fuzz(
    target: str, stack: LocalStack, logs: dict[str, _Tee], channels: dict[str, grpc.Channel]
) -> None:
    """A ModelStreamInfer of mutated messages answers each one (an error_message at worst) and stays clean."""
    stream = channels[target].stream_stream(SERVICE + "ModelStreamInfer")

    def run(tally: Tally) -> None:
        @_settings(STREAMS)
        @seed(FUZZ_SEED)
        @given(cases=st.lists(grpc_cases(), min_size=1, max_size=5))
        def fuzz(cases: list[GrpcCase]) -> None:
            tally.short_deadline |= any(c.short_deadline for c in cases)
            answers: list[bytes] = []
            code, details = grpc.StatusCode.OK, ""
            try:
                answers.extend(stream(iter([c.data for c in cases]), timeout=CALL_TIMEOUT_S))
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
            tally.sent(answered=len(answers), sent=len(cases))
            sent = "\n  ".join(f"{c}: {c.describe()}" for c in cases)
            answer = f"stream of\n  {sent}\n  -> {code.name} {details[:1500]!r} after {len(answers)} answers"
            expired = any(c.short_deadline for c in cases) and code is grpc.StatusCode.DEADLINE_EXCEEDED
            assert code in GRPC_CLIENT_ERRORS | {grpc.StatusCode.OK} or expired, f"stream failed: {answer}"
            everything = b"".join(c.data for c in cases)
            _check_details(details, answer, everything)
            if code is grpc.StatusCode.OK:
                assert len(answers) == len(cases), f"not one answer per message: {answer}"
            longest_id = max(len(_request_id(c.data)) for c in cases)
            for raw in answers:
                message = parse_or_none(pb.ModelStreamInferResponse, raw)
                assert message is not None, f"an answer is not a ModelStreamInferResponse: {answer}"
                if message.error_message:
                    # "[request id: <id>] " may come first: the client's id, echoed as Triton does.
                    limit = MAX_ERROR_CHARS + longest_id + 20
                    _check_message(message.error_message, answer, everything, limit)
                else:
                    _check_infer_response(message.infer_response, answer)

        fuzz()

    _fuzz(stack, logs, target, _grpc_reference(channels[target]), run)


@pytest.mark.parametrize("target", TARGETS)
def test_grpc_other_methods_fuzz(
    target: str, stack: LocalStack, logs: dict[str, _Tee], channels: dict[str, grpc.Channel]
) -> None:
    """Metadata, readiness and config calls with odd names or mangled bytes get OK or a client error."""
    channel = channels[target]
    methods = {name: channel.unary_unary(SERVICE + name) for name in UNARY_METHODS}

    def run(tally: Tally) -> None:
        @_settings(OTHER_CASES)
        @seed(FUZZ_SEED)
        @given(case=unary_cases())
        def fuzz(case: UnaryCase) -> None:
            code, details, data = _call(methods[case.method], case.data)
            answer = f"{case} ({case.data[:300]!r})\n  -> {code.name} {details[:1500]!r}"
            if code is grpc.StatusCode.OK:
                response_type = UNARY_METHODS[case.method][1]
                assert parse_or_none(response_type, data) is not None, f"not a {response_type}: {answer}"
                return
            assert code in GRPC_CLIENT_ERRORS, f"not a client error: {answer}"
            _check_details(details, answer, case.data)

        fuzz()

    _fuzz(stack, logs, target, _grpc_reference(channel), run)


@pytest.mark.parametrize("target", TARGETS)
def test_rest_metadata_fuzz(
    target: str, stack: LocalStack, logs: dict[str, _Tee], http: httpx.Client
) -> None:
    """GET metadata, readiness and config of odd model and version names: JSON, or a 4xx error body."""
    t = _targets(stack)[target]

    def run(tally: Tally) -> None:
        @_settings(OTHER_CASES)
        @seed(FUZZ_SEED)
        @given(case=rest_get_cases())
        def fuzz(case: RestGetCase) -> None:
            response, _ = _send(http, "GET", t.rest + case.path)
            status = response.status_code
            answer = f"GET {case.path[:300]}\n  -> {status} {response.content[:1500]!r}"
            not_ready = status == 503 and case.path.endswith("/ready")
            if status == 200 or not_ready:
                doc = orjson.loads(response.content)
                assert isinstance(doc, dict), f"not a JSON object: {answer}"
                assert not not_ready or doc.get("ready") is False, f"a 503 that is not 'not ready': {answer}"
                return
            assert status in REST_CLIENT_ERRORS, f"not a client error: {answer}"
            _check_error_body(response, answer, urllib.parse.unquote(case.path))

        fuzz()

    _fuzz(stack, logs, target, _rest_reference(http, t), run)

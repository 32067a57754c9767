"""What the Kubernetes client raises, as the Lease port's errors."""

from __future__ import annotations

import json

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from aggregator.adapters.kubernetes.errors import LeaseRejected, translate
from aggregator.ports.lease import LeaseConflict, LeaseForbidden, LeaseUnavailable

LEASE = "prod/stream-aggregator"


def api_error(status: int, reason: str = "", message: str = "") -> ApiException:
    error = ApiException(status=status, reason=reason)
    if message:
        error.body = json.dumps({"kind": "Status", "reason": reason, "message": message})
    return error


@pytest.mark.parametrize(
    ("status", "verb", "expected"),
    [
        (409, "create", LeaseConflict),
        (409, "update", LeaseConflict),
        (404, "update", LeaseConflict),  # deleted since read: re-read and decide
        (403, "get", LeaseForbidden),
        (401, "get", LeaseForbidden),
        (500, "get", LeaseUnavailable),
        (503, "update", LeaseUnavailable),
        (504, "watch", LeaseUnavailable),
        (429, "update", LeaseUnavailable),
        (408, "get", LeaseUnavailable),
        (0, "get", LeaseUnavailable),  # TLS failure inside the client
        (422, "create", LeaseRejected),
        (400, "update", LeaseRejected),
        (404, "create", LeaseRejected),  # the namespace does not exist
    ],
)
def test_status_codes_map_to_port_errors(status: int, verb: str, expected: type[Exception]) -> None:
    translated = translate(api_error(status, "Reason"), verb, LEASE)
    assert type(translated) is expected
    assert LEASE in str(translated)
    assert verb in str(translated)


def test_forbidden_names_verb_namespace_lease_and_what_to_grant() -> None:
    message = (
        'leases.coordination.k8s.io "stream-aggregator" is forbidden: User '
        '"system:serviceaccount:prod:aggregator" cannot update resource "leases"'
    )
    translated = translate(api_error(403, "Forbidden", message), "update", LEASE)
    assert isinstance(translated, LeaseForbidden)
    text = str(translated)
    assert text.startswith("forbidden to update lease prod/stream-aggregator (403 Forbidden: ")
    assert "system:serviceaccount:prod:aggregator" in text
    assert "Role" in text


def test_a_rejection_is_a_value_error_carrying_the_servers_reason() -> None:
    message = (
        'Lease.coordination.k8s.io "stream-aggregator" is invalid: '
        "spec.leaseDurationSeconds: Invalid value: -1: must be greater than 0"
    )
    translated = translate(api_error(422, "Invalid", message), "create", LEASE)
    assert isinstance(translated, ValueError)
    assert not isinstance(translated, LeaseConflict)
    assert str(translated) == (
        f"the API server refused to create lease {LEASE} (422 Invalid: {message})"
    )


def test_a_body_that_is_not_a_status_is_quoted() -> None:
    error = api_error(502, "Bad Gateway")
    error.body = "<html>upstream</html>"
    assert "upstream" in str(translate(error, "get", LEASE))


@pytest.mark.parametrize(
    "error",
    [
        urllib3.exceptions.ReadTimeoutError(None, "/", "Read timed out."),  # type: ignore[arg-type]
        urllib3.exceptions.ProtocolError("Connection aborted."),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError("timed out"),
    ],
)
def test_timeouts_and_connection_errors_are_unavailable(error: Exception) -> None:
    translated = translate(error, "get", LEASE)
    assert isinstance(translated, LeaseUnavailable)
    assert str(translated).startswith(f"get lease {LEASE}: no answer from the API server")


def test_other_errors_pass_through() -> None:
    error = KeyError("spec")
    assert translate(error, "get", LEASE) is error

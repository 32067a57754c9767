"""What the client library raises, as the errors of the Lease port.

Every message names the verb, the namespace and the lease, so one log line is
enough to act on.
"""

from __future__ import annotations

import json

import urllib3
from kubernetes.client.exceptions import ApiException

from aggregator.ports.lease import LeaseConflict, LeaseForbidden, LeaseUnavailable

RBAC_HINT = (
    "the pod's ServiceAccount needs a Role granting create on "
    "coordination.k8s.io leases and get, update and watch on this lease"
)

_TRANSIENT_STATUSES = frozenset({408, 425, 429})
"""Request timeout, too early, too many requests (API priority and fairness)."""


class LeaseRejected(ValueError):
    """The API server refused the request as invalid (400, 422) or the namespace is
    missing (404 on create); retrying the same request will not help."""


def translate(error: Exception, verb: str, lease: str) -> Exception:
    """The port's exception for ``error`` raised while doing ``verb`` to ``lease``
    ("namespace/name"); ``error`` itself when it is not the client's to explain."""
    if isinstance(error, ApiException):
        return _from_status(error, verb, lease)
    if isinstance(error, (urllib3.exceptions.HTTPError, OSError)):
        return LeaseUnavailable(f"{verb} lease {lease}: no answer from the API server ({error})")
    return error


def _from_status(error: ApiException, verb: str, lease: str) -> Exception:
    status = error.status or 0
    reason, message = _server_status(error)
    said = f"{status} {reason}: {message}" if message else f"{status} {reason}"
    if status == 409:
        return LeaseConflict(f"{verb} lease {lease}: {said}")
    if status == 404 and verb == "update":
        return LeaseConflict(f"{verb} lease {lease}: it does not exist (any more)")
    if status == 403:
        return LeaseForbidden(f"forbidden to {verb} lease {lease} ({said}); {RBAC_HINT}")
    if status == 401:
        return LeaseForbidden(
            f"unauthorized to {verb} lease {lease} ({said}); the credentials were refused"
        )
    if status == 0 or status >= 500 or status in _TRANSIENT_STATUSES:
        return LeaseUnavailable(f"{verb} lease {lease}: the API server answered {said}")
    return LeaseRejected(f"the API server refused to {verb} lease {lease} ({said})")


def _server_status(error: ApiException) -> tuple[str, str]:
    """(reason, message) of the Status object the server sent, else the HTTP reason."""
    reason = str(error.reason or "").strip()
    body: object = error.body  # str; bytes in older clients
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not isinstance(body, str) or not body:
        return reason, ""
    try:
        status = json.loads(body)
    except ValueError:
        return reason, body.strip()[:300]
    if not isinstance(status, dict):
        return reason, ""
    return str(status.get("reason") or reason), str(status.get("message") or "")

"""HTTP sessions to LXD, each request with a timeout (the unix socket too).

A hung LXD (stopped with SIGSTOP, or a member behind a network partition) accepts
connections and never answers: without a timeout a request waits for ever, and the thread
making it with it. With one, it fails like an unreachable LXD (``BackendUnavailable``).
Ordinary requests answer at once, so their timeout is short. Waiting for an operation to
end (``/operations/<id>/wait``: creating, starting, deleting a container, importing an
image) may take minutes, but a silent LXD must still be noticed soon: the wait is asked in
slices (LXD's own ``?timeout=``, after which it answers "still running"), each with a short
read timeout, until the operation ends or its deadline passes. A partitioned remote member or
a hung local daemon is then found within one slice, not after the whole deadline.
"""

from __future__ import annotations

import re
import time
import warnings
from typing import Any
from urllib.parse import urlsplit

import requests
from pylxd.client import DEFAULT_SCHEME, LXDSSLAdapter, get_session_for_url
from urllib3.exceptions import InsecureRequestWarning

# (connect, read) seconds. The local unix socket: LXD answers an ordinary request in
# milliseconds; 30 s leaves room for a busy machine.
LOCAL_TIMEOUT = (10.0, 30.0)
# Remote endpoints: a member whose machine vanished without closing its connections would
# otherwise hold a request forever. Long work (an image copied between members before a
# container is created) happens inside operations, waited for in slices below; file
# transfers stream, so the read timeout bounds a pause between chunks, not a whole file.
HTTPS_TIMEOUT = (10.0, 60.0)
# Waiting for an operation to end, local or remote: LXD is asked to answer after at most
# WAIT_SLICE seconds, and is given WAIT_SLACK more to do so on a busy machine; the operation
# may run for OPERATION_DEADLINE in all (creating a container may copy a large image first).
WAIT_SLICE = 20.0
WAIT_SLACK = 30.0
OPERATION_DEADLINE = 600.0
CONNECT_TIMEOUT = 10.0


class LXDSession(requests.Session):
    """A session whose ``/wait`` requests (an operation's end) are made in slices.

    requests also lets ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` replace a session's
    ``verify=False`` (or pylxd's pinned server certificate) on every request, so a client
    told not to verify fails on LXD's self-signed certificate anyway: the configured choice
    wins."""

    def request(self, method: str | bytes, url: str | bytes, *args: Any,
                **kwargs: Any) -> requests.Response:
        path = urlsplit(url if isinstance(url, str) else url.decode()).path
        if path.endswith("/wait") and "/operations/" in path:
            return self._wait_in_slices(method, url, *args, **kwargs)
        return super().request(method, url, *args, **kwargs)

    def _wait_in_slices(self, method: str | bytes, url: str | bytes, *args: Any,
                        **kwargs: Any) -> requests.Response:
        """The operation's final answer, asked for WAIT_SLICE seconds at a time. Raises
        ``requests.ReadTimeout`` (an unreachable LXD, to the backend) when LXD stays silent
        for a slice or the operation outlives OPERATION_DEADLINE."""
        params = dict(kwargs.pop("params", None) or {})
        kwargs["timeout"] = (CONNECT_TIMEOUT, WAIT_SLICE + WAIT_SLACK)
        deadline = time.monotonic() + OPERATION_DEADLINE
        while True:
            response = super().request(method, url, *args,
                                       params={**params, "timeout": int(WAIT_SLICE)}, **kwargs)
            if not _still_running(response):
                return response
            if time.monotonic() >= deadline:
                raise requests.ReadTimeout(
                    f"operation {url!r} still running after {OPERATION_DEADLINE:g} s")

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and self.verify is not True:
            settings["verify"] = self.verify
        return settings


def _still_running(response: requests.Response) -> bool:
    """LXD answered a sliced wait before the operation ended (status codes below 200:
    created, started, running, cancelling, pending, starting...)."""
    if response.status_code != 200:
        return False
    try:
        metadata = response.json().get("metadata") or {}
    except ValueError:
        return False
    code = metadata.get("status_code")
    return isinstance(code, int) and code < 200


def local_session() -> LXDSession:
    """A session on LXD's unix socket (pylxd's own adapter)."""
    session = LXDSession()
    for prefix, adapter in get_session_for_url(DEFAULT_SCHEME).adapters.items():
        if prefix == DEFAULT_SCHEME:
            session.mount(prefix, adapter)
    return session


def remote_session(endpoint: str, cert: tuple[str, str] | None,
                   verify: bool | str) -> LXDSession:
    if verify is False:  # chosen in the settings: said once at start-up, not at every request
        host = re.escape(urlsplit(endpoint).hostname or "")
        warnings.filterwarnings("ignore", category=InsecureRequestWarning,
                                message=f"Unverified HTTPS request is being made to host '{host}'")
    session = LXDSession()
    session.cert = cert
    session.verify = verify
    if isinstance(verify, str):
        # pylxd's adapter: the file is the server's own certificate, pinned by fingerprint
        # (every member of a cluster serves the cluster certificate).
        session.mount(endpoint, LXDSSLAdapter())
    return session

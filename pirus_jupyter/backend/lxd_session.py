"""HTTP sessions to LXD, each request with a timeout (the unix socket too).

A hung LXD (stopped with SIGSTOP, or a member behind a network partition) accepts
connections and never answers: without a timeout a request waits for ever, and the thread
making it with it. With one, it fails like an unreachable LXD (``BackendUnavailable``).
Ordinary requests answer at once, so their timeout is short; waiting for an operation to
end (``/operations/<id>/wait``: creating, starting, deleting a container, importing an
image) may take minutes and gets a long one.
"""

from __future__ import annotations

import re
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
# otherwise hold a request forever; the read timeout is long because creating a container may
# copy a large image between members first.
HTTPS_TIMEOUT = (10.0, 600.0)
# Waiting for an operation to end, local or remote.
OPERATION_WAIT_TIMEOUT = (10.0, 600.0)


class LXDSession(requests.Session):
    """A session whose ``/wait`` requests (an operation's end) get the long timeout.

    requests also lets ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` replace a session's
    ``verify=False`` (or pylxd's pinned server certificate) on every request, so a client
    told not to verify fails on LXD's self-signed certificate anyway: the configured choice
    wins."""

    def request(self, method: str | bytes, url: str | bytes, *args: Any,
                **kwargs: Any) -> requests.Response:
        path = urlsplit(url if isinstance(url, str) else url.decode()).path
        if path.endswith("/wait") and "/operations/" in path:
            kwargs["timeout"] = OPERATION_WAIT_TIMEOUT
        return super().request(method, url, *args, **kwargs)

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and self.verify is not True:
            settings["verify"] = self.verify
        return settings


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

"""Finding the Pirus server a notebook or the CLI talks to: :func:`connect`.

In order: explicit ``url``/``token`` arguments, else the environment variables
``PIRUS_SERVER_URL`` / ``PIRUS_SERVER_TOKEN`` (the server exports both into its own environment
at start-up, so every kernel it starts inherits them), else the Jupyter servers listed in the
runtime directory whose root folder contains the current directory. The first candidate that
answers is returned as a :class:`~.client.Client`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .client import Client
from .errors import PirusAPIError, PirusConnectionError
from .servers import running_servers, same_server, servers_containing

URL_ENV = "PIRUS_SERVER_URL"
TOKEN_ENV = "PIRUS_SERVER_TOKEN"

__all__ = ["TOKEN_ENV", "URL_ENV", "connect"]


NOTEBOOK_HINT = ("Pass pirus_jupyter.connect(url, token), or set PIRUS_SERVER_URL and "
                 "PIRUS_SERVER_TOKEN.")


def connect(url: str | None = None, token: str | None = None, *, timeout: float = 30.0,
            hint: str = NOTEBOOK_HINT) -> Client:
    """Connect to a Pirus server and check that it answers.

    ``url`` is the Jupyter server's base URL (e.g. ``http://127.0.0.1:8888/``). Without
    arguments, in order: the environment variables ``PIRUS_SERVER_URL`` and
    ``PIRUS_SERVER_TOKEN`` (set for every kernel the server starts), then the running Jupyter
    servers (``jupyter_server.serverapp.list_running_servers()``) whose root folder contains
    the current directory. A ``url`` given without a token takes the token of a running
    server at that URL, or ``PIRUS_SERVER_TOKEN`` when the environment names the same server.

    Raises :class:`PirusConnectionError` saying what was tried when no candidate answers, and
    :class:`PirusAPIError` when a server answers but refuses (e.g. a wrong token).
    ``hint`` ends the first one's message: what to do, in the caller's terms (the CLI has
    its own options).
    """
    tried: list[str] = []
    candidates: list[tuple[str, str, str, Path | None]] = []  # url, token, source, root
    env_url, env_token = os.environ.get(URL_ENV), os.environ.get(TOKEN_ENV)
    if url:
        if token is None:
            if env_url and same_server(env_url, url):
                token = env_token
            else:
                token = next((i.get("token", "") for i in running_servers()
                              if i.get("url") and same_server(i["url"], url)), "")
        candidates.append((url, token or "", "the url argument", None))
    elif env_url:
        candidates.append((env_url, token if token is not None else env_token or "",
                           f"${URL_ENV}", None))
    else:
        tried.append(f"${URL_ENV} (not set)")
        cwd = Path.cwd().resolve()
        servers = servers_containing(cwd)
        if not servers:
            listed = [f"{i.get('url')} (root {i.get('root_dir')})" for i in running_servers()]
            tried.append("running Jupyter servers whose root folder contains "
                         f"{cwd}: none (listed: {', '.join(listed) or 'no server'})")
        for info in servers:
            candidates.append((info["url"], token if token is not None else
                               info.get("token", ""), "a running Jupyter server",
                               Path(info["root_dir"])))
    refused: PirusAPIError | None = None
    for cand_url, cand_token, source, root in candidates:
        client = Client(cand_url, cand_token, root_dir=root, timeout=timeout)
        try:
            client.info()
        except PirusConnectionError as e:
            tried.append(f"{source} {cand_url}: {e}")
            client.close()
            continue
        except PirusAPIError as e:
            client.close()
            if e.status == 404:
                tried.append(f"{source} {cand_url}: no Pirus API there (is the pirus_jupyter "
                             "server extension enabled?)")
                continue
            tried.append(f"{source} {cand_url}: {e}")
            refused = refused or e
            continue
        return client
    if refused is not None and len(candidates) == 1:
        raise refused
    raise PirusConnectionError(
        "no Pirus server reachable. Tried: " + "; ".join(tried) + (". " + hint if hint else "."))

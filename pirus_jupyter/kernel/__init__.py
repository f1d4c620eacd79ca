"""The kernel-side toolkit: talk to a Pirus server from Python (a notebook kernel or the CLI).

* :mod:`.discovery`: :func:`connect`, finding the server and its token;
* :mod:`.servers`: the Jupyter servers running on this machine;
* :mod:`.client`: :class:`Client`, the REST calls;
* :mod:`.records`: :class:`File`, :class:`Pipeline`, :class:`Run` and the pipeline-by-name
  resolver;
* :mod:`.events`: the shared events websocket;
* :mod:`.uploader`: resumable TUS uploads; :mod:`.progress`: their progress, ``human_size``;
* :mod:`.errors`: :class:`PirusAPIError`, :class:`PirusConnectionError`;
* :mod:`.views`: where the notebook views (widgets) of records are registered.

kernel/ never imports :mod:`pirus_jupyter.widgets`: the widgets build on it and register their
views in :mod:`.views`. Importing this package imports nothing else; users import the notebook
API from :mod:`pirus_jupyter` (``pirus.connect()``).
"""

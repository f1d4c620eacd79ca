"""The kernel-side toolkit: the REST/websocket client and resumable uploads. Never imports
ipywidgets at module level; the widgets (:mod:`pirus_jupyter.widgets`) build on it."""

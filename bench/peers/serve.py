"""Serve a peer app on moeconnect's own server stack: ``python serve.py MODULE:APP PORT``.

The peers are measured against moeconnect, so they run under exactly the uvicorn options
``moeconnect serve`` uses (:func:`moeconnect.http.server.uvicorn_options`): one worker, uvloop,
the same httptools protocol, no access log, no proxy-header middleware.
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from moeconnect.http.server import uvicorn_options


def main() -> None:
    app, port = sys.argv[1], int(sys.argv[2])
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    options = uvicorn_options()
    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning", **options)


if __name__ == "__main__":
    main()

"""A socket server (http.server's, werkzeug's) served from a thread for the length of a ``with`` block.

Tests stand up small HTTP servers on 127.0.0.1 (a TUF file server, a fake fleet server, a metrics
stub); this is the one place that starts one in a daemon thread and, whatever the test did, shuts it
down, closes its socket and joins the thread, so that no test leaves a listener behind.
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
from typing import Iterator


@contextlib.contextmanager
def served_in_thread(server: socketserver.BaseServer, poll_interval: float = 0.05) -> Iterator[int]:
    """Serve ``server`` until the block ends; yields its port (it listens on 127.0.0.1)."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True)
    thread.start()
    try:
        address = server.server_address  # TCP servers: (host, port)
        assert isinstance(address, tuple), address
        yield int(address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

"""The server's listening socket: connections it accepts send small writes at once
(TCP_NODELAY). Without it each keep-alive request waited for the client's delayed ACK
(~44 ms on loopback instead of ~1 ms, measured with httpx against uvicorn; see network.py)."""

from __future__ import annotations

import socket

from adaptlab.serve.network import listening_socket


def test_accepted_connections_have_nagle_off() -> None:
    with listening_socket("127.0.0.1", 0) as listener:
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        with socket.create_connection(listener.getsockname()[:2], timeout=5):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

"""Where adaptlab's local servers listen, and which Host headers they answer: shared by the
rating page (:mod:`adaptlab.serve.rating`) and the model server (:mod:`adaptlab.serve.app`)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from ipaddress import ip_address

LOOPBACK_NAMES = ("127.0.0.1", "localhost")
"""Host headers a server answers when it listens on loopback: a web page elsewhere that points
a name of its own at 127.0.0.1 (DNS rebinding) gets no answer."""


class ListenError(OSError):
    """The server cannot listen where it was asked to."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str) -> tuple[str, ...]:
    """The Host headers a server listening on ``host`` answers: the loopback names when it
    listens on loopback by name, any otherwise (``*``)."""
    return LOOPBACK_NAMES if host in LOOPBACK_NAMES else ("*",)


def listening_socket(
    host: str, port: int, error: Callable[[str], Exception] = ListenError
) -> socket.socket:
    """A socket bound to ``host:port`` and listening, or ``error`` (a message) saying why not
    (a port in use, an address this machine does not have)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.create_server((host, port), family=family)
        # Accepted connections inherit this (Linux). Without it a response's last small write
        # waits for the client's delayed ACK: every keep-alive request took ~44 ms on loopback
        # instead of ~1 ms (measured with httpx against uvicorn's h11 protocol).
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return listener
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise error(
            f"cannot listen on {host}:{port}: {reason}; choose another --port or --host"
        ) from None

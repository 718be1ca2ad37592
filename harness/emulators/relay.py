"""A TCP relay in front of an emulator on 127.0.0.1: it passes each connection on to the server
it chooses (:meth:`TcpRelay.upstream`), and a test can cut every live connection at once
(:meth:`TcpRelay.sever`: what a network failure or a crashed server looks like to the client)."""

from __future__ import annotations

import socket
import threading


class TcpRelay:
    #: every thread of a relay is named with this prefix, so a test that counts the client's
    #: threads can leave the emulators' own out
    THREAD_PREFIX = "emulator-relay"

    def __init__(self, target_port: int, name: str = "") -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.name = f"{self.THREAD_PREFIX}-{name}" if name else self.THREAD_PREFIX
        threading.Thread(target=self._accept, daemon=True, name=self.name).start()

    def upstream(self, downstream: socket.socket) -> socket.socket:
        """The connection to the server for ``downstream`` (raises OSError when there is none)."""
        return socket.create_connection(("127.0.0.1", self.target_port))

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(downstream,), daemon=True,
                             name=f"{self.name}-connection").start()

    def _connect(self, downstream: socket.socket) -> None:
        try:
            upstream = self.upstream(downstream)
        except OSError:
            downstream.close()
            return
        for sock in (downstream, upstream):
            # no Nagle: a 20 ms audio frame must not wait for the previous one's ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sockets.update((downstream, upstream))
        threading.Thread(target=self._pump, args=(upstream, downstream), daemon=True,
                         name=f"{self.name}-pump").start()
        self._pump(downstream, upstream)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source, target)

    def _close(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self._lock:
                self._sockets.discard(sock)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def sever(self) -> None:
        """Cut every connection now."""
        with self._lock:
            live = list(self._sockets)
        self._close(*live)

    def close(self) -> None:
        self.listener.close()
        self.sever()

"""Who may talk to the FastAGI server: the allowed peer addresses and the shared secret.

* ``[fastagi] allow``: addresses and CIDR networks, comma-separated. The peer's address is checked
  as soon as its connection is accepted, before a byte of it is read; an IPv4 peer reaching an
  IPv6 socket (``::ffff:127.0.0.1``) matches its IPv4 entry.
* ``[fastagi] secret``: when set, the dialplan's URL carries it
  (``agi://host:port/voiceassist?secret=...``, see :func:`voiceassist.asterisk.dialplan.fastagi_url`).
  Asterisk delivers the URL's query only inside ``agi_network_script`` (and ``agi_request``), so it
  is checked once the environment block is in, before any work, in constant time.
* ``voiceassist serve`` refuses to listen beyond loopback unless one of the two protects it.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
import threading
import time
from urllib.parse import parse_qs

from ..errors import ConfigError
from ..logs import logger

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A refused peer is logged at most once per this many seconds (with the count of the rest) ...
REFUSAL_LOG_INTERVAL = 60.0
# ... and at most this many peers per interval: a flood from many addresses cannot flood the log.
REFUSAL_LOG_PEERS = 50


def _unmapped(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_allow(text: str) -> tuple[Network, ...]:
    """``[fastagi] allow`` as networks (a single address is a /32 or /128).

    Raises:
        ConfigError: an entry is not an address or network, or the list is empty.
    """
    networks: list[Network] = []
    for entry in text.replace(",", " ").split():
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"[fastagi] allow: {entry!r} is not an IP address or network (CIDR)") from None
        mapped = network.network_address
        if isinstance(network, ipaddress.IPv6Network) and isinstance(mapped, ipaddress.IPv6Address) \
                and mapped.ipv4_mapped is not None and network.prefixlen >= 96:
            network = ipaddress.IPv4Network((mapped.ipv4_mapped, network.prefixlen - 96))
        networks.append(network)
    if not networks:
        raise ConfigError("[fastagi] allow is empty: list the addresses of the Asterisk servers (e.g. 127.0.0.1, ::1)")
    return tuple(networks)


def peer_address(host: str) -> Address | None:
    """The peer's address as an object (IPv4-mapped IPv6 as IPv4, the %scope dropped), or None."""
    try:
        return _unmapped(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        return None


def is_allowed(host: str, networks: tuple[Network, ...]) -> bool:
    address = peer_address(host)
    return address is not None and any(address.version == net.version and address in net for net in networks)


def secret_matches(network_script: str, secret: str) -> bool:
    """Whether the ``?secret=`` of the AGI URL (as Asterisk delivers it in ``agi_network_script``,
    still percent-encoded) is ``secret``: exactly one, compared in constant time."""
    _, _, query = network_script.partition("?")
    try:
        given = parse_qs(query, keep_blank_values=True, max_num_fields=20).get("secret", [])
    except ValueError:
        return False
    if len(given) != 1:
        return False
    return hmac.compare_digest(given[0].encode("utf-8", "replace"), secret.encode("utf-8", "replace"))


def route_of(network_script: str) -> str:
    """The route part of ``agi_network_script`` (``voiceassist`` of ``voiceassist?secret=...``)."""
    return network_script.split("?", 1)[0].strip("/")


def is_loopback_host(host: str) -> bool:
    """Whether binding ``host`` listens on loopback only (a wildcard or an unresolvable name: no)."""
    address = peer_address(host)
    if address is not None:
        return address.is_loopback
    if host in ("", "*"):
        return False
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    addresses = [peer_address(str(info[4][0])) for info in infos]
    return bool(addresses) and all(a is not None and a.is_loopback for a in addresses)


def check_exposure(host: str, networks: tuple[Network, ...], secret: str) -> None:
    """Refuse to listen beyond loopback when nothing but the default allow list protects it.

    Raises:
        ConfigError: ``host`` is not loopback, ``[fastagi] allow`` lists only loopback peers and
            no ``[fastagi] secret`` is set.
    """
    if is_loopback_host(host) or secret or any(not net.is_loopback for net in networks):
        return
    raise ConfigError(f"refusing to listen on {host or '*'}: beyond this machine, yet [fastagi] allow lists only "
                      "loopback peers and no [fastagi] secret is set (list the Asterisk servers in allow, "
                      "set a secret, or use host = 127.0.0.1)")


class RefusalLog:
    """Logs refused connections once per peer per :data:`REFUSAL_LOG_INTERVAL`, with how many
    were left out; safe from any thread, and bounded whatever the number of peers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._suppressed_elsewhere = 0

    def __call__(self, peer: str, reason: str) -> None:
        try:
            self._note(peer, reason)
        except Exception:  # logging a refusal must never take the server (or a thread) down
            pass

    def _note(self, peer: str, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._logged) >= REFUSAL_LOG_PEERS:
                for old in [p for p, at in self._logged.items() if now - at >= REFUSAL_LOG_INTERVAL]:
                    del self._logged[old]
                    self._suppressed.pop(old, None)
            last = self._logged.get(peer)
            if last is not None and now - last < REFUSAL_LOG_INTERVAL:
                self._suppressed[peer] = self._suppressed.get(peer, 0) + 1
                return
            if last is None and len(self._logged) >= REFUSAL_LOG_PEERS:
                self._suppressed_elsewhere += 1
                return
            self._logged[peer] = now
            before = self._suppressed.pop(peer, 0)
            elsewhere, self._suppressed_elsewhere = self._suppressed_elsewhere, 0
        more = f"; {before} more from it in the last minute" if before else ""
        if elsewhere:
            more += f"; {elsewhere} from other peers not logged"
        logger.warning("[AGI] refused %s: %s%s", peer, reason, more)


class ConnectionGate:
    """A media server's door: only peers in ``allow``, at most ``limit`` connections at once;
    each refusal goes to the refusal log with ``what`` (the transport)."""

    def __init__(self, allow: tuple[Network, ...], limit: int, what: str) -> None:
        self.allow = allow
        self.limit = limit
        self.what = what
        self.refuse = RefusalLog()
        self._active = 0
        self._lock = threading.Lock()

    def allowed(self, host: str) -> bool:
        if is_allowed(host, self.allow):
            return True
        self.refuse(host, f"not in [live] allow ({self.what})")
        return False

    def enter(self, host: str) -> bool:
        """Take one of the ``limit`` places (give it back with :meth:`leave`)."""
        with self._lock:
            if self._active < self.limit:
                self._active += 1
                return True
        self.refuse(host, f"{self.limit} media connections already open")
        return False

    def leave(self) -> None:
        with self._lock:
            self._active -= 1

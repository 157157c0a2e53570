"""Kafka connections: the options every Kafka client of Vigil is built with, and a pre-flight
check that turns a refused certificate or password into one clear error.

    security = security_from_env()            # or ServeSettings.kafka; see detector.settings
    preflight(security, "kafka-1:9093")       # raises KafkaAccessError("Kafka at kafka-1:9093 refused ...")
    KafkaProducer(**client_options(security, bootstrap_servers="kafka-1:9093", client_id="vigil-x"))

kafka-python treats a failed TLS handshake or SASL authentication like an unreachable broker: it
logs and retries until its bootstrap timeout, then reports "Unable to bootstrap". preflight()
instead connects once to a bootstrap server the way the clients will (TLS with the same
SSLContext, an ApiVersions request, SASL with kafka-python's own mechanism) and classifies what
went wrong.
"""

from __future__ import annotations

import socket
import ssl
import struct

from detector.settings import KafkaSecurity, SettingsError, security_from_env

__all__ = ["KafkaAccessError", "KafkaSecurity", "client_options", "preflight", "security_from_env", "ssl_context"]

METADATA, API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 3, 18, 17, 36
MAX_RESPONSE = 1 << 20
ERRORS = {33: "UNSUPPORTED_SASL_MECHANISM", 34: "ILLEGAL_SASL_STATE", 35: "UNSUPPORTED_VERSION",
          58: "SASL_AUTHENTICATION_FAILED"}


class KafkaAccessError(Exception):
    """The broker refused this client's certificate or credentials, or they do not fit the listener."""


class _KeyPasswordNeeded(Exception):
    pass


def _key_password_needed():
    raise _KeyPasswordNeeded


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    """The TLS settings as an SSLContext (what kafka-python would build from ssl_cafile etc.,
    with the key's password kept out of the client configuration)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = security.ssl_check_hostname
    try:
        if security.ssl_cafile:
            context.load_verify_locations(security.ssl_cafile)
        else:
            context.load_default_certs()
    except (OSError, ssl.SSLError) as e:
        raise SettingsError(f"kafka_ssl_cafile: cannot load CA certificates from {security.ssl_cafile}: {e}") from None
    if security.ssl_certfile:
        try:
            context.load_cert_chain(security.ssl_certfile, security.ssl_keyfile or None,
                                    password=security.ssl_key_password or _key_password_needed)
        except _KeyPasswordNeeded:
            raise SettingsError(f"kafka_ssl_keyfile: {security.ssl_keyfile or security.ssl_certfile} is encrypted: "
                                "set VIGIL_KAFKA_SSL_KEY_PASSWORD or kafka_ssl_key_password_file") from None
        except (OSError, ssl.SSLError) as e:
            raise SettingsError(f"kafka_ssl_certfile: cannot load the client certificate {security.ssl_certfile} "
                                f"with key {security.ssl_keyfile or '(in the same file)'} (not PEM, a key that "
                                f"does not match, or a wrong key password): {e}") from None
    return context


def client_options(security: KafkaSecurity, **options) -> dict:
    """kafka-python keyword arguments: `options` (bootstrap_servers, client_id, ...) plus security.
    Every KafkaConsumer / KafkaProducer / KafkaAdminClient of Vigil is built with these."""
    out = dict(options, security_protocol=security.security_protocol.upper())
    if security.tls:
        out["ssl_context"] = ssl_context(security)
    if security.sasl:
        out.update(sasl_mechanism=security.sasl_mechanism.upper(), sasl_plain_username=security.sasl_username,
                   sasl_plain_password=security.password)
    return out


def _servers(bootstrap_servers: str) -> list[tuple[str, int]]:
    out = []
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host:
            host, port = port, "9092"
        out.append((host.strip("[]"), int(port)))
    return out


def preflight(security: KafkaSecurity, bootstrap_servers: str, timeout: float = 10.0) -> None:
    """Connect to the first bootstrap server that accepts TCP connections as the clients will, and
    raise KafkaAccessError with one line naming the problem if TLS, the first request or SASL
    fails. Returns quietly when all is well, or when no server is reachable: the clients' own
    retries cover a broker that is not up yet."""
    context = ssl_context(security) if security.tls else None
    for host, port in _servers(bootstrap_servers):
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError:
            continue
        _Check(security, host, port, context).run(sock)
        return


class _Check:
    """One connection: TLS handshake, ApiVersions, SASL handshake and authentication (SASL_*),
    then a Metadata request for no topics."""

    def __init__(self, security: KafkaSecurity, host: str, port: int, context: ssl.SSLContext | None):
        self.security, self.host, self.context = security, host, context
        self.where = f"Kafka at {host}:{port}"
        self.protocol = security.security_protocol.upper()
        self.stage = "the TLS handshake" if context else "the first request"
        self.correlation = 0

    def run(self, sock: socket.socket) -> None:
        try:
            with sock:
                if self.context is not None:
                    sock = self.context.wrap_socket(sock, server_hostname=self.host)
                    self.stage = "the first request"
                with sock:
                    # with TLS 1.3 a refused client certificate shows here, at the first read
                    self.request(sock, API_VERSIONS, 0, b"")
                    if self.security.sasl:
                        self.authenticate(sock)
                    self.stage = "a metadata request"  # refused without SASL on a SASL listener
                    self.request(sock, METADATA, 4, struct.pack(">ib", 0, 0))  # no topics, no auto-creation
        except ssl.SSLCertVerificationError as e:
            raise KafkaAccessError(self.untrusted(e)) from None
        except ssl.SSLError as e:
            raise KafkaAccessError(self.tls_refused(e)) from None
        except TimeoutError:
            raise KafkaAccessError(f"{self.where} did not answer {self.stage} in time; is kafka_security_protocol "
                                   f"({self.protocol}) the one of this listener?") from None
        except (ConnectionError, EOFError) as e:
            raise KafkaAccessError(f"{self.where} closed the connection during {self.stage} ({e or 'no answer'}); "
                                   f"is kafka_security_protocol ({self.protocol}) the one of this listener?") from None
        except OSError as e:
            raise KafkaAccessError(f"{self.where}: {self.stage} failed: {e}") from None

    # -- messages ----------------------------------------------------------------------------
    def untrusted(self, e: ssl.SSLCertVerificationError) -> str:
        if e.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
            return (f"{self.where}: its certificate does not name {self.host!r} ({e.verify_message}); connect by a "
                    "name the certificate lists, or set kafka_ssl_check_hostname = false")
        trusted = f"kafka_ssl_cafile {self.security.ssl_cafile}" if self.security.ssl_cafile else "the system CAs"
        return f"{self.where}: its certificate is not trusted by {trusted} ({e.verify_message})"

    def tls_refused(self, e: ssl.SSLError) -> str:
        reason = (e.reason or str(e)).lower().replace("_", " ")
        if e.reason in ("WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING") or isinstance(e, ssl.SSLEOFError):
            return (f"{self.where} did not complete a TLS handshake ({reason}); is kafka_security_protocol "
                    f"({self.protocol}) the one of this listener?")
        if "certificate" in reason or "unknown ca" in reason:  # the broker's alert: it refused ours
            if not self.security.ssl_certfile:
                return (f"{self.where} requires a client certificate ({reason}): set kafka_ssl_certfile and "
                        "kafka_ssl_keyfile")
            return (f"{self.where} refused the client certificate kafka_ssl_certfile {self.security.ssl_certfile} "
                    f"({reason}); is it signed by a CA the broker trusts?")
        return f"{self.where}: TLS failed during {self.stage}: {reason}"

    # -- the Kafka protocol, just enough of it -----------------------------------------------
    def request(self, sock, api_key: int, version: int, body: bytes) -> bytes:
        """Send one request (header v1: non-flexible versions only) and return the response body."""
        self.correlation += 1
        client_id = b"vigil-preflight"
        message = struct.pack(">hhih", api_key, version, self.correlation, len(client_id)) + client_id + body
        sock.sendall(struct.pack(">i", len(message)) + message)
        (size,) = struct.unpack(">i", _read(sock, 4))
        if not 4 <= size <= MAX_RESPONSE:
            raise KafkaAccessError(f"{self.where} answered {self.stage} with something that is not Kafka; is "
                                   f"kafka_security_protocol ({self.protocol}) the one of this listener?")
        return _read(sock, size)[4:]  # response header v0: the correlation id

    def authenticate(self, sock) -> None:
        s = self.security
        mechanism = s.sasl_mechanism.upper()
        self.stage = "the SASL handshake"
        body = self.request(sock, SASL_HANDSHAKE, 1, _string(mechanism))
        (error,), rest = struct.unpack(">h", body[:2]), body[2:]
        offered = _strings(rest)
        if error == 33 or (not error and mechanism not in offered):
            raise KafkaAccessError(f"{self.where} does not offer SASL mechanism {mechanism} (kafka_sasl_mechanism); "
                                   f"it offers {', '.join(offered) or 'none'}")
        if error:
            raise KafkaAccessError(f"{self.where} refused the SASL handshake ({ERRORS.get(error, error)}); is "
                                   f"kafka_security_protocol ({self.protocol}) the one of this listener?")
        self.stage = "SASL authentication"
        client = _sasl_client(mechanism)(host=self.host, security_protocol=self.protocol, sasl_mechanism=mechanism,
                                         sasl_plain_username=s.sasl_username, sasl_plain_password=s.password)
        refused = f"{self.where} refused the SASL credentials of user {s.sasl_username!r} ({mechanism})"
        while not client.is_done():
            body = self.request(sock, SASL_AUTHENTICATE, 0, _bytes(client.auth_bytes()))
            (error,) = struct.unpack(">h", body[:2])
            message, rest = _nullable_string(body[2:])
            if error:
                raise KafkaAccessError(f"{refused}: {message or ERRORS.get(error, error)}")
            try:
                client.receive(rest[4:4 + struct.unpack(">i", rest[:4])[0]])
            except ValueError as e:  # e.g. the server's SCRAM signature did not verify
                raise KafkaAccessError(f"{refused}: {e}") from None
        if not client.is_authenticated():
            raise KafkaAccessError(refused)


def _sasl_client(mechanism: str):
    try:
        from kafka.net.sasl import get_sasl_mechanism  # kafka-python 3
    except ImportError:  # pragma: no cover - kafka-python 2.1+
        from kafka.sasl import get_sasl_mechanism
    return get_sasl_mechanism(mechanism)


def _read(sock, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return bytes(data)


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def _bytes(raw: bytes) -> bytes:
    return struct.pack(">i", len(raw)) + raw


def _nullable_string(data: bytes) -> tuple[str | None, bytes]:
    (n,) = struct.unpack(">h", data[:2])
    if n < 0:
        return None, data[2:]
    return data[2:2 + n].decode(errors="replace"), data[2 + n:]


def _strings(data: bytes) -> list[str]:
    (count,) = struct.unpack(">i", data[:4])
    out, data = [], data[4:]
    for _ in range(max(count, 0)):
        text, data = _nullable_string(data)
        out.append(text or "")
    return out

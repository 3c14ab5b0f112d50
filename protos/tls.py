"""Optional (mutual) TLS on the gRPC connections, from the same four settings in
every process, each process given its own files:

    GRPC_TLS_CERT, GRPC_TLS_KEY   the certificate (chain) this process presents, and its key
    GRPC_TLS_CA                   the CA bundle the peers' certificates must chain to
    GRPC_TLS_SERVER_NAME          (callers) the name to expect in the services' certificates

A service serves TLS when it has a certificate and key, and asks every caller for a
certificate chaining to GRPC_TLS_CA when that is set too. A caller speaks TLS when
GRPC_TLS_CA is set, presenting its certificate and key when it has them. Nothing set:
plaintext, as `make run` does on loopback.

Files are checked when the process starts, so a mistake stops it with a sentence rather
than failing every handshake later. A service reads its files again when they change
(checked at each new connection), so certificates can be renewed without a restart;
a caller reads them once.
"""
from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc

log = logging.getLogger("upload.grpc")

CERT, KEY, CA, SERVER_NAME = "GRPC_TLS_CERT", "GRPC_TLS_KEY", "GRPC_TLS_CA", "GRPC_TLS_SERVER_NAME"


class TlsSettingError(Exception):
    """A TLS setting that cannot work; the message is a sentence naming it."""


class _Encrypted(Exception):
    pass


def _refuse_passphrase():
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise _Encrypted


def _read(name: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TlsSettingError(f"{name} names {path}, which cannot be read ({exc.strerror}).") from None


def _certificates(name: str, path: str, what: str) -> bytes:
    """The file's bytes, once they are known to hold at least one PEM certificate."""
    data = _read(name, path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii", "replace"))
    except ssl.SSLError:
        raise TlsSettingError(f"{name} ({path}) holds no PEM certificate: it must be {what}, "
                              "in PEM form (-----BEGIN CERTIFICATE-----).") from None
    return data


def _key_of(cert_path: str, key_path: str) -> bytes:
    """The key's bytes, once it is known to be the certificate's own, usable as it is."""
    data = _read(KEY, key_path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_path, key_path, password=_refuse_passphrase)
    except _Encrypted:
        raise TlsSettingError(f"{KEY} ({key_path}) is protected by a passphrase, which gRPC cannot use: "
                              f"give the key without it (openssl pkey -in {key_path} -out plain.key).") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsSettingError(f"{KEY} ({key_path}) is not the private key of the certificate in {CERT} "
                                  f"({cert_path}): give the key that certificate was made for.") from None
        raise TlsSettingError(f"{KEY} ({key_path}) holds no PEM private key "
                              "(-----BEGIN PRIVATE KEY-----) that TLS can use.") from None
    except OSError as exc:  # (after SSLError, one of its kind) removed since it was read: a renewal under way
        raise TlsSettingError(f"{KEY} names {key_path}, which cannot be read ({exc.strerror}).") from None
    return data


def _paths(env: Mapping[str, str]) -> tuple[str, str, str]:
    # Read by their literal names: tests/test_settings_documented.py finds settings that way.
    cert = env.get("GRPC_TLS_CERT", "").strip()
    key = env.get("GRPC_TLS_KEY", "").strip()
    ca = env.get("GRPC_TLS_CA", "").strip()
    if cert and not key:
        raise TlsSettingError(f"{CERT} is set but {KEY} is not: a certificate is presented with the private "
                              "key it was made for, so set both (or neither).")
    if key and not cert:
        raise TlsSettingError(f"{KEY} is set but {CERT} is not: a private key is used with its certificate, "
                              "so set both (or neither).")
    return cert, key, ca


def _stop(error: TlsSettingError) -> SystemExit:
    return SystemExit(str(error))


# --- the services' side ---

@dataclass(frozen=True)
class _ServerFiles:
    cert: bytes
    key: bytes = field(repr=False)  # never in a log line or a traceback's locals
    ca: bytes | None

    def configuration(self):
        return grpc.ssl_server_certificate_configuration([(self.key, self.cert)], root_certificates=self.ca)


class ServerTls:
    """A service's certificate, key and (for mutual TLS) CA bundle, read again when they change."""

    def __init__(self, cert_path: str, key_path: str, ca_path: str = "", who: str = "the service"):
        self.cert_path, self.key_path, self.ca_path = cert_path, key_path, ca_path
        self.who = who
        self._lock = threading.Lock()
        self._seen = self._signature()
        self._files = self._load()  # a TlsSettingError here is the caller's to report

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, who: str = "the service") -> ServerTls | None:
        """The service's TLS, or None for plaintext; a setting that cannot work stops the start."""
        env = os.environ if env is None else env
        try:
            cert, key, ca = _paths(env)
            if not cert:
                if ca:
                    raise TlsSettingError(
                        f"{CA} is set but {CERT} and {KEY} are not: {who} serves TLS only with a certificate "
                        f"of its own, so set them too (or unset {CA} to serve plaintext).")
                return None
            return cls(cert, key, ca, who)
        except TlsSettingError as error:
            raise _stop(error) from None

    @property
    def mutual(self) -> bool:
        return bool(self.ca_path)

    def describe(self) -> str:
        if self.mutual:
            return f"mutual TLS (callers need a certificate from {self.ca_path})"
        return "TLS (callers are not asked for a certificate)"

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._files.configuration(), self._fetch, require_client_authentication=self.mutual)

    def _load(self) -> _ServerFiles:
        cert = _certificates(CERT, self.cert_path, f"the certificate (chain) {self.who} presents")
        key = _key_of(self.cert_path, self.key_path)
        ca = _certificates(CA, self.ca_path, "the CA certificate(s) callers' certificates are signed by") \
            if self.ca_path else None
        return _ServerFiles(cert, key, ca)

    def _signature(self) -> tuple:
        def one(path):
            try:
                st = os.stat(path)
            except OSError:
                return None
            return st.st_ino, st.st_size, st.st_mtime_ns

        return tuple(one(p) for p in (self.cert_path, self.key_path, self.ca_path) if p)

    def _fetch(self):
        """gRPC asks before every handshake: a new configuration when the files changed
        and still make one that works, else None (keep serving the last good one)."""
        signature = self._signature()
        with self._lock:
            if signature == self._seen:
                return None
            # Remembered before loading: a half-written renewal (the certificate replaced,
            # its key not yet) is tried again only when a file changes again.
            self._seen = signature
        try:
            files = self._load()
        except TlsSettingError as error:
            log.warning("TLS files changed but cannot be used, still serving the ones loaded before: %s", error)
            return None
        with self._lock:
            self._files = files
        log.info("TLS files changed: new connections get the certificate in %s", self.cert_path)
        return files.configuration()


# --- the callers' side ---

@dataclass(frozen=True)
class ClientTls:
    """What a caller (the gateway, the health check) needs to reach TLS services."""
    ca: bytes = field(repr=False)
    cert: bytes | None = field(default=None, repr=False)
    # Never in a log line or a dump of the gateway's settings.
    key: bytes | None = field(default=None, repr=False)
    # The name expected in the services' certificates, instead of the target's host
    # (for targets that are IP addresses, or names the certificates do not carry).
    server_name: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, who: str = "this caller") -> ClientTls | None:
        """The caller's TLS, or None for plaintext; a setting that cannot work stops the start."""
        env = os.environ if env is None else env
        try:
            return cls._from_env(env, who)
        except TlsSettingError as error:
            raise _stop(error) from None

    @classmethod
    def _from_env(cls, env: Mapping[str, str], who: str) -> ClientTls | None:
        cert_path, key_path, ca_path = _paths(env)
        server_name = env.get("GRPC_TLS_SERVER_NAME", "").strip()
        if not ca_path:
            # No silent plaintext for a caller that was given TLS settings, nor a silent
            # fallback to public roots: the services' certificates come from a CA of the operator's.
            if cert_path:
                raise TlsSettingError(
                    f"{CERT} and {KEY} are set but {CA} is not: {who} checks the services' certificates "
                    f"against that CA bundle, so set it too (or unset them to call in plaintext).")
            if server_name:
                raise TlsSettingError(
                    f"{SERVER_NAME} is set but {CA} is not: the name is checked in the services' certificates, "
                    f"which only TLS has, so set {CA} too (or unset {SERVER_NAME}).")
            return None
        ca = _certificates(CA, ca_path, "the CA certificate(s) the services' certificates are signed by")
        if not cert_path:
            return cls(ca, server_name=server_name)
        cert = _certificates(CERT, cert_path, f"the certificate (chain) {who} presents")
        return cls(ca, cert, _key_of(cert_path, key_path), server_name)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def open_channel(target: str, tls: ClientTls | None, options: Sequence[tuple] = ()) -> grpc.Channel:
    """A channel to ``target``: TLS with ``tls``, plaintext without."""
    if tls is None:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, tls.credentials(), options=[*options, *tls.options()])

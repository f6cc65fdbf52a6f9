"""Transport security for every inloop service and client: mTLS and bearer tokens.

Server side (`ServerSecurity`, from the serve options tls_cert/tls_key/tls_ca, plaintext,
token_file):
  - all three TLS files: mTLS, `grpc.ssl_server_credentials(..., require_client_auth=True)`,
    so a client needs a certificate from the same CA;
  - no TLS files: plaintext, allowed only on loopback unless `plaintext` is set explicitly
    (a service never ends up listening unencrypted to other hosts by accident);
  - token_file: every RPC except grpc.health.v1.Health/* must carry
    `authorization: Bearer <token>` (compared in constant time) or gets UNAUTHENTICATED.
    Health stays open so probes and load balancers need no secret.

Client side (`ClientSecurity`): the CA as root, an optional client certificate, and the
token, which an interceptor adds to every call. An interceptor rather than call
credentials, because gRPC only sends call credentials over a secure channel and the
plaintext loopback setup needs the token too. A service's own outgoing calls
(controller -> runtime/tools) use `ServerSecurity.client()`: the same cert/key as client
certificate, the same CA, the same token.
"""
from __future__ import annotations

import argparse
import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

PUBLIC_PREFIX = "/grpc.health.v1.Health/"   # the only RPCs that need no token
AUTH_HEADER = "authorization"
CLIENT_OPTIONS = ("tls_cert", "tls_key", "tls_ca", "token_file")


class SecurityError(ValueError):
    """A security setting that cannot work; the message says how to fix it."""


# ---- reading files ---------------------------------------------------------------------------
def read_pem(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise SecurityError(f"{key} {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise SecurityError(f"{key} {path}: not a PEM file")
    return data


def read_token(path: str) -> str:
    """The token in `path` (surrounding whitespace stripped); empty is an error."""
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecurityError(f"token_file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not token or any(c.isspace() for c in token):
        raise SecurityError(f"token_file {path}: must hold one token without spaces")
    return token


def _check_key_pair(cert_pem: bytes, key_pem: bytes, cert_path: str, key_path: str) -> None:
    """Fail at start, with names, rather than at the first handshake."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SecurityError(f"tls_cert {cert_path} / tls_key {key_path}: {exc}") from None
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        raise SecurityError(f"tls_key {key_path} is not the key of tls_cert {cert_path}")


# ---- server ----------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerSecurity:
    """What a server needs: PEM bytes (all or none), the token, and the plaintext opt-in."""

    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    ca_pem: bytes | None = None
    token: str | None = None
    plaintext: bool = False
    # With mTLS: the certificate common names that may call (any certificate of the CA could
    # otherwise call any service); empty = every name the CA vouches for.
    allow_peers: tuple[str, ...] = ()

    @property
    def tls(self) -> bool:
        return self.cert_pem is not None

    def check_bind(self, host: str) -> None:
        if self.tls or self.plaintext or is_loopback(host):
            return
        raise SecurityError(
            f"refusing to listen on {host} without TLS: only loopback addresses (127.0.0.0/8, ::1, "
            "localhost) may serve plaintext by default. Either give --tls-cert, --tls-key and --tls-ca "
            "(`inloop certs dev --out DIR` makes a dev CA and certificates) for mTLS, or pass "
            "--plaintext (env INLOOP_PLAINTEXT=1) to accept unencrypted connections from other hosts.")

    def server_credentials(self) -> grpc.ServerCredentials | None:
        if not self.tls:
            return None
        return grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)], root_certificates=self.ca_pem,
                                           require_client_auth=True)

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        out: list[grpc.aio.ServerInterceptor] = [BearerTokenInterceptor(self.token)] if self.token else []
        if self.tls and self.allow_peers:
            out.append(PeerNameInterceptor(self.allow_peers))
        return out

    def client(self) -> ClientSecurity:
        """The same identity for this service's own outgoing calls."""
        return ClientSecurity(self.cert_pem, self.key_pem, self.ca_pem, self.token)

    def describe(self) -> dict:
        return {"tls": "mtls" if self.tls else "plaintext", "token": bool(self.token),
                "allow_peers": list(self.allow_peers) if self.tls else None}


def server_security_from_args(args: argparse.Namespace) -> ServerSecurity:
    """Build and check a service's security from its resolved serve options."""
    files = {k: getattr(args, k, None) or None for k in ("tls_cert", "tls_key", "tls_ca")}
    given = [k for k, v in files.items() if v]
    plaintext = bool(getattr(args, "plaintext", False))
    if given and len(given) < 3:
        missing = ", ".join(f"--{k.replace('_', '-')}" for k in files if k not in given)
        raise SecurityError(f"mTLS needs all of --tls-cert, --tls-key and --tls-ca; missing {missing}")
    if given and plaintext:
        raise SecurityError("--plaintext and the --tls-* files both set: choose TLS or plaintext")
    token_file = getattr(args, "token_file", None)
    token = read_token(token_file) if token_file else None
    security = ServerSecurity(token=token, plaintext=plaintext)
    if given:
        cert, key, ca = (read_pem(files[k], k) for k in ("tls_cert", "tls_key", "tls_ca"))
        _check_key_pair(cert, key, files["tls_cert"], files["tls_key"])
        security = ServerSecurity(cert, key, ca, token, plaintext, tuple(getattr(args, "allow_peer", None) or ()))
    security.check_bind(getattr(args, "host", "127.0.0.1"))
    return security


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for any RPC but Health without `authorization: Bearer <token>`."""

    def __init__(self, token: str):
        self._expected = token.encode()

    def problem(self, metadata) -> str | None:
        """None when the metadata carries the token, else the message for the caller. The
        scheme is case-insensitive (RFC 7235: "bearer", "BEARER" are "Bearer")."""
        values = [v for k, v in (metadata or ()) if k.lower() == AUTH_HEADER]
        if not values:
            return ("missing bearer token: this service requires metadata 'authorization: Bearer <token>' "
                    "(clients: --token-file or INLOOP_TOKEN_FILE)")
        tokens = [bearer_token(v) for v in values]
        if any(t is not None and hmac.compare_digest(t, self._expected) for t in tokens):
            return None
        if all(t is None for t in tokens):
            return "malformed authorization metadata: expected 'Bearer <token>'"
        return "invalid bearer token"

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(PUBLIC_PREFIX):
            return handler
        message = self.problem(handler_call_details.invocation_metadata)
        return handler if message is None else _refusing(handler, message)


def bearer_token(value) -> bytes | None:
    text = value if isinstance(value, str) else value.decode(errors="replace")
    scheme, _, token = text.strip().partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" and token.strip() else None


class PeerNameInterceptor(grpc.aio.ServerInterceptor):
    """PERMISSION_DENIED for any RPC but Health from a client certificate whose common name is
    not allowed (`--allow-peer`): the CA vouches for who a peer is, this for what it may call."""

    def __init__(self, allowed: tuple[str, ...]):
        self.allowed = frozenset(allowed)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(PUBLIC_PREFIX):
            return handler
        return _checked(handler, self._problem)

    def _problem(self, context) -> str | None:
        names = [n.decode(errors="replace") for n in context.auth_context().get("x509_common_name", [])]
        if any(n in self.allowed for n in names):
            return None
        return (f"certificate {'/'.join(names) or '(none)'} may not call this service; allowed: "
                f"{', '.join(sorted(self.allowed))} (--allow-peer)")


def _checked(handler: grpc.RpcMethodHandler, problem) -> grpc.RpcMethodHandler:
    """`handler` run only when problem(context) is None, else PERMISSION_DENIED."""
    codecs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_unary or handler.stream_unary:
        inner = handler.unary_unary or handler.stream_unary

        async def unary(request, context):
            if (message := problem(context)) is not None:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
            return await inner(request, context)
        make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        return make(unary, **codecs)
    inner = handler.unary_stream or handler.stream_stream

    async def stream(request, context):
        if (message := problem(context)) is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
        async for item in inner(request, context):
            yield item
    make = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
    return make(stream, **codecs)


def _refusing(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only aborts with UNAUTHENTICATED."""
    async def refuse(_request_or_iterator, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    codecs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, **codecs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse, **codecs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, **codecs)
    return grpc.stream_stream_rpc_method_handler(refuse, **codecs)


# ---- client ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClientSecurity:
    """A client's identity: CA roots, optional client certificate, optional token."""

    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    ca_pem: bytes | None = None
    token: str | None = None

    @property
    def tls(self) -> bool:
        return self.ca_pem is not None or self.cert_pem is not None

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(root_certificates=self.ca_pem, private_key=self.key_pem,
                                            certificate_chain=self.cert_pem)

    def sync_interceptors(self) -> list:
        return [_SyncTokenInterceptor(self.token)] if self.token else []

    def aio_interceptors(self) -> list:
        if not self.token:
            return []
        return [cls(self.token) for cls in (_AioUnaryUnary, _AioUnaryStream, _AioStreamUnary, _AioStreamStream)]


def client_security_from_args(args: argparse.Namespace | None = None,
                              env: Mapping[str, str] | None = None) -> ClientSecurity:
    """A client's security from --tls-*/--token-file (flag, else env INLOOP_*); any may be absent.

    Usable by any client (the loadgen included): attributes missing on `args` fall back to env.
    The flags come from inloop.services.common.config.add_client_security_options.
    """
    env = os.environ if env is None else env
    values = {}
    for key in CLIENT_OPTIONS:
        values[key] = getattr(args, key, None) or env.get("INLOOP_" + key.upper()) or None
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        raise SecurityError("a client certificate needs both --tls-cert and --tls-key")
    pems = {k: read_pem(values[k], k) if values[k] else None for k in ("tls_cert", "tls_key", "tls_ca")}
    if pems["tls_cert"]:
        _check_key_pair(pems["tls_cert"], pems["tls_key"], values["tls_cert"], values["tls_key"])
    token = read_token(values["token_file"]) if values["token_file"] else None
    return ClientSecurity(pems["tls_cert"], pems["tls_key"], pems["tls_ca"], token)


def _with_token(metadata, token: str) -> list[tuple[str, str]]:
    return [*(metadata or ()), (AUTH_HEADER, f"Bearer {token}")]


class _SyncCallDetails(grpc.ClientCallDetails):
    def __init__(self, details, metadata):
        self.method, self.timeout, self.metadata = details.method, details.timeout, metadata
        self.credentials, self.wait_for_ready = details.credentials, details.wait_for_ready
        self.compression = getattr(details, "compression", None)


class _SyncTokenInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                            grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, token: str):
        self._token = token

    def _details(self, details):
        return _SyncCallDetails(details, _with_token(details.metadata, self._token))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


class _AioToken:
    """grpc.aio picks an interceptor's call type by its class, so one class per type."""

    def __init__(self, token: str):
        self._token = token

    def _details(self, d):
        metadata = grpc.aio.Metadata(*_with_token(d.metadata, self._token))
        return grpc.aio.ClientCallDetails(d.method, d.timeout, metadata, d.credentials, d.wait_for_ready)

    async def _call(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _AioUnaryUnary(_AioToken, grpc.aio.UnaryUnaryClientInterceptor):
    intercept_unary_unary = _AioToken._call


class _AioUnaryStream(_AioToken, grpc.aio.UnaryStreamClientInterceptor):
    intercept_unary_stream = _AioToken._call


class _AioStreamUnary(_AioToken, grpc.aio.StreamUnaryClientInterceptor):
    intercept_stream_unary = _AioToken._call


class _AioStreamStream(_AioToken, grpc.aio.StreamStreamClientInterceptor):
    intercept_stream_stream = _AioToken._call

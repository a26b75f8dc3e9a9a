"""TLS material and bearer tokens, read from SecuritySettings once at start-up.

- `grpc_credentials`: the gRPC port's server credentials (TLS, or mutual TLS with a client CA);
- `http_ssl_context`: the same certificate for the HTTP port;
- `TokenTable`: maps a presented bearer token to its identity, comparing in constant time.
"""

from __future__ import annotations

import hmac
import logging
import ssl
from collections.abc import Mapping
from pathlib import Path

import grpc

from vigil.server.settings import SecuritySettings

logger = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 16
"""Tokens shorter than this are refused at start-up: they could be guessed."""


class TokenTable:
    """Bearer tokens by identity.

    >>> table = TokenTable({"dashboard": "s3cret-token-of-32-characters..."})
    >>> table.identify("s3cret-token-of-32-characters...")
    'dashboard'
    """

    def __init__(self, tokens: Mapping[str, str]) -> None:
        entries: list[tuple[str, bytes]] = []
        seen: dict[bytes, str] = {}
        for identity, token in tokens.items():
            if not identity or any(c.isspace() for c in identity):
                raise ValueError(f"token identity {identity!r} must be a non-empty word")
            encoded = token.encode("utf-8")
            if len(encoded) < MIN_TOKEN_LENGTH:
                raise ValueError(f"the token of {identity!r} has {len(encoded)} bytes; use at least "
                                 f"{MIN_TOKEN_LENGTH} random ones")
            if encoded in seen:
                raise ValueError(f"identities {seen[encoded]!r} and {identity!r} have the same token")
            seen[encoded] = identity
            entries.append((identity, encoded))
        self._entries = entries

    def __bool__(self) -> bool:
        return bool(self._entries)

    @property
    def identities(self) -> list[str]:
        return [identity for identity, _ in self._entries]

    def identify(self, presented: str) -> str | None:
        """The identity whose token this is, or None. Every entry is compared, in constant time, whatever matches,
        so the time taken says nothing about which token (or how much of one) was right."""
        candidate = presented.encode("utf-8", "surrogateescape")
        found: str | None = None
        for identity, token in self._entries:
            if hmac.compare_digest(candidate, token):
                found = identity
        return found


def read_tokens_file(path: Path) -> dict[str, str]:
    """`identity: token` lines; blank lines and `#` comments are skipped. Errors name the line."""
    tokens: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        identity, colon, token = line.partition(":")
        if not colon or not identity.strip() or not token.strip():
            raise ValueError(f"{path}:{number}: expected `identity: token`")
        if identity.strip() in tokens:
            raise ValueError(f"{path}:{number}: identity {identity.strip()!r} is given twice")
        tokens[identity.strip()] = token.strip()
    return tokens


def token_table(settings: SecuritySettings) -> TokenTable:
    """Tokens from `tokens_file` and `tokens` together (an identity in both is an error)."""
    tokens = read_tokens_file(settings.tokens_file) if settings.tokens_file is not None else {}
    for identity, secret in settings.tokens.items():
        if identity in tokens:
            raise ValueError(f"identity {identity!r} has a token both in tokens_file and in tokens")
        tokens[identity] = secret.get_secret_value()
    return TokenTable(tokens)


def bearer_token(value: str) -> str | None:
    """The token of an `authorization` metadata value `Bearer <token>` (scheme case-insensitive), else None."""
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def grpc_credentials(settings: SecuritySettings) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC port, or None for plaintext. With a client CA, clients must present a
    certificate it signed: the TLS handshake itself refuses the others."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    pair = (settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())
    if settings.client_ca_file is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials([pair], root_certificates=settings.client_ca_file.read_bytes(),
                                       require_client_auth=True)


def http_ssl_context(settings: SecuritySettings) -> ssl.SSLContext | None:
    """TLS for the HTTP port, or None for plaintext. A client CA makes client certificates optional there but
    verified when sent (probes and browsers have none; they use the open paths or a token)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.client_ca_file is not None:
        context.load_verify_locations(cafile=settings.client_ca_file)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def certificate_identity(common_name: str) -> str:
    """The identity of a caller known by its client certificate's common name."""
    return f"cert:{common_name}"

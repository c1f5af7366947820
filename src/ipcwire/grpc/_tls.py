"""TLS credentials for gRPC from PEM files (grpcio has its own TLS, not ``ssl.SSLContext``)."""

from __future__ import annotations

import os
import ssl
from typing import Any

from ipcwire.errors import ConfigurationError
from ipcwire.grpc._address import read_pem
from ipcwire.grpc._grpcio import grpc

__all__ = ["client_credentials", "refused_files", "server_credentials"]

PathLike = str | os.PathLike[str]


def server_credentials(
    url: str,
    *,
    tls: bool,
    certfile: PathLike | None,
    keyfile: PathLike | None,
    client_ca: PathLike | None,
    credentials: Any,
) -> Any:
    """``grpc.ServerCredentials`` for a TLS listener, or None for plaintext.

    ``client_ca`` asks clients for a certificate signed by that CA (mutual TLS).

    Raises:
        ConfigurationError: TLS asked for (grpcs://) without a certificate, or unreadable files.
    """
    if credentials is not None:
        return credentials
    if certfile is None and keyfile is None:
        if tls:
            raise ConfigurationError(
                f"{url} is TLS (grpcs://): pass certfile= and keyfile= (PEM files), or "
                f"credentials=grpc.ssl_server_credentials(...)",
                endpoint=url,
            )
        return None
    cert = read_pem(certfile, "certificate")
    key = read_pem(keyfile, "private key")
    if cert is None or key is None:
        raise ConfigurationError(f"{url}: TLS needs both certfile= and keyfile=", endpoint=url)
    ca = read_pem(client_ca, "client CA")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


def client_credentials(
    url: str,
    *,
    tls: bool,
    cafile: PathLike | None,
    certfile: PathLike | None,
    keyfile: PathLike | None,
    credentials: Any,
) -> Any:
    """``grpc.ChannelCredentials`` for a TLS connection, or None for plaintext.

    Raises:
        ConfigurationError: unreadable files, or only one of certfile= and keyfile=.
    """
    if credentials is not None:
        return credentials
    if (certfile is None) != (keyfile is None):
        # grpc's core would abort the whole process at the first connection attempt
        # ("Check failed: private_key != nullptr")
        raise ConfigurationError(
            f"{url}: a client certificate needs both certfile= and keyfile= (PEM files); pass "
            f"both for mutual TLS, or neither",
            endpoint=url,
        )
    if not tls and cafile is None and certfile is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(cafile, "CA certificate"),
        private_key=read_pem(keyfile, "private key"),
        certificate_chain=read_pem(certfile, "certificate"),
    )


def refused_files(
    url: str,
    *,
    certfile: PathLike | None = None,
    keyfile: PathLike | None = None,
    client_ca: PathLike | None = None,
    **_: Any,
) -> ConfigurationError | None:
    """Why a listener's TLS files cannot be used, or None. Asked only after gRPC refused to
    bind with them (it says no more than that), so nothing grpc takes is ever refused here.
    The standard ssl module reads them at its lowest security level, as grpc would."""
    if certfile is None or keyfile is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:  # pragma: no cover - an ssl build without security levels
        pass
    what = "certfile= and keyfile="
    try:
        # (a password the key does not need is ignored; an encrypted key, which grpc
        # cannot open either, fails instead of prompting on the terminal)
        ctx.load_cert_chain(certfile, keyfile, password=b"")
        if client_ca is not None:
            what = "client_ca="
            ctx.load_verify_locations(cafile=client_ca)
    except (ssl.SSLError, OSError, ValueError) as exc:
        return ConfigurationError(
            f"cannot listen at {url}: gRPC cannot use {what} ({exc}); certfile= must be a PEM "
            f"certificate, keyfile= its private key (PEM, not encrypted), client_ca= PEM CA "
            f"certificates",
            endpoint=url,
        )
    return None

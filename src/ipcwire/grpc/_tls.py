"""TLS credentials for gRPC from PEM files (grpcio has its own TLS, not ``ssl.SSLContext``)."""

from __future__ import annotations

import os
from typing import Any

from ipcwire.errors import ConfigurationError
from ipcwire.grpc._address import read_pem
from ipcwire.grpc._grpcio import grpc

__all__ = ["client_credentials", "server_credentials"]

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

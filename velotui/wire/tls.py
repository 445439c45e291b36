"""The client end of pinned TLS: trust the CA in an agent's config (or an operator's), nothing else.

One implementation for the agent, the command line and the console's ``--connect``. The server's
certificate authority and its own context live in ``velotui.server.tls``.
"""

from __future__ import annotations

import ssl

from cryptography import x509
from cryptography.hazmat.primitives import serialization


def pinned_client_ssl_context(ca_pem: bytes | str) -> ssl.SSLContext:
    """A client-side TLS context (TLS 1.2 or newer) that trusts only the given CA.

    No system roots are loaded, and the server's certificate must name the host connected to.
    Raises ValueError when ``ca_pem`` holds no CA certificate.
    """
    ca_certificates = _load_ca_certificates(ca_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED are on
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Strict RFC 5280 checks: a malformed certificate is refused rather than tolerated.
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(
        cadata="".join(
            certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
            for certificate in ca_certificates
        )
    )
    return context


def _load_ca_certificates(ca_pem: bytes | str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(_as_bytes(ca_pem))
    except ValueError as error:
        raise ValueError(f"the pinned CA is not a PEM certificate: {error}") from None
    for certificate in certificates:
        try:
            is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise ValueError("the pinned certificate is not a CA certificate")
    return certificates


def _as_bytes(pem: bytes | str) -> bytes:
    return pem.encode("ascii") if isinstance(pem, str) else pem

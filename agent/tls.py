"""The agent's TLS context: it trusts the CA pinned in its config, and nothing else.

The server has its own copy in ``velotui.server.tls``; the agent may not import the server.
"""

from __future__ import annotations

import ssl


def pinned_ssl_context(ca_pem: str | bytes) -> ssl.SSLContext:
    """A client TLS context (TLS 1.2 or newer) trusting only the CA certificate(s) in ``ca_pem``.

    No system roots are loaded; the server's certificate must name the host connected to. Raises
    ValueError when ``ca_pem`` holds no usable certificate.
    """
    text = ca_pem.decode("ascii", errors="replace") if isinstance(ca_pem, bytes) else ca_pem
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED are on
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Strict RFC 5280 checks: a malformed certificate is refused rather than tolerated.
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    try:
        context.load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError) as error:
        raise ValueError(f"the pinned CA is not a usable PEM certificate: {error}") from None
    if not context.get_ca_certs():
        raise ValueError("the pinned CA holds no certificate")
    return context

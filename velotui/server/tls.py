"""The server's certificate authority, its TLS certificate, and its TLS context.

Agents do not trust the system's roots: their config carries our CA certificate, and the client
end (``velotui.wire.tls``) trusts that CA alone. The CA signs the server certificate, so the
server certificate can be re-issued (new names, expiry) without touching any agent's config.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from os import PathLike

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = datetime.timedelta(days=3650)
SERVER_VALIDITY = datetime.timedelta(days=730)
# Backdated so that an agent whose clock runs a little behind still accepts a fresh certificate.
CLOCK_SKEW_ALLOWANCE = datetime.timedelta(hours=1)

ALWAYS_HOSTNAMES = ("localhost",)
ALWAYS_IP_ADDRESSES = ("127.0.0.1", "::1")


def create_certificate_authority(common_name: str = "velotui CA") -> tuple[bytes, bytes]:
    """Make a self-signed CA (EC P-256), valid 10 years.

    Returns (certificate PEM, unencrypted PKCS#8 private key PEM).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before = _now() - CLOCK_SKEW_ALLOWANCE
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + CA_VALIDITY)
        # path_length=0: this CA signs server certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # Key identifiers: OpenSSL's strict verification (VERIFY_X509_STRICT) requires them.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _certificate_pem(certificate), _private_key_pem(key)


def create_server_certificate(
    ca_cert_pem: bytes | str,
    ca_key_pem: bytes | str,
    hostnames: list[str],
    ip_addresses: list[str],
) -> tuple[bytes, bytes]:
    """Make a server certificate signed by the CA, valid 2 years, for TLS server use only.

    Its SubjectAlternativeName holds every hostname and IP address given, plus "localhost",
    127.0.0.1 and ::1. A hostname that is really an IP address is listed as an IP address.
    Returns (certificate PEM, unencrypted PKCS#8 private key PEM). Raises ValueError for an IP
    address that does not parse, a hostname that cannot be IDNA-encoded, or a CA key that does not
    match the CA certificate.
    """
    ca_certificate = x509.load_pem_x509_certificate(_as_bytes(ca_cert_pem))
    ca_key = serialization.load_pem_private_key(_as_bytes(ca_key_pem), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA private key is not an EC key")
    if ca_key.public_key() != ca_certificate.public_key():
        raise ValueError("the CA private key does not belong to the CA certificate")

    dns_names, ips = _subject_alternative_names(hostnames, ip_addresses)
    key = ec.generate_private_key(ec.SECP256R1())
    public_key = key.public_key()
    not_before = _now() - CLOCK_SKEW_ALLOWANCE
    # Never outlive the CA: a certificate past its issuer's expiry fails verification anyway.
    not_after = min(not_before + SERVER_VALIDITY, ca_certificate.not_valid_after_utc)
    ca_key_identifier = ca_certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name) for name in dns_names] + [x509.IPAddress(ip) for ip in ips]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_identifier),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _certificate_pem(certificate), _private_key_pem(key)


def server_ssl_context(
    cert_path: str | PathLike[str], key_path: str | PathLike[str]
) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or newer) presenting the given certificate and key.

    Raises OSError when a file cannot be read and ssl.SSLError when they do not form a valid pair.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=cert_path, keyfile=key_path)
    return context


def _subject_alternative_names(
    hostnames: list[str], ip_addresses: list[str]
) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    dns_names: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in [*ip_addresses, *ALWAYS_IP_ADDRESSES]:
        ip = ipaddress.ip_address(text.strip())
        if ip not in ips:
            ips.append(ip)
    # The caller's names come first: the first one is also the certificate's common name.
    for text in [*hostnames, *ALWAYS_HOSTNAMES]:
        name = text.strip().rstrip(".")
        if not name:
            continue
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            if ip not in ips:
                ips.append(ip)
            continue
        try:
            # A DNSName must be ASCII: international names are stored as their A-labels.
            name = name.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise ValueError(f"not a valid hostname: {text!r}") from None
        if name not in dns_names:
            dns_names.append(name)
    return dns_names, ips


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _as_bytes(pem: bytes | str) -> bytes:
    return pem.encode("ascii") if isinstance(pem, str) else pem


def _certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )

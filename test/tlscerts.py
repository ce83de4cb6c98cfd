"""Throwaway TLS certificates for tests of TLS Stratum ports."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True, slots=True)
class PoolCertificate:
    """A self-signed pool certificate: its key and certificate files. The
    certificate is also its own CA, so it is what a miner's ``--ca`` names."""

    key: Path
    cert: Path

    def listen(self, port: int, interface: str = "127.0.0.1") -> str:
        """An ``ssl:`` endpoint string serving this certificate."""
        return (
            f"ssl:{port}:interface={interface}"
            f":privateKey={endpoint_quote(str(self.key))}:certKey={endpoint_quote(str(self.cert))}"
        )


def endpoint_quote(value: str) -> str:
    """A value as a Twisted endpoint string needs it: ``:`` and ``\\`` escaped."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def self_signed(folder: Path, names: tuple[str, ...] = LOOPBACK_NAMES) -> PoolCertificate:
    """A fresh P-256 key and a self-signed certificate for ``names`` (IP
    addresses and DNS names, all in subjectAltName), valid for a day."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"nomp test pool {names[0]}")])
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        # A CA too: the miner trusts it as the root of its own one-link chain.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = folder / "pool.key", folder / "pool.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return PoolCertificate(key_path, cert_path)

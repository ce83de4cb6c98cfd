"""What nomp-miner's Stratum and ethash miners share: TLS options, the
counters of a run, and the one line that says why a connection failed."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["AnyCertificate", "MinerStats", "connection_failure", "read_certificates", "tls_options"]

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def read_certificates(path: str) -> list[Certificate]:
    """Every certificate of a PEM file (a bundle may hold several)."""
    with open(path, "rb") as pem:
        blocks = _PEM_CERTIFICATE.findall(pem.read())
    if not blocks:
        raise ValueError(f"no PEM certificate in {path}")
    return [Certificate.loadPEM(block) for block in blocks]


@implementer(IOpenSSLClientConnectionCreator)
class AnyCertificate:
    """TLS that takes whatever certificate the pool shows (``--insecure``):
    encrypted, but open to anyone in the middle."""

    def __init__(self, host: str) -> None:
        # CertificateOptions for its defaults (protocol versions, ciphers).
        self._context = CertificateOptions(verify=False).getContext()
        literal_address = isIPAddress(host) or isIPv6Address(host)
        # SNI: a proxy in front of several pools may route on the name.
        self._server_name = None if literal_address else host.encode("idna")

    def clientConnectionForTLS(self, tls_protocol: object) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tls_protocol)
        if self._server_name is not None:
            connection.set_tlsext_host_name(self._server_name)
        return connection


def tls_options(
    host: str, ca_file: str | None = None, insecure: bool = False
) -> IOpenSSLClientConnectionCreator:
    """How the TLS client checks the pool's certificate.

    It must name ``host`` (a DNS name or an IP address in its subjectAltName)
    and chain to the system's trusted CAs, or with ``ca_file`` to one of the
    certificates there instead: a private CA, or a self-signed pool
    certificate itself. ``insecure`` checks nothing.
    """
    if insecure:
        return AnyCertificate(host)
    trust = platformTrust() if ca_file is None else trustRootFromCertificates(read_certificates(ca_file))
    creator: IOpenSSLClientConnectionCreator = optionsForClientTLS(host, trustRoot=trust)
    return creator


@dataclass
class MinerStats:
    """What the pool said of our shares."""

    submitted: int = 0
    accepted: int = 0
    rejected: Counter[str] | None = None

    def __post_init__(self) -> None:
        self.rejected = Counter()

    @property
    def rejected_total(self) -> int:
        assert self.rejected is not None
        return sum(self.rejected.values())


def connection_failure(failure: Failure, host: str) -> str:
    """One line on why a connection failed (OpenSSL's errors are nested lists)."""
    error = failure.value
    if isinstance(error, VerificationError):
        return f"TLS: the pool's certificate is not for {host}"
    if isinstance(error, SSL.Error) and error.args and isinstance(error.args[0], list):
        return "TLS: " + "; ".join(str(part[-1]) for part in error.args[0] if part)
    return f"{type(error).__name__}: {error}"

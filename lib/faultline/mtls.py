"""Mutual TLS between sidecars: a throwaway certificate authority and the two SSL contexts.

In a mesh every sidecar proves who it is with a certificate from the mesh's own CA, and
accepts only peers that can do the same. ``CertificateAuthority`` makes that CA at run
time (EC P-256 keys, nothing committed, no network) and ``issue`` gives each service an
``Identity``; ``server_ssl_context`` refuses clients without a certificate from the CA,
``client_ssl_context`` presents its own certificate and trusts only servers from the CA.
"""

from __future__ import annotations

import atexit
import datetime as dt
import ipaddress
import shutil
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateAuthority",
    "Identity",
    "client_ssl_context",
    "describe_certificate",
    "server_ssl_context",
]

_BACKDATE = dt.timedelta(hours=1)  # tolerate clocks a little behind ours
_LIFETIME = dt.timedelta(days=1)


@dataclass(frozen=True)
class Identity:
    """A service's certificate and key (PEM files), and the CA file that issued them."""

    name: str
    certfile: Path
    keyfile: Path
    cafile: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _alternative_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        if not isinstance(host, str) or not host:
            raise ValueError(f"hosts must be non-empty strings, got {host!r}")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if not names:
        raise ValueError("hosts must name at least one DNS name or IP address")
    return names


class CertificateAuthority:
    """A self-signed CA made at run time, which issues service identities into ``directory``.

    ``directory=None`` uses a fresh temporary folder, removed by ``cleanup()`` and at
    interpreter exit. Every CA has its own key, so two CAs never trust each other's
    certificates, which is what the tests of mutual TLS need.
    """

    def __init__(self, name: str = "faultline-mesh-ca",
                 directory: str | Path | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        self._temporary = directory is None
        if directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="faultline-ca-"))
            atexit.register(self.cleanup)
        else:
            self.directory = Path(directory)
            self.directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()),
                           critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cafile = self.directory / "ca.pem"
        _write_cert(self.cafile, self._cert)

    def issue(self, name: str, *, hosts: Iterable[str] = ("127.0.0.1", "localhost")) -> Identity:
        """A certificate for service ``name``, valid for ``hosts``, as a client and a server."""
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ValueError(f"name must be a plain non-empty string, got {name!r}")
        if isinstance(hosts, str):
            raise TypeError("hosts must be a sequence of host names, not one string")
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _LIFETIME)
            .add_extension(x509.SubjectAlternativeName(_alternative_names(hosts)),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        certfile = self.directory / f"{name}.pem"
        keyfile = self.directory / f"{name}.key"
        _write_cert(certfile, cert)
        _write_key(keyfile, key)
        return Identity(name, certfile, keyfile, self.cafile)

    def cleanup(self) -> None:
        """Remove a temporary directory made by this CA (a given directory is left alone)."""
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<CertificateAuthority {self.name!r} in {self.directory}>"


def _existing(argument: str, value: Any) -> str:
    if not isinstance(value, str | Path):
        raise TypeError(f"{argument} must be a path (str or Path), got {type(value).__name__}")
    if not Path(value).is_file():
        raise FileNotFoundError(f"{argument}: no such file: {value}")
    return str(value)


def _load(context: ssl.SSLContext, certfile: Any, keyfile: Any, cafile: Any) -> ssl.SSLContext:
    cert, key, ca = (_existing("certfile", certfile), _existing("keyfile", keyfile),
                     _existing("cafile", cafile))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise ValueError(f"certfile {cert} and keyfile {key} are not a matching PEM "
                         f"certificate and key: {exc}") from exc
    try:
        context.load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:
        raise ValueError(f"cafile {ca} is not a PEM certificate: {exc}") from exc
    return context


def server_ssl_context(certfile: str | Path, keyfile: str | Path,
                       cafile: str | Path) -> ssl.SSLContext:
    """A server context that requires every client to present a certificate from ``cafile``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no system CAs: only the mesh's
    context.verify_mode = ssl.CERT_REQUIRED
    return _load(context, certfile, keyfile, cafile)


def client_ssl_context(certfile: str | Path, keyfile: str | Path,
                       cafile: str | Path) -> ssl.SSLContext:
    """A client context that presents its certificate and trusts only servers from ``cafile``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    return _load(context, certfile, keyfile, cafile)


def describe_certificate(path: str | Path) -> dict[str, Any]:
    """What a lesson shows of a PEM certificate: who, issued by whom, when, for which hosts."""
    cert = x509.load_pem_x509_certificate(Path(_existing("path", path)).read_bytes())

    def common_name(name: x509.Name) -> str | None:
        attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(attributes[0].value) if attributes else None

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [*san.get_values_for_type(x509.DNSName),
                *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
    except x509.ExtensionNotFound:
        sans = []
    return {
        "subject": common_name(cert.subject),
        "issuer": common_name(cert.issuer),
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "sans": sans,
    }

"""Development TLS: a private CA and a ``localhost`` certificate it signs.

``ensure(dir)`` writes ``ca.pem``, ``cert.pem`` (leaf + CA chain) and ``key.pem``
(mode 0600) once and keeps them while valid; clients trust ``ca.pem``. Also a
command for the compose ``tls`` service: ``python -m deploy.certs /tls [names...]``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
RENEW_BEFORE = dt.timedelta(days=7)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pgcast development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def generate(directory: Path, names: tuple[str, ...] = DEFAULT_NAMES) -> None:
    """Write a fresh CA and a leaf certificate for ``names`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("pgcast development CA")
    ca = (
        _builder(ca_name, ca_name, ca_key, 3650)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        _builder(_name(names[0]), ca_name, key, 397)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_path = directory / "key.pem"
    key_path.unlink(missing_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    (directory / "cert.pem").write_bytes(_pem(leaf) + _pem(ca))
    (directory / "ca.pem").write_bytes(_pem(ca))


def is_current(directory: Path, names: tuple[str, ...] = DEFAULT_NAMES) -> bool:
    """Whether ``directory`` holds a certificate for ``names`` valid for a while yet."""
    try:
        leaf = x509.load_pem_x509_certificates((directory / "cert.pem").read_bytes())[0]
        if not (directory / "key.pem").exists() or not (directory / "ca.pem").exists():
            return False
    except (OSError, ValueError):
        return False
    expires = leaf.not_valid_after_utc
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return expires - RENEW_BEFORE > dt.datetime.now(dt.UTC) and san == _san(names)


def ensure(directory: Path, names: tuple[str, ...] = DEFAULT_NAMES) -> bool:
    """Generate the files unless current ones exist; True when they were (re)generated."""
    if is_current(directory, names):
        return False
    generate(directory, names)
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m deploy.certs DIR [NAME...]", file=sys.stderr)  # noqa: T201
        return 2
    names = tuple(args[1:]) or DEFAULT_NAMES
    made = ensure(Path(args[0]), names)
    print(f"{'generated' if made else 'kept'} TLS files in {args[0]} for {', '.join(names)}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())

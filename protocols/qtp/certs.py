"""TLS material: a self-signed server certificate made on first use, and client trust.

The server uses `--cert/--key` when given, otherwise `<state-dir>/server-cert.pem` and
`server-key.pem` (created once, EC P-256, valid 10 years; state dir: `--state-dir`,
`$QTP_STATE_DIR` or `~/.cache/qtp`). Clients verify the server against the system CAs
(certifi) or `--ca FILE`; a `--ca` file holding one self-signed certificate *pins* that
certificate: the key is the identity, so when the host the client dials is not among its
names, the certificate's own DNS name is used for the check. `--insecure` turns
verification off and must be asked for explicitly.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_NAME = "server-cert.pem"
KEY_NAME = "server-key.pem"
DEFAULT_DNS = ("qtp-server", "localhost")


def default_state_dir() -> Path:
    env = os.environ.get("QTP_STATE_DIR")
    if env:
        return Path(env)
    return Path(os.path.expanduser("~")) / ".cache" / "qtp"


def _san_for(names: list[str]) -> x509.SubjectAlternativeName:
    out: list[x509.GeneralName] = []
    seen = set()
    for n in names:
        if not n or n in seen:
            continue
        seen.add(n)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(out)


def make_self_signed(names: list[str] | None = None, days: int = 3650) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) of a new self-signed certificate for `names` (DNS names or IPs)."""
    names = list(names or []) + list(DEFAULT_DNS) + ["127.0.0.1", "::1"]
    try:
        names.append(socket.gethostname())
    except OSError:
        pass
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEFAULT_DNS[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(_san_for(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert_pem, key_pem


def ensure_self_signed(
    state_dir: str | os.PathLike | None = None, names: list[str] | None = None
) -> tuple[Path, Path]:
    """Paths of the server certificate and key in `state_dir`, creating them on first use
    (under a lock, so concurrent first starts agree on one key)."""
    d = Path(state_dir) if state_dir else default_state_dir()
    d.mkdir(parents=True, exist_ok=True)
    cert, key = d / CERT_NAME, d / KEY_NAME
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cert.is_file() and key.is_file()):
            cert_pem, key_pem = make_self_signed(names)
            tmpk = key.with_name(key.name + ".tmp")
            fd = os.open(tmpk, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key_pem)
            tmpc = cert.with_name(cert.name + ".tmp")
            tmpc.write_bytes(cert_pem)
            os.replace(tmpk, key)
            os.replace(tmpc, cert)
    return cert, key


def _load_certs(path: str | os.PathLike) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(Path(path).read_bytes())


def cert_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    ]


def pinned_server_name(ca_file: str | os.PathLike, host: str) -> str | None:
    """If `ca_file` pins one self-signed certificate that does not name `host`, the name
    to verify it by instead (its first DNS name); None otherwise."""
    try:
        certs = _load_certs(ca_file)
    except (OSError, ValueError):
        return None
    if len(certs) != 1 or certs[0].issuer != certs[0].subject:
        return None
    names = cert_names(certs[0])
    try:
        ipaddress.ip_address(host)
        host_norm = str(ipaddress.ip_address(host))
    except ValueError:
        host_norm = host.lower()
    if host_norm in [n.lower() for n in names]:
        return None
    dns = [n for n in names if not _is_ip(n)]
    return dns[0] if dns else None


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def configure_client(
    configuration, host: str, *, ca: str | None = None, insecure: bool = False, server_name: str | None = None
) -> None:
    """Set verification on an aioquic QuicConfiguration for a client dialing `host`."""
    if insecure:
        configuration.verify_mode = ssl.CERT_NONE
        configuration.server_name = server_name or host
        return
    configuration.verify_mode = ssl.CERT_REQUIRED
    if ca:
        if not Path(ca).is_file():
            raise FileNotFoundError(f"CA file not found: {ca}")
        configuration.load_verify_locations(cafile=str(ca))
        if server_name is None:
            server_name = pinned_server_name(ca, host)
    configuration.server_name = server_name or host

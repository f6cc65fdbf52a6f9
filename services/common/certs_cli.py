"""`inloop certs dev`: a development CA and one certificate per inloop identity.

    inloop certs dev --out /etc/inloop/tls --san gpu-host --san 10.0.0.5

writes DIR/ca.crt + DIR/ca.key and, for each of runtime, tools, controller, loadgen and
collector (the OpenTelemetry Collector's OTLP receiver, so traces cross hosts over TLS too),
DIR/<name>.crt + DIR/<name>.key signed by that CA. Every leaf certificate carries both
serverAuth and clientAuth, so one file pair serves a service's listening port and its
outgoing mTLS calls. SANs: localhost, 127.0.0.1, ::1, the name itself, and every --san
(IP addresses become IP SANs, which is what gRPC checks when a target is an IP). Keys are
EC P-256 (small, fast handshakes, supported by gRPC's BoringSSL) and written 0600.

This is a lab CA, not a PKI: no revocation, one key per identity, nothing rotates.
"""
from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

NAMES = ("runtime", "tools", "controller", "loadgen", "collector")
DEFAULT_SANS = ("localhost", "127.0.0.1", "::1")


def _general_name(name: str):
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _sans(name: str, extra: list[str]) -> list[str]:
    seen: list[str] = []
    for san in (*DEFAULT_SANS, name, *extra):
        if san not in seen:
            seen.append(san)
    return seen


def _write(path: Path, data: bytes, private: bool) -> None:
    """Write `data`; a private key is created 0600 from the start (never briefly world-readable)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600 if private else 0o644)  # an overwritten file keeps its old mode otherwise


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_dev_pki(out: Path, sans: list[str] | None = None, days: int = 365) -> dict[str, Path]:
    """Write the CA and the four identities under `out`; returns {file name: path}."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate small clock skew
    until = now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "inloop"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "inloop dev CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(until)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(ca_ski, critical=False)
               .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    written = {"ca.crt": out / "ca.crt", "ca.key": out / "ca.key"}
    _write(written["ca.crt"], ca_cert.public_bytes(pem), private=False)
    _write(written["ca.key"], _key_pem(ca_key), private=True)

    for name in NAMES:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "inloop"),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(until)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName([_general_name(s) for s in _sans(name, sans or [])]),
                               critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        written[f"{name}.crt"], written[f"{name}.key"] = out / f"{name}.crt", out / f"{name}.key"
        _write(written[f"{name}.crt"], cert.public_bytes(pem), private=False)
        _write(written[f"{name}.key"], _key_pem(key), private=True)
    return written


def planned_files() -> list[str]:
    return ["ca.crt", "ca.key", *(f"{n}.{ext}" for n in NAMES for ext in ("crt", "key"))]


def _cmd_dev(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.days < 1:
        print("error: --days must be >= 1", file=sys.stderr)
        return 2
    existing = [f for f in planned_files() if (out / f).exists()]
    if existing and not args.force:
        print(f"error: {out} already has {', '.join(existing)}; pass --force to replace them "
              "(every service then needs the new files)", file=sys.stderr)
        return 1
    written = make_dev_pki(out, list(args.san or []), args.days)
    for name in NAMES:
        sans = ", ".join(_sans(name, args.san or []))
        print(f"{name}: {written[name + '.crt']} {written[name + '.key']}  SANs: {sans}")
    print(f"CA: {written['ca.crt']} (key {written['ca.key']}; keep it off the service hosts)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("certs", help="TLS certificates for mTLS between the services")
    csub = p.add_subparsers(dest="certs_command", metavar="CMD")
    d = csub.add_parser(
        "dev", help="make a dev CA and a certificate + key for runtime, tools, controller, loadgen",
        description="Writes OUT/ca.crt, OUT/ca.key and OUT/<name>.crt + OUT/<name>.key for runtime, tools, "
                    "controller and loadgen, signed by the new CA, each valid as server and client "
                    "certificate (EKU serverAuth + clientAuth). Give a service --tls-cert OUT/<name>.crt "
                    "--tls-key OUT/<name>.key --tls-ca OUT/ca.crt (deployed: /etc/inloop/tls/).")
    d.add_argument("--out", required=True, metavar="DIR", help="directory to write (created if missing)")
    d.add_argument("--san", action="append", metavar="NAME",
                   help="an extra subject alternative name on every certificate: a host name or an IP "
                        "address (repeatable); localhost, 127.0.0.1, ::1 and the identity's name are always in")
    d.add_argument("--days", type=int, default=365, help="validity of the CA and the certificates (default 365)")
    d.add_argument("--force", action="store_true", help="replace existing files in DIR")
    d.set_defaults(func=_cmd_dev)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

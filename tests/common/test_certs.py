"""`inloop certs dev`: a CA and four identities that verify, with the SANs and EKUs mTLS needs."""
from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from inloop.services.cli import main
from inloop.services.common.certs_cli import NAMES, planned_files

EXTRA_SANS = ["gpu-host", "10.0.0.5"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    out = tmp_path_factory.mktemp("pki") / "tls"  # not there yet: the command creates it
    argv = ["certs", "dev", "--out", str(out), "--days", "30"]
    for san in EXTRA_SANS:
        argv += ["--san", san]
    assert main(argv) == 0
    return out


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_every_file_is_written_and_keys_are_private(pki):
    for name in planned_files():
        mode = stat.S_IMODE((pki / name).stat().st_mode)
        assert mode == (0o600 if name.endswith(".key") else 0o644), name


def test_the_ca_is_a_ca(pki):
    ca = load(pki / "ca.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is True
    ca.verify_directly_issued_by(ca)  # self-signed


@pytest.mark.parametrize("name", NAMES)
def test_each_identity_verifies_against_the_ca_with_sans_and_ekus(pki, name):
    ca, cert = load(pki / "ca.crt"), load(pki / f"{name}.crt")
    cert.verify_directly_issued_by(ca)  # raises on a bad signature or issuer
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", name, "gpu-host"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"), ipaddress.ip_address("10.0.0.5")}
    key = serialization.load_pem_private_key((pki / f"{name}.key").read_bytes(), password=None)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert 29 <= days <= 30


def test_another_ca_does_not_verify_them(tmp_path, pki):
    assert main(["certs", "dev", "--out", str(tmp_path / "other")]) == 0
    with pytest.raises((InvalidSignature, ValueError)):  # same CA name, other key: the signature fails
        load(pki / "tools.crt").verify_directly_issued_by(load(tmp_path / "other" / "ca.crt"))


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "tls"
    assert main(["certs", "dev", "--out", str(out)]) == 0
    before = (out / "ca.crt").read_bytes()
    capsys.readouterr()
    assert main(["certs", "dev", "--out", str(out)]) == 1
    assert "--force" in capsys.readouterr().err
    assert (out / "ca.crt").read_bytes() == before
    (out / "tools.key").chmod(0o644)
    assert main(["certs", "dev", "--out", str(out), "--force"]) == 0
    assert (out / "ca.crt").read_bytes() != before
    assert stat.S_IMODE((out / "tools.key").stat().st_mode) == 0o600  # re-tightened on overwrite

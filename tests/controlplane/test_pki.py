"""PKI of a local cluster: the right names, usages, issuers and file modes."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from corral.controlplane.pki import (
    FRONT_PROXY_CLIENT,
    SERVICE_IP,
    CertificateAuthority,
    ClusterPKI,
    create_cluster_pki,
)
from corral.errors import ConfigError


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPKI:
    return create_cluster_pki(tmp_path_factory.mktemp("pki"), cluster="c1")


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def test_the_serving_certificate_names_loopback_and_the_kubernetes_service(pki: ClusterPKI) -> None:
    cert = load(pki.serving_cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address(SERVICE_IP),
    }
    assert {"localhost", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"} <= set(
        sans.get_values_for_type(x509.DNSName)
    )
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert issued_by(cert, load(pki.serving_ca))


def test_the_admin_certificate_is_user_admin_in_system_masters_signed_by_the_client_ca(
    pki: ClusterPKI,
) -> None:
    cert = load(pki.admin_cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:masters"
    ]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert issued_by(cert, load(pki.client_ca))
    assert not issued_by(cert, load(pki.serving_ca))


def test_minted_client_certificates_carry_the_user_and_every_group(pki: ClusterPKI) -> None:
    pair = pki.issue_client("alice", ["devs", "ops"])
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "devs",
        "ops",
    ]
    assert issued_by(cert, load(pki.client_ca))
    assert "BEGIN PRIVATE KEY" not in repr(pair)


def test_the_front_proxy_client_certificate_comes_from_its_own_ca_and_carries_no_group(
    pki: ClusterPKI,
) -> None:
    cert = load(pki.front_proxy_client_cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == FRONT_PROXY_CLIENT
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) == []
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    front_proxy_ca = load(pki.front_proxy_ca)
    assert issued_by(cert, front_proxy_ca)
    assert front_proxy_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert "front-proxy-ca" in front_proxy_ca.subject.rfc4514_string()
    # The front-proxy CA is not the client CA: a certificate minted for any user of the cluster
    # cannot pass as the front proxy, and the front proxy's cannot log in as a user.
    assert not issued_by(cert, load(pki.client_ca))
    assert not issued_by(load(pki.admin_cert), front_proxy_ca)
    assert not issued_by(
        x509.load_pem_x509_certificate(pki.issue_client(FRONT_PROXY_CLIENT).cert_pem), front_proxy_ca
    )


def test_the_front_proxy_key_matches_its_certificate(pki: ClusterPKI) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.front_proxy_client_key.read_bytes(), password=None)
    public = load(pki.front_proxy_client_cert).public_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert key.public_key().public_numbers() == public.public_numbers()


def test_every_private_key_file_is_readable_by_its_owner_only(pki: ClusterPKI) -> None:
    keys = [
        pki.serving_ca_key,
        pki.serving_key,
        pki.client_ca_key,
        pki.admin_key,
        pki.sa_key,
        pki.front_proxy_ca_key,
        pki.front_proxy_client_key,
    ]
    assert {oct(path.stat().st_mode & 0o777) for path in keys} == {"0o600"}


def test_the_service_account_public_key_matches_its_signing_key(pki: ClusterPKI) -> None:
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(pki.sa_key.read_bytes(), password=None)
    public = serialization.load_pem_public_key(pki.sa_pub.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]


def test_two_clusters_get_unrelated_authorities(tmp_path: Path) -> None:
    first = create_cluster_pki(tmp_path / "a", cluster="a")
    second = create_cluster_pki(tmp_path / "b", cluster="b")
    assert not issued_by(load(first.admin_cert), load(second.client_ca))
    assert not issued_by(load(first.front_proxy_client_cert), load(second.front_proxy_ca))


def test_a_client_certificate_needs_a_user_name() -> None:
    with pytest.raises(ConfigError, match="non-empty user"):
        CertificateAuthority.create("ca").issue_client("")

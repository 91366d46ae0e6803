"""The certificates and keys of one local cluster, made with `cryptography`.

Each cluster gets its own serving CA (trusted by clients), a serving certificate for its
kube-apiserver (SANs 127.0.0.1, localhost, the first service IP and the kubernetes.default.svc
names), its own client CA (trusted by the apiserver; a certificate of one cluster is refused by
another), an admin client certificate (CN=admin, O=system:masters), a service-account signing
key pair, and a front-proxy CA apart from the client CA with its one client certificate
(CN=front-proxy-client), which the apiserver presents to aggregated API servers. Keys are ECDSA
P-256: fast to make and accepted by kube-apiserver for TLS, client certificates and ES256
service-account tokens. Key files are written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from corral.errors import ConfigError
from corral.k8s.kubeconfig import write_private

#: The first address of ``--service-cluster-ip-range``: the ``kubernetes`` Service's ClusterIP.
SERVICE_IP = "10.0.0.1"
SERVICE_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
#: The CN of the certificate the apiserver presents to aggregated API servers (the only allowed name).
FRONT_PROXY_CLIENT = "front-proxy-client"
_VALIDITY = datetime.timedelta(days=30)
_SKEW = datetime.timedelta(minutes=5)

PrivateKey = ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


class CertificateAuthority:
    """A self-signed CA that issues serving and client certificates."""

    def __init__(self, cert: x509.Certificate, key: PrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def create(cls, common_name: str) -> CertificateAuthority:
        key = new_key()
        now = datetime.datetime.now(datetime.UTC)
        name = _name(common_name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load CA from {str(cert_path)!r}: {e}") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{str(key_path)!r} is not an ECDSA key")
        return cls(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue_client(self, user: str, groups: Iterable[str] = ()) -> KeyPair:
        """A client certificate: Kubernetes reads the user from CN and the groups from O."""
        if not user:
            raise ConfigError("a client certificate needs a non-empty user name")
        return self._issue(_name(user, groups), usage=ExtendedKeyUsageOID.CLIENT_AUTH, sans=None)

    def issue_serving(self, common_name: str, *, hosts: Iterable[str]) -> KeyPair:
        """A serving certificate whose SANs hold the given DNS names and IP addresses."""
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        return self._issue(_name(common_name), usage=ExtendedKeyUsageOID.SERVER_AUTH, sans=sans)

    def _issue(
        self, subject: x509.Name, *, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName] | None
    ) -> KeyPair:
        key = new_key()
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem(key))


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterPKI:
    """The PKI files of one cluster, as paths inside its folder."""

    folder: Path

    @property
    def serving_ca(self) -> Path:
        return self.folder / "serving-ca.crt"

    @property
    def serving_ca_key(self) -> Path:
        return self.folder / "serving-ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.folder / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.folder / "apiserver.key"

    @property
    def client_ca(self) -> Path:
        return self.folder / "client-ca.crt"

    @property
    def client_ca_key(self) -> Path:
        return self.folder / "client-ca.key"

    @property
    def admin_cert(self) -> Path:
        return self.folder / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.folder / "admin.key"

    @property
    def front_proxy_ca(self) -> Path:
        return self.folder / "front-proxy-ca.crt"

    @property
    def front_proxy_ca_key(self) -> Path:
        return self.folder / "front-proxy-ca.key"

    @property
    def front_proxy_client_cert(self) -> Path:
        return self.folder / "front-proxy-client.crt"

    @property
    def front_proxy_client_key(self) -> Path:
        return self.folder / "front-proxy-client.key"

    @property
    def sa_key(self) -> Path:
        return self.folder / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.folder / "sa.pub"

    def client_authority(self) -> CertificateAuthority:
        return CertificateAuthority.load(self.client_ca, self.client_ca_key)

    def issue_client(self, user: str, groups: Iterable[str] = ()) -> KeyPair:
        """Mint a client certificate for any user and groups, trusted by this cluster only."""
        return self.client_authority().issue_client(user, groups)


def create_cluster_pki(folder: Path, *, cluster: str, extra_hosts: Iterable[str] = ()) -> ClusterPKI:
    """Generate every certificate and key of one cluster into ``folder``.

    ``extra_hosts`` join the apiserver certificate's SANs (the host address real nodes reach).
    """
    pki = ClusterPKI(folder=folder)
    folder.mkdir(parents=True, exist_ok=True)
    serving_ca = CertificateAuthority.create(f"corral-{cluster}-serving-ca")
    serving = serving_ca.issue_serving(
        "kube-apiserver", hosts=("127.0.0.1", "localhost", SERVICE_IP, *SERVICE_NAMES, *extra_hosts)
    )
    client_ca = CertificateAuthority.create(f"corral-{cluster}-client-ca")
    admin = client_ca.issue_client("admin", ("system:masters",))
    # Its own CA: whoever holds a front-proxy certificate may assert any user in request headers,
    # so no certificate of the client CA (minted for any user) may pass as one.
    front_proxy_ca = CertificateAuthority.create(f"corral-{cluster}-front-proxy-ca")
    front_proxy_client = front_proxy_ca.issue_client(FRONT_PROXY_CLIENT)
    sa = new_key()
    _write_public(pki.serving_ca, serving_ca.cert_pem)
    write_private(pki.serving_ca_key, key_pem(serving_ca.key))
    _write_public(pki.serving_cert, serving.cert_pem)
    write_private(pki.serving_key, serving.key_pem)
    _write_public(pki.client_ca, client_ca.cert_pem)
    write_private(pki.client_ca_key, key_pem(client_ca.key))
    _write_public(pki.admin_cert, admin.cert_pem)
    write_private(pki.admin_key, admin.key_pem)
    _write_public(pki.front_proxy_ca, front_proxy_ca.cert_pem)
    write_private(pki.front_proxy_ca_key, key_pem(front_proxy_ca.key))
    _write_public(pki.front_proxy_client_cert, front_proxy_client.cert_pem)
    write_private(pki.front_proxy_client_key, front_proxy_client.key_pem)
    write_private(pki.sa_key, key_pem(sa))
    _write_public(pki.sa_pub, public_pem(sa))
    return pki


def _write_public(path: Path, data: bytes) -> None:
    path.write_bytes(data)

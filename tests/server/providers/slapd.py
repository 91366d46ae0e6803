"""A real OpenLDAP slapd for the directory provider tests: installed when missing, configured, seeded.

One slapd serves two suffixes over LDAPS and StartTLS with a certificate from corral's PKI:
``dc=example,dc=org`` in OpenLDAP style (inetOrgPerson, groupOfNames, the memberof overlay, ppolicy
locking with ``pwdAccountLockedTime``) and ``dc=corp,dc=example`` in Active Directory style (the
``user`` and ``group`` classes with AD's own OIDs for sAMAccountName, userAccountControl and groupType;
an account with the ACCOUNTDISABLE bit, 514, is disabled as in AD, which the provider enforces).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.controlplane.pki import CertificateAuthority

PACKAGES = ("slapd", "ldap-utils")
SLAPD_CANDIDATES = ("/usr/sbin/slapd", "/usr/local/sbin/slapd", "/usr/libexec/slapd")
MODULE_DIRS = ("/usr/lib/ldap", "/usr/lib/openldap", "/usr/lib64/openldap", "/usr/libexec/openldap")
SCHEMA_DIRS = ("/etc/ldap/schema", "/etc/openldap/schema")

OPENLDAP_BASE = "dc=example,dc=org"
AD_BASE = "dc=corp,dc=example"
ADMIN_PASSWORD = "admin-" + secrets.token_hex(4)
SERVICE_PASSWORD = "svc-" + secrets.token_hex(4)

# The same value for every test user: what matters is that each is checked by a real bind.
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "dave": "dave-pw", "erin": "erin-pw", "frank": "frank-pw"}


class SlapdUnavailableError(RuntimeError):
    """slapd is not installed and cannot be installed here."""


def _find(candidates: tuple[str, ...]) -> str | None:
    return next((path for path in candidates if Path(path).exists()), None)


def ensure_slapd() -> str:
    """The slapd binary; installs Debian's ``slapd`` and ``ldap-utils`` with apt when missing (as root)."""
    found = _find(SLAPD_CANDIDATES)
    if found and shutil.which("ldapmodify"):
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SlapdUnavailableError(
            "OpenLDAP's slapd and ldap-utils are needed by the directory tests and are missing; "
            f"install them as root: apt-get update && apt-get install -y {' '.join(PACKAGES)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=900)
        if done.returncode != 0:
            raise SlapdUnavailableError(
                f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}"
            )
    found = _find(SLAPD_CANDIDATES)
    if not found:
        raise SlapdUnavailableError(f"apt installed {PACKAGES} but no slapd binary is in {SLAPD_CANDIDATES}")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ssha(password: str) -> str:
    """An ``{SSHA}`` userPassword value, as slappasswd writes it."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt, usedforsecurity=False).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


AD_SCHEMA = """\
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.750 NAME 'groupType'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
objectclass ( 1.2.840.113556.1.5.9 NAME 'user' SUP organizationalPerson STRUCTURAL
  MAY ( sAMAccountName $ userAccountControl $ userPrincipalName $ displayName $ mail $ givenName ) )
objectclass ( 1.2.840.113556.1.5.8 NAME 'group' SUP top STRUCTURAL
  MUST cn MAY ( member $ sAMAccountName $ groupType $ description ) )
"""


def _config(folder: Path, schema_dir: str, module_dir: str) -> str:
    schemas = "\n".join(
        f"include {schema_dir}/{name}.schema" for name in ("core", "cosine", "inetorgperson", "nis")
    )
    return f"""\
{schemas}
include {folder}/ad.schema
modulepath {module_dir}
moduleload back_mdb
moduleload memberof
moduleload ppolicy
pidfile {folder}/slapd.pid
TLSCACertificateFile {folder}/ca.crt
TLSCertificateFile {folder}/server.crt
TLSCertificateKeyFile {folder}/server.key

database mdb
suffix "{OPENLDAP_BASE}"
rootdn "cn=admin,{OPENLDAP_BASE}"
rootpw {ADMIN_PASSWORD}
directory {folder}/openldap
maxsize 33554432
access to attrs=userPassword by self =x by anonymous auth by * none
access to * by users read by * none
overlay memberof
overlay ppolicy
ppolicy_default "cn=default,ou=policies,{OPENLDAP_BASE}"

database mdb
suffix "{AD_BASE}"
rootdn "cn=admin,{AD_BASE}"
rootpw {ADMIN_PASSWORD}
directory {folder}/ad
maxsize 33554432
access to attrs=userPassword by self =x by anonymous auth by * none
access to * by users read by * none
overlay memberof
memberof-group-oc group
"""


def _seed_openldap() -> str:
    b = OPENLDAP_BASE
    return f"""\
dn: {b}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,{b}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{b}
objectClass: organizationalUnit
ou: groups

dn: ou=policies,{b}
objectClass: organizationalUnit
ou: policies

dn: cn=default,ou=policies,{b}
objectClass: organizationalRole
objectClass: pwdPolicy
cn: default
pwdAttribute: userPassword
pwdLockout: TRUE
pwdMaxFailure: 0

dn: cn=rancher-svc,{b}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: rancher-svc
userPassword: {ssha(SERVICE_PASSWORD)}

dn: uid=alice,ou=people,{b}
objectClass: inetOrgPerson
uid: alice
cn: Alice Liddell
sn: Liddell
givenName: Alice
userPassword: {ssha(PASSWORDS["alice"])}

dn: uid=bob,ou=people,{b}
objectClass: inetOrgPerson
uid: bob
cn: Bob Locked
sn: Locked
userPassword: {ssha(PASSWORDS["bob"])}
pwdAccountLockedTime: 000001010000Z

dn: uid=dave,ou=people,{b}
objectClass: inetOrgPerson
uid: dave
cn: Dave Ops
sn: Ops
userPassword: {ssha(PASSWORDS["dave"])}

dn: cn=devs,ou=groups,{b}
objectClass: groupOfNames
cn: devs
member: uid=alice,ou=people,{b}

dn: cn=eng,ou=groups,{b}
objectClass: groupOfNames
cn: eng
member: cn=devs,ou=groups,{b}

dn: cn=all-staff,ou=groups,{b}
objectClass: groupOfNames
cn: all-staff
member: cn=eng,ou=groups,{b}

dn: cn=ops,ou=groups,{b}
objectClass: groupOfNames
cn: ops
member: uid=dave,ou=people,{b}
"""


def _seed_ad() -> str:
    b = AD_BASE
    return f"""\
dn: {b}
objectClass: dcObject
objectClass: organization
o: Corp
dc: corp

dn: cn=Users,{b}
objectClass: organizationalRole
cn: Users

dn: cn=Groups,{b}
objectClass: organizationalRole
cn: Groups

dn: cn=Rancher Service,cn=Users,{b}
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: user
cn: Rancher Service
sn: Service
sAMAccountName: rancher-svc
userAccountControl: 66048
userPassword: {ssha(SERVICE_PASSWORD)}

dn: cn=Erin Admin,cn=Users,{b}
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: user
cn: Erin Admin
sn: Admin
sAMAccountName: erin
userPrincipalName: erin@corp.example
userAccountControl: 512
userPassword: {ssha(PASSWORDS["erin"])}

dn: cn=Frank Former,cn=Users,{b}
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: user
cn: Frank Former
sn: Former
sAMAccountName: frank
userAccountControl: 514
userPassword: {ssha(PASSWORDS["frank"])}

dn: cn=Domain Admins,cn=Groups,{b}
objectClass: top
objectClass: group
cn: Domain Admins
sAMAccountName: Domain Admins
groupType: -2147483646
member: cn=Erin Admin,cn=Users,{b}
member: cn=Frank Former,cn=Users,{b}

dn: cn=Staff,cn=Groups,{b}
objectClass: top
objectClass: group
cn: Staff
sAMAccountName: Staff
groupType: -2147483646
member: cn=Domain Admins,cn=Groups,{b}
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Slapd:
    """A running slapd: where it listens and how to change its data."""

    process: subprocess.Popen[bytes]
    folder: Path
    ldaps_port: int
    ldap_port: int
    ca_pem: str

    def ldap(self, tool: str, base: str, ldif: str) -> None:
        """Run ldapadd/ldapmodify as the suffix's rootdn over StartTLS."""
        done = subprocess.run(
            [
                tool,
                "-x",
                "-ZZ",
                "-H",
                f"ldap://127.0.0.1:{self.ldap_port}/",
                "-D",
                f"cn=admin,{base}",
                "-w",
                ADMIN_PASSWORD,
            ],
            input=ldif.encode(),
            capture_output=True,
            check=False,
            timeout=30,
            env={**os.environ, "LDAPTLS_CACERT": str(self.folder / "ca.crt")},
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")

    def modify(self, base: str, ldif: str) -> None:
        self.ldap("ldapmodify", base, ldif)

    def openldap_settings(self, **overrides: Any) -> dict[str, Any]:
        """An openLdapConfig's connection and search fields for this slapd, over LDAPS."""
        return {
            "servers": ["127.0.0.1"],
            "port": self.ldaps_port,
            "tls": True,
            "certificate": self.ca_pem,
            "serviceAccountDistinguishedName": f"cn=rancher-svc,{OPENLDAP_BASE}",
            "serviceAccountPassword": SERVICE_PASSWORD,
            "userSearchBase": f"ou=people,{OPENLDAP_BASE}",
            "groupSearchBase": f"ou=groups,{OPENLDAP_BASE}",
            **overrides,
        }

    def ad_settings(self, **overrides: Any) -> dict[str, Any]:
        """An activeDirectoryConfig's fields for this slapd over StartTLS; slapd has entryDN where AD has
        distinguishedName."""
        return {
            "servers": ["127.0.0.1"],
            "port": self.ldap_port,
            "starttls": True,
            "certificate": self.ca_pem,
            "defaultLoginDomain": "CORP",
            "serviceAccountUsername": f"cn=Rancher Service,cn=Users,{AD_BASE}",
            "serviceAccountPassword": SERVICE_PASSWORD,
            "userSearchBase": AD_BASE,
            "userNameAttribute": "cn",
            "groupNameAttribute": "cn",
            "groupDNAttribute": "entryDN",
            **overrides,
        }

    @contextmanager
    def paused(self) -> Iterator[None]:
        """slapd stopped with SIGSTOP: connections are accepted by the kernel and never answered."""
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)


def _wait_listening(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"slapd exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"slapd did not listen on port {port} in time")


@contextmanager
def running_slapd(folder: Path) -> Iterator[Slapd]:
    """Generate the configuration and certificates in ``folder``, start slapd, seed it, stop it after."""
    binary = ensure_slapd()
    schema_dir, module_dir = _find(SCHEMA_DIRS), _find(MODULE_DIRS)
    if not schema_dir or not module_dir:
        raise SlapdUnavailableError(f"slapd's schema ({SCHEMA_DIRS}) or modules ({MODULE_DIRS}) are missing")
    ca = CertificateAuthority.create("corral-ldap-ca")
    serving = ca.issue_serving("127.0.0.1", hosts=["127.0.0.1", "localhost"])
    (folder / "ca.crt").write_bytes(ca.cert_pem)
    (folder / "server.crt").write_bytes(serving.cert_pem)
    key = folder / "server.key"
    key.write_bytes(serving.key_pem)
    key.chmod(0o600)
    (folder / "ad.schema").write_text(AD_SCHEMA)
    for db in ("openldap", "ad"):
        (folder / db).mkdir()
    conf = folder / "slapd.conf"
    conf.write_text(_config(folder, schema_dir, module_dir))
    ldaps_port, ldap_port = free_port(), free_port()
    urls = f"ldaps://127.0.0.1:{ldaps_port}/ ldap://127.0.0.1:{ldap_port}/"
    log = (folder / "slapd.log").open("wb")
    # -d 0: stay in the foreground (so this process owns it) without debug output.
    process = subprocess.Popen([binary, "-f", str(conf), "-h", urls, "-d", "0"], stdout=log, stderr=log)
    try:
        _wait_listening(ldap_port, process, time.monotonic() + 15)
        _wait_listening(ldaps_port, process, time.monotonic() + 5)
        server = Slapd(
            process=process,
            folder=folder,
            ldaps_port=ldaps_port,
            ldap_port=ldap_port,
            ca_pem=ca.cert_pem.decode(),
        )
        server.ldap("ldapadd", OPENLDAP_BASE, _seed_openldap())
        server.ldap("ldapadd", AD_BASE, _seed_ad())
        yield server
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()

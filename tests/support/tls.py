"""A throwaway certificate authority for TLS tests: PEM text for a CA, a server certificate
for localhost and 127.0.0.1, and a client certificate, all signed by the CA."""

import dataclasses
import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclasses.dataclass(frozen=True)
class Pems:
    ca_cert: str
    server_key: str
    server_cert: str
    client_key: str
    client_cert: str


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _certificate(subject: str, key, issuer: str, issuer_key, ca: bool = False, names=()):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def make_pems() -> Pems:
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    server_names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    return Pems(
        ca_cert=_certificate("mtrec test CA", ca_key, "mtrec test CA", ca_key, ca=True).decode(),
        server_key=_key_pem(server_key),
        server_cert=_certificate(
            "localhost", server_key, "mtrec test CA", ca_key, names=server_names
        ).decode(),
        client_key=_key_pem(client_key),
        client_cert=_certificate("a client", client_key, "mtrec test CA", ca_key).decode(),
    )

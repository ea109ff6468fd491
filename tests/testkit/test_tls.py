"""The HTTPS check of the kind tier's exposure test, against a real TLS server on loopback.

Certificates are made here the way cert-manager's SelfSigned issuer makes them (the
certificate signs itself, and the Secret's ca.crt is the certificate), one per host
name; the server picks by SNI, as a gateway does. The check must pass for the issued
certificate and fail, saying why, for any other.
"""

from __future__ import annotations

import datetime
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from testkit.tls import TlsCheckError, facts, https_get, mismatch, pem

ROUTE, INGRESS = "api-gw.e2e.test", "api-ing.e2e.test"


def self_signed(*names: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM), issued to and by itself, for these DNS names."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "e2e")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class Gateway:
    """An HTTPS server presenting, per SNI name, the certificate given for it."""

    def __init__(self, tmp_path, certificates: dict[str, tuple[bytes, bytes]], default: str):
        self.contexts = {}
        for name, (cert, key) in certificates.items():
            (tmp_path / f"{name}.crt").write_bytes(cert)
            (tmp_path / f"{name}.key").write_bytes(key)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
            self.contexts[name] = context
        base = self.contexts[default]
        base.sni_callback = lambda sock, name, _ctx: setattr(sock, "context", self.contexts.get(name, base)) or None

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                body = b"[]" if self.path == "/api/v1/meters" else b'{"status":404}'
                self.send_response(200 if self.path == "/api/v1/meters" else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = base.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def issued():
    return {ROUTE: self_signed(ROUTE, INGRESS), INGRESS: self_signed(INGRESS)}


@pytest.fixture
def gateway(tmp_path, issued):
    server = Gateway(tmp_path, issued, ROUTE)
    yield server
    server.stop()


def test_the_api_answers_with_the_issued_certificate(gateway, issued):
    cert, _key = issued[ROUTE]
    answer = https_get("127.0.0.1", gateway.port, ROUTE, "/api/v1/meters", ca_pem=cert)
    assert answer.status == 200 and answer.body == b"[]"
    assert mismatch(answer.certificate, cert) is None
    served = facts(answer.certificate)
    assert served.dns_names == (ROUTE, INGRESS) and served.issuer == served.subject == "O=e2e"
    assert pem(answer.certificate) == cert


def test_another_certificate_for_the_same_names_is_told_apart(gateway, issued):
    """A gateway serving its default (or a stale) certificate for the host: same names, not the issued one."""
    cert, _key = issued[ROUTE]
    other, _ = self_signed(ROUTE, INGRESS)
    answer = https_get("127.0.0.1", gateway.port, ROUTE, "/api/v1/meters", ca_pem=cert)
    problem = mismatch(answer.certificate, other)
    assert problem is not None and "serial" in problem and "dns_names" not in problem


def test_sni_picks_the_certificate(gateway, issued):
    cert, _key = issued[INGRESS]
    answer = https_get("127.0.0.1", gateway.port, INGRESS, "/api/v1/meters", ca_pem=cert)
    assert mismatch(answer.certificate, cert) is None
    assert mismatch(answer.certificate, issued[ROUTE][0]) is not None


def test_a_certificate_the_ca_did_not_sign_fails_verification(gateway):
    stranger, _ = self_signed(ROUTE)
    with pytest.raises(TlsCheckError, match="does not verify"):
        https_get("127.0.0.1", gateway.port, ROUTE, "/api/v1/meters", ca_pem=stranger)


def test_a_name_the_certificate_does_not_cover_fails_verification(gateway, issued):
    cert, _key = issued[ROUTE]
    with pytest.raises(TlsCheckError, match="does not verify"):
        https_get("127.0.0.1", gateway.port, "elsewhere.e2e.test", "/api/v1/meters", ca_pem=cert)


def test_nothing_listening_is_a_connection_error(issued):
    from testkit.net import free_port

    with pytest.raises(TlsCheckError, match="cannot connect"):
        https_get("127.0.0.1", free_port(), ROUTE, "/", ca_pem=issued[ROUTE][0], timeout=2)

"""HTTPS through a gateway: the request, and the certificate it was served with.

`https_get` connects to an address (a port-forward to the gateway, say) and speaks TLS
with the server name of the published host (SNI), verifying the chain against a given
CA and the name against the certificate, as a client of the published API would; it
returns the HTTP answer and the certificate the server presented. `mismatch` says how a
served certificate differs from the one issued (the Secret cert-manager wrote), or None.

    answer = https_get("127.0.0.1", 8443, "api.e2e.test", "/api/v1/meters", ca_pem)
    assert answer.status == 200 and mismatch(answer.certificate, issued_pem) is None
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization


class TlsCheckError(RuntimeError):
    """The TLS connection could not be made or verified; the message says which step failed."""


@dataclass(frozen=True)
class CertificateFacts:
    subject: str
    issuer: str
    dns_names: tuple[str, ...]
    serial: int
    sha256: str

    def describe(self) -> str:
        return (
            f"subject {self.subject!r}, issuer {self.issuer!r}, DNS names {list(self.dns_names)}, "
            f"serial {self.serial:x}, sha256 {self.sha256[:16]}…"
        )


def load_certificate(data: bytes) -> x509.Certificate:
    """The first certificate of PEM text (a Secret's tls.crt holds the chain) or DER bytes."""
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificates(data)[0]
    return x509.load_der_x509_certificate(data)


def facts(data: bytes | x509.Certificate) -> CertificateFacts:
    cert = data if isinstance(data, x509.Certificate) else load_certificate(data)
    try:
        names = tuple(
            cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        )
    except x509.ExtensionNotFound:
        names = ()
    return CertificateFacts(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        dns_names=names,
        serial=cert.serial_number,
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def mismatch(served: bytes, issued: bytes) -> str | None:
    """None when the served certificate is the issued one; else what differs."""
    got, want = facts(served), facts(issued)
    if got.sha256 == want.sha256:
        return None
    differences = [
        f"{name}: served {getattr(got, name)!r}, issued {getattr(want, name)!r}"
        for name in ("issuer", "dns_names", "serial", "subject")
        if getattr(got, name) != getattr(want, name)
    ]
    return "the served certificate is not the issued one: " + ("; ".join(differences) or "other bytes")


@dataclass(frozen=True)
class HttpsAnswer:
    status: int
    body: bytes
    certificate: bytes  # DER, as the server presented it


def https_get(
    address: str,
    port: int,
    server_name: str,
    path: str,
    ca_pem: bytes,
    *,
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
) -> HttpsAnswer:
    """GET https://<server_name><path>, connected to address:port; verified as a client would."""
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    try:
        raw = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        raise TlsCheckError(f"cannot connect to {address}:{port}: {exc}") from exc
    try:
        tls = context.wrap_socket(raw, server_hostname=server_name)
    except ssl.SSLCertVerificationError as exc:
        raw.close()
        raise TlsCheckError(
            f"{server_name} at {address}:{port}: the certificate does not verify: {exc.verify_message}"
        ) from exc
    except (ssl.SSLError, OSError) as exc:
        raw.close()
        raise TlsCheckError(f"{server_name} at {address}:{port}: TLS handshake failed: {exc}") from exc
    with tls:
        served = tls.getpeercert(binary_form=True)
        request = [f"GET {path} HTTP/1.1", f"Host: {server_name}", "Connection: close", "Accept: application/json"]
        request += [f"{name}: {value}" for name, value in (headers or {}).items()]
        tls.sendall(("\r\n".join(request) + "\r\n\r\n").encode())
        response = http.client.HTTPResponse(tls)
        try:
            response.begin()
            body = response.read()
        except (http.client.HTTPException, OSError) as exc:
            raise TlsCheckError(f"{server_name} at {address}:{port}: no HTTP answer: {exc!r}") from exc
    return HttpsAnswer(response.status, body, served)


def pem(data: bytes) -> bytes:
    """A certificate (DER or PEM) as PEM."""
    return load_certificate(data).public_bytes(serialization.Encoding.PEM)

"""API authentication: static bearer tokens, and OIDC JWTs validated against a real JWKS
endpoint (tests/engine/jwks_server.py). 401/403 are problem+json with WWW-Authenticate;
the telemetry port needs no credentials; no token ever reaches a log."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from testkit.client import OpenMeterClient, event
from tests.engine.jwks_server import AUDIENCE, ISSUER, JwksServer, SigningKey

pytestmark = pytest.mark.servers

PROBLEM = "application/problem+json"
TOKENS = ("tok-alpha-7f3c9d2e41b8", "tok-beta-0a9e6c1f5d27")


def denied(response, status: int, error: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == PROBLEM
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="bp-openmeter"'), challenge
    if error:
        assert f'error="{error}"' in challenge, challenge
    else:
        assert "error=" not in challenge, challenge
    body = response.json()
    assert body["status"] == status and body["detail"]
    return body


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# --- token mode -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_stack(stack_factory):
    return stack_factory(overrides={"api": {"auth": {"mode": "token"}}}, env={"BPOM_API_TOKENS": ",".join(TOKENS)})


@pytest.fixture
def token_client(token_stack):
    with OpenMeterClient(token_stack.api_url) as engine:
        yield engine


def test_token_mode_refuses_requests_without_a_valid_token(token_client):
    http = token_client.http
    denied(http.get("/api/v1/meters"), 401)
    denied(http.get("/api/v1/meters", headers=bearer("tok-alpha-7f3c9d2e41b")), 401, "invalid_token")
    denied(http.get("/api/v1/meters", headers=bearer(TOKENS[0] + "x")), 401, "invalid_token")
    denied(http.get("/api/v1/meters", headers={"Authorization": f"Basic {TOKENS[0]}"}), 401, "invalid_token")
    denied(http.get("/api/v1/meters", headers={"Authorization": "Bearer"}), 401, "invalid_token")
    denied(http.get("/api/v1/nothing-here"), 401)  # before routing: nothing is disclosed
    denied(token_client.post_events(event("e1", "t", "s")), 401)


@pytest.mark.parametrize("token", TOKENS)
def test_token_mode_accepts_each_configured_token(token_client, token, uid):
    http = token_client.http
    assert http.get("/api/v1/meters", headers=bearer(token)).status_code == 200
    response = http.post(
        "/api/v1/events",
        json=event(f"{uid}-1", "t", "s"),
        headers={**bearer(token), "content-type": "application/cloudevents+json"},
    )
    assert response.status_code == 204, response.text


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(token_stack):
    address = urlsplit(token_stack.api_url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        # Announces 100 MB and sends none of it: the answer must not wait for the body.
        sock.sendall(
            b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n"
        )
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


def test_telemetry_needs_no_credentials_and_is_not_on_the_api_port(token_stack):
    assert httpx.get(f"{token_stack.telemetry_url}/metrics").status_code == 200
    assert httpx.get(f"{token_stack.telemetry_url}/healthz/ready").status_code == 200
    denied(httpx.get(f"{token_stack.api_url}/metrics"), 401)
    metrics = httpx.get(f"{token_stack.telemetry_url}/metrics").text
    assert 'bpom_auth_failures_total{reason="missing"}' in metrics


def test_tokens_never_reach_the_logs_or_the_printed_config(token_stack, token_client):
    token_client.http.get("/api/v1/meters", headers=bearer("tok-wrong-but-secret-59d1"))
    logs = "".join(path.read_text(errors="replace") for path in token_stack.log_files().values())
    for secret in (*TOKENS, "tok-wrong-but-secret-59d1"):
        assert secret not in logs


# --- OIDC mode --------------------------------------------------------------------------


def oidc_config(server: JwksServer, **settings) -> dict:
    """The test issuer serves its keys over plain http on loopback, which must be allowed explicitly."""
    return {"issuer": ISSUER, "jwksUrl": server.url, "allowInsecureJwksUrl": True, **settings}


@pytest.fixture(scope="module")
def issuer():
    keys = [SigningKey("RS256"), SigningKey("ES256")]
    server = JwksServer(keys)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def oidc_stack(stack_factory, issuer):
    return stack_factory(
        overrides={
            "api": {"auth": {"mode": "oidc", "oidc": oidc_config(issuer, audience=AUDIENCE, requiredScope="metering")}}
        }
    )


@pytest.fixture
def oidc(oidc_stack):
    with OpenMeterClient(oidc_stack.api_url) as engine:
        yield engine.http


def test_oidc_accepts_client_credentials_tokens_of_the_issuer(oidc, issuer, uid):
    rsa_key, ec_key = issuer.keys
    assert oidc.get("/api/v1/meters", headers=bearer(rsa_key.token())).status_code == 200
    # scp as a list (some issuers), an EC key, and an ingest.
    response = oidc.post(
        "/api/v1/events",
        json=event(f"{uid}-1", "t", "s"),
        headers={**bearer(ec_key.token(scope=None, scp=["metering"])), "content-type": "application/cloudevents+json"},
    )
    assert response.status_code == 204, response.text


@pytest.mark.parametrize(
    "claims, why",
    [
        ({"expires_in": -120}, "expired beyond the 30 s leeway"),
        ({"nbf": int(time.time()) + 600}, "not valid yet"),
        ({"iss": "https://evil.example/realms/platform"}, "another issuer"),
        ({"aud": "another-service"}, "another audience"),
        ({"aud": None}, "no audience"),
        ({"exp": None}, "no expiry"),
    ],
)
def test_oidc_refuses_tokens_with_wrong_claims(oidc, issuer, claims, why):
    denied(oidc.get("/api/v1/meters", headers=bearer(issuer.keys[0].token(**claims))), 401, "invalid_token")


def test_oidc_refuses_forged_tokens(oidc, issuer):
    rsa_key = issuer.keys[0]
    impostor = SigningKey("RS256", kid=rsa_key.kid)  # same key id, another key
    denied(oidc.get("/api/v1/meters", headers=bearer(impostor.token())), 401, "invalid_token")
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": rsa_key.kid}).encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(
        json.dumps({"iss": ISSUER, "aud": AUDIENCE, "exp": 2**31, "scope": "metering"}).encode()
    ).rstrip(b"=")
    denied(oidc.get("/api/v1/meters", headers=bearer(f"{header.decode()}.{payload.decode()}.")), 401, "invalid_token")
    denied(oidc.get("/api/v1/meters", headers=bearer("not.a.jwt")), 401, "invalid_token")
    tampered = rsa_key.token()[:-6] + "AAAAAA"
    denied(oidc.get("/api/v1/meters", headers=bearer(tampered)), 401, "invalid_token")


def test_oidc_refuses_algorithm_confusion(oidc, issuer):
    """HS256 signed with the issuer's public key as the shared secret (forged by hand:
    PyJWT itself refuses to HMAC-sign with a PEM key)."""
    rsa_key = issuer.keys[0]
    public_pem = rsa_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid}).encode())
        + "."
        + b64(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "exp": 2**31, "scope": "metering"}).encode())
    )
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    denied(oidc.get("/api/v1/meters", headers=bearer(f"{signing_input}.{b64(signature)}")), 401, "invalid_token")


def test_oidc_valid_token_without_the_required_scope_is_forbidden(oidc, issuer):
    response = oidc.get("/api/v1/meters", headers=bearer(issuer.keys[0].token(scope="profile email")))
    denied(response, 403, "insufficient_scope")
    assert 'scope="metering"' in response.headers["www-authenticate"]


def test_oidc_fetches_rotated_keys_on_an_unknown_key_id_but_not_on_every_one(oidc, issuer):
    assert oidc.get("/api/v1/meters", headers=bearer(issuer.keys[0].token())).status_code == 200
    time.sleep(5.5)  # the cache refetches at most every 5 s (jwks.MIN_REFRESH_S); this test needs one refetch
    rotated = SigningKey("RS256")
    issuer.keys.append(rotated)
    before = issuer.fetches
    assert oidc.get("/api/v1/meters", headers=bearer(rotated.token())).status_code == 200
    assert issuer.fetches == before + 1
    for _ in range(5):  # made-up key ids right after: refused, and no fetch storm
        denied(oidc.get("/api/v1/meters", headers=bearer(rotated.token(kid="made-up-kid"))), 401, "invalid_token")
    assert issuer.fetches == before + 1


def test_oidc_keeps_working_on_cached_keys_and_says_503_when_it_has_none(stack_factory):
    key = SigningKey("ES256")
    server = JwksServer([key])
    stack = stack_factory(overrides={"api": {"auth": {"mode": "oidc", "oidc": oidc_config(server, audience=AUDIENCE)}}})
    with OpenMeterClient(stack.api_url) as engine:
        assert engine.http.get("/api/v1/meters", headers=bearer(key.token())).status_code == 200
        server.stop()
        assert engine.http.get("/api/v1/meters", headers=bearer(key.token())).status_code == 200

    unreachable = SigningKey("RS256")
    dead_url = JwksServer([unreachable])
    url = dead_url.url
    dead_url.stop()
    cold = stack_factory(
        overrides={
            "api": {
                "auth": {
                    "mode": "oidc",
                    "oidc": {"issuer": ISSUER, "jwksUrl": url, "audience": AUDIENCE, "allowInsecureJwksUrl": True},
                }
            }
        }
    )
    response = httpx.get(f"{cold.api_url}/api/v1/meters", headers=bearer(unreachable.token()))
    assert response.status_code == 503 and response.headers["content-type"] == PROBLEM
    assert response.headers["retry-after"]

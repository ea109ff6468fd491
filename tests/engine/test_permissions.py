"""Permissions: `ingest` posts events, `read` reads events, meters and usage, `admin` changes
meters (and may do everything). Each permission against each class of endpoint, for static
tokens and for OIDC scopes: allowed, or 403 problem+json with error="insufficient_scope"
and nothing done."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import httpx
import pytest
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from testkit.client import event
from testkit.timeouts import TIMEOUTS
from tests.engine.jwks_server import AUDIENCE, ISSUER, JwksServer, SigningKey

pytestmark = pytest.mark.servers

PROBLEM = "application/problem+json"
ADMIN, INGEST, READ, INGEST_AND_READ = "tok-admin-8e1f", "tok-ingest-27c4", "tok-read-9b05", "tok-both-64d3"
SLUG = "calls"


@dataclass(frozen=True)
class Operation:
    name: str
    permission: str | None  # None: any authenticated caller
    send: Callable[[httpx.Client, httpx.Client, str], httpx.Response]  # (caller, admin, uid)
    # Whether it took effect (asked with an admin's client), given whether it should have:
    # events are stored asynchronously.
    done: Callable[[httpx.Client, str, bool], bool] | None


def _exists(admin: httpx.Client, slug: str) -> bool:
    return admin.get(f"/api/v1/meters/{slug}").status_code == 200


def _stored_now(admin: httpx.Client, event_id: str) -> bool:
    return any(item["event"]["id"] == event_id for item in admin.get("/api/v1/events", params={"id": event_id}).json())


def _stored_soon(admin: httpx.Client, event_id: str) -> bool:
    return Retrying(
        stop=stop_after_delay(TIMEOUTS.usage_convergence),
        wait=wait_fixed(0.1),
        retry=retry_if_result(lambda stored: not stored),
        retry_error_callback=lambda state: state.outcome.result(),
    )(lambda: _stored_now(admin, event_id))


def _stored(admin: httpx.Client, uid: str, expected: bool) -> bool:
    if expected:
        return _stored_soon(admin, uid)
    # An admin's event posted after it is stored: the refused one would have been by now.
    marker = f"{uid}-marker"
    response = admin.post(
        "/api/v1/events", json=event(marker, "call", "s"), headers={"content-type": "application/cloudevents+json"}
    )
    assert response.status_code == 204 and _stored_soon(admin, marker)
    return _stored_now(admin, uid)


def _delete(http: httpx.Client, admin: httpx.Client, uid: str) -> httpx.Response:
    assert (
        admin.post("/api/v1/meters", json={"slug": f"d_{uid}", "eventType": "call", "aggregation": "COUNT"}).status_code
        == 201
    )
    return http.delete(f"/api/v1/meters/d_{uid}")


def _send(method: str, path: str, **kwargs) -> Callable[[httpx.Client, httpx.Client, str], httpx.Response]:
    return lambda http, _admin, _uid: http.request(method, path, **kwargs)


OPERATIONS = [
    Operation(
        "post events",
        "ingest",
        lambda http, _, uid: http.post(
            "/api/v1/events", json=event(uid, "call", "s"), headers={"content-type": "application/cloudevents+json"}
        ),
        _stored,
    ),
    Operation("list events", "read", _send("GET", "/api/v1/events"), None),
    Operation("list meters", "read", _send("GET", "/api/v1/meters"), None),
    Operation("head meters", "read", _send("HEAD", "/api/v1/meters"), None),
    Operation("get meter", "read", _send("GET", f"/api/v1/meters/{SLUG}"), None),
    Operation("query", "read", _send("GET", f"/api/v1/meters/{SLUG}/query"), None),
    Operation("query by POST", "read", _send("POST", f"/api/v1/meters/{SLUG}/query", json={}), None),
    Operation("subjects", "read", _send("GET", f"/api/v1/meters/{SLUG}/subjects"), None),
    Operation(
        "create meter",
        "admin",
        lambda http, _, uid: http.post(
            "/api/v1/meters", json={"slug": f"c_{uid}", "eventType": "call", "aggregation": "COUNT"}
        ),
        lambda admin, uid, _: _exists(admin, f"c_{uid}"),
    ),
    Operation(
        "update meter",
        "admin",
        lambda http, _, uid: http.put(f"/api/v1/meters/{SLUG}", json={"description": uid}),
        lambda admin, uid, _: admin.get(f"/api/v1/meters/{SLUG}").json().get("description") == uid,
    ),
    Operation("delete meter", "admin", _delete, lambda admin, uid, _: not _exists(admin, f"d_{uid}")),
    Operation("openapi document", None, _send("GET", "/api/v1/openapi.yaml"), None),
]


def bearer_client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def check(
    url: str, admin_token: str, token: str, granted: set[str], operation: Operation, uid: str, scope: str | None = None
) -> None:
    """One operation with one token: done when granted (admin grants all), else 403 and not done."""
    with bearer_client(url, token) as http, bearer_client(url, admin_token) as admin:
        response = operation.send(http, admin, uid)
        allowed = operation.permission is None or operation.permission in granted or "admin" in granted
        if allowed:
            assert response.status_code in (200, 201, 204), (operation.name, response.status_code, response.text[:300])
            if operation.done is not None:
                assert operation.done(admin, uid, True), f"{operation.name}: answered but not done"
            return
        assert response.status_code == 403, (operation.name, response.status_code, response.text[:300])
        assert response.headers["content-type"] == PROBLEM
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="bp-openmeter"') and 'error="insufficient_scope"' in challenge
        if scope:
            assert f'scope="{scope}"' in challenge, challenge
        if operation.name != "head meters":  # a HEAD answer has no body
            assert f"'{operation.permission}' permission" in response.json()["detail"]
        if operation.done is not None:
            assert not operation.done(admin, uid, False), f"{operation.name}: refused with 403 but done anyway"


# --- static tokens ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_stack(stack_factory):
    return stack_factory(
        [{"slug": SLUG, "eventType": "call", "aggregation": "COUNT"}],
        overrides={"api": {"auth": {"mode": "token"}}},
        env={
            "BPOM_API_TOKENS": ADMIN,
            "BPOM_API_INGEST_TOKENS": f"{INGEST},{INGEST_AND_READ}",
            "BPOM_API_READ_TOKENS": f"{READ},{INGEST_AND_READ}",
        },
    )


TOKENS = {
    "admin": (ADMIN, {"admin"}),
    "ingest": (INGEST, {"ingest"}),
    "read": (READ, {"read"}),
    "ingest+read": (INGEST_AND_READ, {"ingest", "read"}),
}


@pytest.mark.parametrize("operation", OPERATIONS, ids=[o.name for o in OPERATIONS])
@pytest.mark.parametrize("kind", list(TOKENS))
def test_static_token_permissions(token_stack, kind, operation, uid):
    token, granted = TOKENS[kind]
    check(token_stack.api_url, ADMIN, token, granted, operation, uid)


def test_refusals_for_a_missing_permission_are_counted(token_stack):
    with bearer_client(token_stack.api_url, INGEST) as http:
        assert http.get("/api/v1/meters").status_code == 403
    assert 'bpom_auth_failures_total{reason="permission"}' in httpx.get(f"{token_stack.telemetry_url}/metrics").text


# --- OIDC scopes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def issuer():
    server = JwksServer([SigningKey("ES256")])
    yield server
    server.stop()


def oidc_stack(stack_factory, issuer, **settings):
    return stack_factory(
        [{"slug": SLUG, "eventType": "call", "aggregation": "COUNT"}],
        overrides={
            "api": {
                "auth": {
                    "mode": "oidc",
                    "oidc": {
                        "issuer": ISSUER,
                        "jwksUrl": issuer.url,
                        "allowInsecureJwksUrl": True,
                        "audience": AUDIENCE,
                        **settings,
                    },
                }
            }
        },
    )


@pytest.fixture(scope="module")
def scoped_stack(stack_factory, issuer):
    """Permissions by scope only: a token without a permission scope may do nothing."""
    return oidc_stack(stack_factory, issuer, defaultPermissions=[])


SCOPES = {
    "admin": ("openmeter:admin", {"admin"}),
    "ingest": ("openmeter:ingest", {"ingest"}),
    "read": ("openmeter:read", {"read"}),
    "ingest+read": ("openmeter:ingest openmeter:read", {"ingest", "read"}),
    "none": ("profile email", set()),
}
NEEDED_SCOPE = {"ingest": "openmeter:ingest", "read": "openmeter:read", "admin": "openmeter:admin"}


@pytest.mark.parametrize("operation", OPERATIONS, ids=[o.name for o in OPERATIONS])
@pytest.mark.parametrize("kind", list(SCOPES))
def test_oidc_scope_permissions(scoped_stack, issuer, kind, operation, uid):
    scope, granted = SCOPES[kind]
    key = issuer.keys[0]
    check(
        scoped_stack.api_url,
        key.token(scope="openmeter:admin"),
        key.token(scope=scope),
        granted,
        operation,
        uid,
        scope=NEEDED_SCOPE.get(operation.permission or ""),
    )


def test_oidc_tokens_are_admins_by_default_as_before_permissions(stack_factory, issuer, uid):
    stack = oidc_stack(stack_factory, issuer)
    token = issuer.keys[0].token(scope="profile")
    for operation in OPERATIONS:
        check(stack.api_url, token, token, {"admin"}, operation, f"{uid}{operation.name.replace(' ', '')}")


def test_oidc_scope_names_can_be_configured(stack_factory, issuer, uid):
    stack = oidc_stack(
        stack_factory,
        issuer,
        defaultPermissions=["read"],
        permissionScopes={"ingest": "metering.write", "admin": "metering.admin"},
    )
    key = issuer.keys[0]
    admin = key.token(scope="metering.admin")
    default_name = key.token(scope="openmeter:ingest")  # the default name no longer grants ingest
    post_events, list_meters = OPERATIONS[0], OPERATIONS[2]
    check(stack.api_url, admin, default_name, {"read"}, post_events, f"{uid}-a", scope="metering.write")
    check(stack.api_url, admin, default_name, {"read"}, list_meters, f"{uid}-b")
    check(stack.api_url, admin, key.token(scope="metering.write"), {"read", "ingest"}, post_events, f"{uid}-c")

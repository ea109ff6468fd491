"""No credentials inside a URL value: they would be written into the ConfigMap in clear.

The schema refuses them at helm install/template, naming the Secret options to use
instead; those options really put the credentials into the engine's environment.
"""

from __future__ import annotations

import pytest

from testkit.chart.render import RenderError, get, names_key, render_chart

pytestmark = pytest.mark.helm


@pytest.mark.parametrize(
    "values, key, points_to",
    [
        ({"nats": {"url": "nats://metering:s3cret@nats:4222"}}, "nats.url", "nats.auth"),
        ({"nats": {"url": "nats://s3cret@nats:4222"}}, "nats.url", "nats.urlSecret"),
        ({"nats": {"url": "nats://:s3cret@nats:4222"}}, "nats.url", "nats.auth"),
        ({"nats": {"url": "tls://u:s3cret@nats:4222"}}, "nats.url", "nats.auth"),
        ({"valkey": {"url": "redis://:s3cret@valkey:6379/0"}}, "valkey.url", "valkey.passwordSecret"),
        ({"valkey": {"url": "redis://default:s3cret@valkey:6379/0"}}, "valkey.url", "valkey.usernameSecret"),
        ({"valkey": {"url": "rediss://valkey:6379/0?password=s3cret"}}, "valkey.url", "valkey.urlSecret"),
        (
            {"api": {"auth": {"oidc": {"jwksUrl": "https://u:s3cret@sso.example/certs"}}}},
            "api.auth.oidc.jwksUrl",
            "public",
        ),
        ({"api": {"auth": {"oidc": {"issuer": "https://u:s3cret@sso.example"}}}}, "api.auth.oidc.issuer", "public"),
        (
            {"catalystBlueprint": {"upstream": {"repo": "oci://u:s3cret@ghcr.io/openmeterio/helm-charts"}}},
            "catalystBlueprint.upstream.repo",
            "registry",
        ),
    ],
)
def test_a_url_with_credentials_is_refused_pointing_to_the_secret_options(values, key, points_to):
    with pytest.raises(RenderError) as failure:
        render_chart(values)
    message = str(failure.value)
    assert names_key(message, key) and points_to in message, message
    assert "s3cret" not in message, "the refusal repeats the secret"


@pytest.mark.parametrize(
    "values",
    [
        {"nats": {"url": "nats://nats.nats-system.svc.cluster.local:4222"}},
        {"nats": {"url": "tls://nats:4222"}},
        {"valkey": {"url": "redis://valkey:6379/0"}},
        {"valkey": {"url": "rediss://valkey:6380/0?ssl_cert_reqs=required"}},
    ],
)
def test_a_url_without_credentials_renders(values):
    render_chart(values)


def test_the_secret_options_reach_the_engine_environment():
    objects = render_chart(
        {
            "nats": {
                "auth": {"secretName": "nats-creds", "userKey": "user", "passwordKey": "password", "tokenKey": "token"}
            },
            "valkey": {"usernameSecret": {"name": "vk", "key": "user"}, "passwordSecret": {"name": "vk", "key": "pw"}},
        }
    )
    for deployment in ("openmeter-api", "openmeter-sink"):
        [container] = get(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in container["env"]}
        assert env["BPOM_NATS_USER"] == {"name": "nats-creds", "key": "user"}
        assert env["BPOM_NATS_PASSWORD"] == {"name": "nats-creds", "key": "password"}
        assert env["BPOM_NATS_TOKEN"] == {"name": "nats-creds", "key": "token"}
        assert env["BPOM_VALKEY_USERNAME"] == {"name": "vk", "key": "user"}
        assert env["BPOM_VALKEY_PASSWORD"] == {"name": "vk", "key": "pw"}

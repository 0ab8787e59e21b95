"""Settings from environment variables and flags (SPEC section 7)."""

import pytest

from dcp_http.config import ConfigError, RateLimit, ServerConfig, load_config


def test_defaults_are_spec_section_7():
    """With nothing set, every default is the one SPEC section 7 gives."""
    c = load_config({})
    assert (c.db, c.host, c.port, c.admin_token) == ("./dcp.db", "127.0.0.1", 8000, None)
    assert (c.sandbox, c.auto_approve, c.rate_limits) == (False, False, True)
    assert (c.lease_ttl_s, c.max_attempts, c.online_s, c.stale_s) == (120, 3, 90, 300)
    assert (c.sweep_interval_s, c.deadline_grace_s, c.queue_timeout_s) == (5.0, 60, 86400)
    assert c.cors_origins == ()
    assert c.rate_limit_table["register"] == RateLimit(5, 3600.0)
    assert c.rate_limit_table["submit"] == RateLimit(60, 60.0)
    assert c.rate_limit_table["heartbeat"] == RateLimit(30, 60.0)
    assert c.rate_limit_table["admin"] == RateLimit(120, 60.0)
    assert c.rate_limit_table["default"] == RateLimit(1000, 60.0)


def test_every_variable_is_read():
    """Each DCP_* variable of the table lands in its field."""
    env = {
        "DCP_DB": "/tmp/x.db",
        "DCP_HOST": "0.0.0.0",
        "DCP_PORT": "9000",
        "DCP_ADMIN_TOKEN": "secret-0123456789abcdefghijklmnopq",
        "DCP_SANDBOX": "1",
        "DCP_LEASE_TTL_S": "30",
        "DCP_MAX_ATTEMPTS": "5",
        "DCP_ONLINE_S": "60",
        "DCP_STALE_S": "200",
        "DCP_AUTO_APPROVE": "1",
        "DCP_SWEEP_INTERVAL_S": "0.5",
        "DCP_DEADLINE_GRACE_S": "10",
        "DCP_QUEUE_TIMEOUT_S": "600",
        "DCP_RATE_LIMITS": "0",
        "DCP_CORS_ORIGINS": "https://a.example, https://b.example",
        "DCP_RATE_LIMIT_SUBMIT": "10/1",
    }
    c = load_config(env)
    assert c.db == "/tmp/x.db" and c.host == "0.0.0.0" and c.port == 9000
    assert (
        c.admin_token == "secret-0123456789abcdefghijklmnopq"
        and c.sandbox
        and c.auto_approve
        and not c.rate_limits
    )
    assert (c.lease_ttl_s, c.max_attempts, c.online_s, c.stale_s) == (30, 5, 60, 200)
    assert (c.sweep_interval_s, c.deadline_grace_s, c.queue_timeout_s) == (0.5, 10, 600)
    assert c.cors_origins == ("https://a.example", "https://b.example")
    assert c.rate_limit_table["submit"] == RateLimit(10, 1.0)


def test_a_flag_wins_over_the_environment():
    """A flag given (not None) overrides its variable; a flag left None does not."""
    c = load_config({"DCP_PORT": "9000", "DCP_SANDBOX": "1"}, {"port": 9100, "sandbox": None})
    assert c.port == 9100 and c.sandbox is True


@pytest.mark.parametrize(
    "env",
    [
        {"DCP_PORT": "eighty"},
        {"DCP_PORT": "70000"},
        {"DCP_SANDBOX": "maybe"},
        {"DCP_SWEEP_INTERVAL_S": "nan"},
        {"DCP_ONLINE_S": "400"},
        {"DCP_RATE_LIMIT_SUBMIT": "lots"},
        {"DCP_RATE_LIMIT_NOPE": "1/1"},
    ],
)
def test_a_bad_value_is_refused_by_name(env):
    """An unusable value raises ConfigError naming what is wrong."""
    with pytest.raises(ConfigError):
        load_config(env)


def test_domain_settings_share_the_thresholds():
    """The domain's Settings get the same thresholds as the server config."""
    c = ServerConfig(lease_ttl_s=7, max_attempts=2, sweep_interval_s=0.2, sandbox=True)
    s = c.domain_settings()
    assert (s.lease_ttl_s, s.max_attempts, s.sandbox) == (7, 2, True)
    assert s.sweep_interval_s == 1


def test_payment_settings_are_read_and_checked():
    """The gateway's settings (docs/payments.md): defaults, every variable, bad values named."""
    c = load_config({})
    assert (c.moyasar_secret_key, c.moyasar_webhook_token, c.public_url) == (None, None, None)
    assert c.moyasar_api_url == "https://api.moyasar.com/v1"
    assert c.moyasar_checkout_origin == "https://checkout.moyasar.com"
    assert (
        load_config(
            {"DCP_MOYASAR_CHECKOUT_ORIGIN": "https://pay.example:8443"}
        ).moyasar_checkout_origin
        == "https://pay.example:8443"
    )
    assert (c.topup_min_halala, c.topup_max_halala, c.topup_reconcile_after_s) == (
        100,
        1_000_000,
        600,
    )
    c = load_config(
        {
            "DCP_MOYASAR_SECRET_KEY": "sk_test_x",
            "DCP_MOYASAR_WEBHOOK_TOKEN": "tok",
            "DCP_MOYASAR_API_URL": "http://127.0.0.1:1/v1",
            "DCP_MOYASAR_TIMEOUT_S": "2.5",
            "DCP_PUBLIC_URL": "https://dcp.example",
            "DCP_TOPUP_MIN_HALALA": "500",
            "DCP_TOPUP_MAX_HALALA": "900",
            "DCP_TOPUP_RECONCILE_AFTER_S": "60",
            "DCP_TOPUP_SWEEP_INTERVAL_S": "5",
            "DCP_TOPUP_SWEEP_LIMIT": "7",
            "DCP_TOPUP_INVOICE_TTL_S": "3600",
        }
    )
    assert (c.moyasar_secret_key, c.moyasar_webhook_token) == ("sk_test_x", "tok")
    assert (c.moyasar_api_url, c.moyasar_timeout_s, c.public_url) == (
        "http://127.0.0.1:1/v1",
        2.5,
        "https://dcp.example",
    )
    assert (c.topup_min_halala, c.topup_max_halala, c.topup_reconcile_after_s) == (500, 900, 60)
    assert (c.topup_sweep_interval_s, c.topup_sweep_limit, c.topup_invoice_ttl_s) == (5.0, 7, 3600)
    assert (c.domain_settings().topup_min_halala, c.domain_settings().topup_max_halala) == (
        500,
        900,
    )
    for env, name in (
        ({"DCP_TOPUP_MIN_HALALA": "900", "DCP_TOPUP_MAX_HALALA": "500"}, "DCP_TOPUP_MIN_HALALA"),
        ({"DCP_MOYASAR_API_URL": "ftp://x"}, "DCP_MOYASAR_API_URL"),
        # It goes into a CSP header: a path, a space or a `;` would change the policy.
        (
            {"DCP_MOYASAR_CHECKOUT_ORIGIN": "https://x/; script-src *"},
            "DCP_MOYASAR_CHECKOUT_ORIGIN",
        ),
        ({"DCP_TOPUP_SWEEP_LIMIT": "0"}, "DCP_TOPUP_SWEEP_LIMIT"),
    ):
        with pytest.raises(ConfigError, match=name):
            load_config(env)

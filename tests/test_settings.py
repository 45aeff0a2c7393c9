# House style writes assertions as `expected == actual`; ruff's SIM300 calls that Yoda style.
# ruff: noqa: SIM300

"""Tests for load_settings (every BUTTRESS_* variable), policies_for and http_options_for."""

from __future__ import annotations

from pathlib import Path

import pytest

from buttress import templates
from buttress._api import PolicySet
from buttress._exceptions import ConfigurationError
from buttress._settings import (
    KNOWN_INSTRUMENTATIONS,
    NOT_SET,
    DbOptions,
    HttpOptions,
    Settings,
    db_options_for,
    http_options_for,
    load_settings,
    policies_for,
    strict_requested,
)
from buttress._settings_env import read_health_port, read_port
from buttress.policies._bulkhead import Bulkhead
from buttress.policies._timeout import Timeout


def write(tmp_path: Path, text: str) -> str:
    """Write *text* as buttress.toml under *tmp_path* and return its path."""
    path = tmp_path / "buttress.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_of(environ: dict[str, str]) -> str:
    """The message of the ConfigurationError load_settings raises for *environ*."""
    with pytest.raises(ConfigurationError) as info:
        load_settings(environ)
    return str(info.value)


# --- defaults ----------------------------------------------------------------------------------


def test_empty_environment_gives_the_defaults():
    """With no variables, buttress is off, enforcing, with every instrumentation and no file."""
    assert Settings() == load_settings({})


def test_defaults_are_documented_values():
    """The defaults are off, enforce, all instrumentations, 50 samples/s, nothing overridden."""
    settings = load_settings({})

    assert (False, "enforce", None, frozenset(), False, None, 50.0, None, NOT_SET, NOT_SET) == (
        settings.enabled,
        settings.mode,
        settings.instrumentations,
        settings.disabled,
        settings.strict,
        settings.config_path,
        settings.samples_per_second,
        settings.retry_attempts,
        settings.timeout_attempt,
        settings.timeout_total,
    )


def test_empty_values_mean_unset():
    """A variable set to an empty or blank string counts as not set."""
    environ = {"BUTTRESS_ENABLED": "", "BUTTRESS_MODE": "  ", "BUTTRESS_RETRY_ATTEMPTS": ""}

    assert Settings() == load_settings(environ)


# --- booleans ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("On", True),
        (" true ", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("OFF", False),
    ],
)
@pytest.mark.parametrize("variable", ["BUTTRESS_ENABLED", "BUTTRESS_STRICT"])
def test_booleans_accept_the_usual_spellings(variable, raw, expected):
    """Booleans accept true/false/1/0/yes/no/on/off in any case, with surrounding spaces."""
    settings = load_settings({variable: raw})
    attribute = "enabled" if variable == "BUTTRESS_ENABLED" else "strict"

    assert expected == getattr(settings, attribute)


@pytest.mark.parametrize("variable", ["BUTTRESS_ENABLED", "BUTTRESS_STRICT"])
def test_bad_boolean_names_variable_value_and_accepted(variable):
    """A bad boolean's message names the variable, the value and the accepted spellings."""
    message = error_of({variable: "maybe"})

    assert (
        f"{variable}='maybe' is not accepted; expected true, false, 1, 0, yes, no, on or off "
        "(any case)"
    ) == message


# --- mode ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"), [("enforce", "enforce"), ("observe", "observe"), ("OBSERVE", "observe")]
)
def test_mode(raw, expected):
    """BUTTRESS_MODE is enforce or observe, case-insensitive."""
    settings = load_settings({"BUTTRESS_MODE": raw})

    assert (expected, expected == "observe") == (settings.mode, settings.observe)


def test_bad_mode():
    """An unknown mode names the variable, the value and both modes."""
    assert "BUTTRESS_MODE='shadow' is not accepted; expected enforce or observe" == error_of(
        {"BUTTRESS_MODE": "shadow"}
    )


# --- instrumentations ------------------------------------------------------------------------------


def test_known_instrumentations():
    """The documented instrumentation names are all known."""
    assert (
        "requests",
        "httpx",
        "httpx2",
        "aiohttp",
        "urllib3",
        "psycopg",
        "psycopg2",
        "asyncpg",
        "pymysql",
        "sqlalchemy",
        "redis",
        "sqlite3",
        "openai",
        "anthropic",
        "groq",
        "google-genai",
    ) == KNOWN_INSTRUMENTATIONS


def test_instrumentations_are_a_comma_list():
    """BUTTRESS_INSTRUMENTATIONS is split on commas, trimmed, lowercased; empty items skipped."""
    settings = load_settings({"BUTTRESS_INSTRUMENTATIONS": " Requests, httpx,,google-genai "})

    assert frozenset({"requests", "httpx", "google-genai"}) == settings.instrumentations


def test_disabled_instrumentations():
    """BUTTRESS_DISABLED_INSTRUMENTATIONS is parsed the same way."""
    settings = load_settings({"BUTTRESS_DISABLED_INSTRUMENTATIONS": "redis,sqlite3"})

    assert frozenset({"redis", "sqlite3"}) == settings.disabled


@pytest.mark.parametrize(
    "variable", ["BUTTRESS_INSTRUMENTATIONS", "BUTTRESS_DISABLED_INSTRUMENTATIONS"]
)
def test_unknown_instrumentation_names_variable_name_and_accepted(variable):
    """An unknown name is reported with the variable and the whole accepted list."""
    message = error_of({variable: "requests,boto3"})

    assert (
        f"{variable}: unknown instrumentation 'boto3'; expected a comma-separated list of: "
        + ", ".join(KNOWN_INSTRUMENTATIONS)
    ) == message


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"BUTTRESS_ENABLED": "true"}, True),
        ({"BUTTRESS_ENABLED": "true", "BUTTRESS_INSTRUMENTATIONS": "requests"}, False),
        ({"BUTTRESS_ENABLED": "true", "BUTTRESS_INSTRUMENTATIONS": "httpx"}, True),
        ({"BUTTRESS_ENABLED": "true", "BUTTRESS_DISABLED_INSTRUMENTATIONS": "httpx"}, False),
        (
            {
                "BUTTRESS_ENABLED": "true",
                "BUTTRESS_INSTRUMENTATIONS": "httpx",
                "BUTTRESS_DISABLED_INSTRUMENTATIONS": "httpx",
            },
            False,
        ),
    ],
)
def test_wants(environ, expected):
    """wants() needs buttress enabled, the name selected (or none selected) and not disabled."""
    assert expected == load_settings(environ).wants("httpx")


def test_wants_rejects_unknown_names():
    """Asking about an unknown instrumentation is a programming error, reported at once."""
    with pytest.raises(ConfigurationError, match="name='boto3' is not accepted"):
        Settings(enabled=True).wants("boto3")


# --- numbers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "raw", "attribute", "expected"),
    [
        ("BUTTRESS_METRICS_SAMPLES_PER_SECOND", "0", "samples_per_second", 0.0),
        ("BUTTRESS_METRICS_SAMPLES_PER_SECOND", "12.5", "samples_per_second", 12.5),
        ("BUTTRESS_RETRY_ATTEMPTS", "1", "retry_attempts", 1),
        ("BUTTRESS_RETRY_ATTEMPTS", " 7 ", "retry_attempts", 7),
        ("BUTTRESS_TIMEOUT_ATTEMPT", "2.5", "timeout_attempt", 2.5),
        ("BUTTRESS_TIMEOUT_ATTEMPT", "none", "timeout_attempt", None),
        ("BUTTRESS_TIMEOUT_TOTAL", "60", "timeout_total", 60.0),
        ("BUTTRESS_TIMEOUT_TOTAL", "None", "timeout_total", None),
        ("BUTTRESS_BREAKER_FAILURE_RATE", "1", "breaker_failure_rate", 1.0),
        ("BUTTRESS_BREAKER_FAILURE_RATE", "0.25", "breaker_failure_rate", 0.25),
        ("BUTTRESS_BREAKER_OPEN_DURATION", "12", "breaker_open_duration", 12.0),
        ("BUTTRESS_BULKHEAD_MAX_CONCURRENT", "1", "bulkhead_max_concurrent", 1),
        ("BUTTRESS_MAX_TARGETS", "500", "max_targets", 500),
    ],
)
def test_good_numbers(variable, raw, attribute, expected):
    """Each numeric variable accepts values in its range (and `none` for the timeouts)."""
    assert expected == getattr(load_settings({variable: raw}), attribute)


@pytest.mark.parametrize(
    ("variable", "raw", "accepted"),
    [
        ("BUTTRESS_METRICS_SAMPLES_PER_SECOND", "-1", "a number of samples per second >= 0"),
        ("BUTTRESS_METRICS_SAMPLES_PER_SECOND", "lots", "a number of samples per second >= 0"),
        ("BUTTRESS_METRICS_SAMPLES_PER_SECOND", "inf", "a number of samples per second >= 0"),
        ("BUTTRESS_RETRY_ATTEMPTS", "0", "an integer >= 1"),
        ("BUTTRESS_RETRY_ATTEMPTS", "2.5", "an integer >= 1"),
        ("BUTTRESS_RETRY_ATTEMPTS", "none", "an integer >= 1"),
        ("BUTTRESS_TIMEOUT_ATTEMPT", "0", "a number of seconds > 0, or none"),
        ("BUTTRESS_TIMEOUT_ATTEMPT", "-3", "a number of seconds > 0, or none"),
        ("BUTTRESS_TIMEOUT_TOTAL", "nan", "a number of seconds > 0, or none"),
        ("BUTTRESS_TIMEOUT_TOTAL", "10s", "a number of seconds > 0, or none"),
        ("BUTTRESS_BREAKER_FAILURE_RATE", "0", "a failure rate > 0 and <= 1, such as 0.5"),
        ("BUTTRESS_BREAKER_FAILURE_RATE", "1.5", "a failure rate > 0 and <= 1, such as 0.5"),
        ("BUTTRESS_BREAKER_FAILURE_RATE", "50%", "a failure rate > 0 and <= 1, such as 0.5"),
        ("BUTTRESS_BREAKER_OPEN_DURATION", "0", "a number of seconds > 0"),
        ("BUTTRESS_BREAKER_OPEN_DURATION", "none", "a number of seconds > 0"),
        ("BUTTRESS_BULKHEAD_MAX_CONCURRENT", "0", "an integer >= 1"),
        ("BUTTRESS_BULKHEAD_MAX_CONCURRENT", "ten", "an integer >= 1"),
        ("BUTTRESS_MAX_TARGETS", "-5", "an integer >= 1"),
    ],
)
def test_bad_numbers_name_variable_value_and_accepted(variable, raw, accepted):
    """A bad number's message names the variable, the value and the accepted range."""
    assert f"{variable}={raw!r} is not accepted; expected {accepted}" == error_of({variable: raw})


def test_secret_looking_values_are_not_echoed():
    """A value that looks like a key is reported by its length, never shown."""
    secret = "sk-live-4f9a8b7c6d5e4f3a2b1c"

    message = error_of({"BUTTRESS_ENABLED": secret})

    assert secret not in message
    assert message.startswith(f"BUTTRESS_ENABLED=<{len(secret)} characters, not shown>")


def test_admin_token_is_never_read():
    """Whatever BUTTRESS_ADMIN_TOKEN holds, load_settings neither fails on it nor keeps it."""
    token = "hunter2-0123456789abcdef"

    settings = load_settings({"BUTTRESS_ADMIN_TOKEN": token})

    assert token not in repr(settings)


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, False), ("false", False), ("true", True), ("garbage", True)]
)
def test_strict_requested(raw, expected):
    """strict_requested never raises; a malformed value counts as strict."""
    environ = {} if raw is None else {"BUTTRESS_STRICT": raw}

    assert expected == strict_requested(environ)


def test_side_feature_variables_are_not_read_by_load_settings():
    """A bad health or Prometheus port must turn off that feature only, never all of buttress."""
    environ = {
        "BUTTRESS_ENABLED": "true",
        "BUTTRESS_HEALTH_PORT": "nope",
        "OTEL_EXPORTER_PROMETHEUS_PORT": "nope",
    }

    assert True is load_settings(environ).enabled


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0),
        (" 8081 ", 8081),
        ("65535", 65535),
        ("8081-8084", range(8081, 8085)),
        ("8081 - 8081", range(8081, 8082)),
        ("1-65535", range(1, 65536)),
    ],
)
def test_read_health_port_takes_a_port_or_a_range(raw, expected):
    """BUTTRESS_HEALTH_PORT: unset, one port (0 picks one), or FIRST-LAST to try in order."""
    environ = {} if raw is None else {"BUTTRESS_HEALTH_PORT": raw}

    assert expected == read_health_port(environ)


@pytest.mark.parametrize(
    "raw",
    [
        "http",
        "-1",
        "65536",
        "80.5",
        "8084-8081",
        "0-4",
        "8081-65536",
        "8081-",
        "1-2-3",
        "8081..8084",
    ],
)
def test_read_health_port_rejects_anything_else(raw):
    """The message names the variable and the value, and shows both accepted forms."""
    with pytest.raises(ConfigurationError) as info:
        read_health_port({"BUTTRESS_HEALTH_PORT": raw})

    message = str(info.value)
    assert f"BUTTRESS_HEALTH_PORT={raw!r} is not accepted" in message
    assert "0 to 65535" in message
    assert "FIRST-LAST" in message


def test_read_port_reads_a_port_or_gives_the_default():
    """OTEL_EXPORTER_PROMETHEUS_PORT: 0..65535, the default when unset or blank."""
    name = "OTEL_EXPORTER_PROMETHEUS_PORT"

    assert (9464, 9464, 9100) == (
        read_port({}, name, 9464),
        read_port({name: " "}, name, 9464),
        read_port({name: "9100"}, name, 9464),
    )


@pytest.mark.parametrize("raw", ["http", "-1", "65536", "9464.0", "0x24f8"])
def test_read_port_rejects_anything_else(raw):
    """The message names the variable, the value and the range."""
    name = "OTEL_EXPORTER_PROMETHEUS_PORT"
    with pytest.raises(ConfigurationError) as info:
        read_port({name: raw}, name, 9464)

    assert f"{name}={raw!r} is not accepted; expected an integer from 0 to 65535" == str(info.value)


# --- the file through BUTTRESS_CONFIG ----------------------------------------------------------------


def test_config_file_is_loaded(tmp_path):
    """BUTTRESS_CONFIG names a file that is loaded into settings.file."""
    path = write(tmp_path, '[targets."a:1"]\nretry.attempts = 5\n')

    settings = load_settings({"BUTTRESS_CONFIG": path})

    assert (path, path, ('targets."a:1"',)) == (
        settings.config_path,
        settings.file.path if settings.file else None,
        tuple(s.name for s in settings.file.targets) if settings.file else (),
    )


def test_config_file_errors_name_the_variable(tmp_path):
    """A missing file is reported with the variable that named it."""
    path = str(tmp_path / "missing.toml")

    assert (
        f"BUTTRESS_CONFIG: {path}: cannot read the configuration file: No such file or directory"
    ) == error_of({"BUTTRESS_CONFIG": path})


def test_quick_variables_are_checked_against_every_kind():
    """A quick variable that no template can take fails at load time, naming the variable."""
    message = error_of({"BUTTRESS_BREAKER_OPEN_DURATION": "400"})

    assert message.startswith(
        "BUTTRESS_BREAKER_OPEN_DURATION=400: CircuitBreaker: max_open_duration=300.0 is out of "
        "range; expected a number >= 400"
    )


# --- policies_for: precedence -------------------------------------------------------------------------


LAYERED = """
[defaults.http]
retry.attempts = 2
bulkhead.max_concurrent = 100
timeout.total = 40.0

[targets."*.example.com:*"]
retry.attempts = 3
bulkhead.max_concurrent = 50

[targets."*:443"]
retry.attempts = 9

[targets."api.example.com:443"]
retry.attempts = 4
"""


@pytest.fixture
def layered(tmp_path: Path) -> str:
    """A file in which api.example.com:443 matches two globs and its exact name."""
    return write(tmp_path, LAYERED)


def test_without_a_file_the_template_applies():
    """With no file and no variables, a target gets its kind's built-in template."""
    assert templates.database() == policies_for(Settings(), "orders-db", "db")


def test_function_kind_has_no_template():
    """Kind function starts with no policies at all."""
    assert PolicySet() == policies_for(Settings(), "job", "function")


def test_defaults_override_the_template(layered):
    """[defaults.http] overrides the template for a target no table matches."""
    policies = policies_for(load_settings({"BUTTRESS_CONFIG": layered}), "other.org:80", "http")

    assert (2, 100, 40.0, 10.0) == (
        policies.retry.attempts if policies.retry else None,
        policies.bulkhead.max_concurrent if policies.bulkhead else None,
        policies.timeout.total if policies.timeout else None,
        policies.timeout.attempt if policies.timeout else None,
    )


def test_a_glob_overrides_the_defaults(layered):
    """The longest matching glob overrides the defaults; what it does not set stays."""
    settings = load_settings({"BUTTRESS_CONFIG": layered})

    policies = policies_for(settings, "www.example.com:443", "http")

    assert (3, 50, 40.0) == (
        policies.retry.attempts if policies.retry else None,
        policies.bulkhead.max_concurrent if policies.bulkhead else None,
        policies.timeout.total if policies.timeout else None,
    )


def test_the_exact_name_overrides_every_glob(layered):
    """A table named exactly after the target beats the globs that also match it."""
    settings = load_settings({"BUTTRESS_CONFIG": layered})

    policies = policies_for(settings, "api.example.com:443", "http")

    assert (4, 100) == (
        policies.retry.attempts if policies.retry else None,
        policies.bulkhead.max_concurrent if policies.bulkhead else None,
    )


def test_quick_variables_override_everything(layered):
    """A BUTTRESS_* quick variable beats even the exact target table."""
    settings = load_settings({"BUTTRESS_CONFIG": layered, "BUTTRESS_RETRY_ATTEMPTS": "1"})

    policies = policies_for(settings, "api.example.com:443", "http")

    assert (1, 100) == (
        policies.retry.attempts if policies.retry else None,
        policies.bulkhead.max_concurrent if policies.bulkhead else None,
    )


def test_every_quick_variable_applies():
    """Each quick variable sets its parameter on every kind that has the policy."""
    settings = load_settings(
        {
            "BUTTRESS_RETRY_ATTEMPTS": "2",
            "BUTTRESS_TIMEOUT_ATTEMPT": "none",
            "BUTTRESS_TIMEOUT_TOTAL": "9",
            "BUTTRESS_BREAKER_FAILURE_RATE": "0.3",
            "BUTTRESS_BREAKER_OPEN_DURATION": "7",
            "BUTTRESS_BULKHEAD_MAX_CONCURRENT": "3",
        }
    )

    for kind in ("http", "db", "llm"):
        policies = policies_for(settings, "t", kind)

        assert (2, None, 9.0, 0.3, 7.0, 3) == (
            policies.retry.attempts if policies.retry else None,
            policies.timeout.attempt if policies.timeout else "missing",
            policies.timeout.total if policies.timeout else None,
            policies.breaker.failure_rate_threshold if policies.breaker else None,
            policies.breaker.open_duration if policies.breaker else None,
            policies.bulkhead.max_concurrent if policies.bulkhead else None,
        )


def test_quick_variables_keep_the_templates_callables():
    """Overriding a number keeps the template's predicates (what to retry)."""
    template = templates.llm()

    policies = policies_for(load_settings({"BUTTRESS_RETRY_ATTEMPTS": "2"}), "openai", "llm")

    assert (template.retry.on, template.retry.retry_after) == (
        policies.retry.on if policies.retry else None,
        policies.retry.retry_after if policies.retry else None,
    )


def test_a_quick_variable_adds_a_missing_policy():
    """On a kind without the policy, a quick variable adds it with the policy's defaults."""
    settings = load_settings(
        {"BUTTRESS_BULKHEAD_MAX_CONCURRENT": "4", "BUTTRESS_TIMEOUT_TOTAL": "5"}
    )

    policies = policies_for(settings, "job", "function")

    assert (
        Bulkhead(max_concurrent=4),
        Timeout(attempt=10.0, total=5.0, respect_app_timeout=False),
    ) == (
        policies.bulkhead,
        policies.timeout,
    )


def test_unknown_kind():
    """policies_for names the accepted kinds when given an unknown one."""
    with pytest.raises(ConfigurationError) as info:
        policies_for(Settings(), "t", "grpc")

    assert (
        "policies_for: kind='grpc' is not accepted; expected one of 'http', 'db', 'llm', 'function'"
    ) == str(info.value)


def test_a_target_table_applies_to_every_kind(layered):
    """Target tables match by name whatever the kind; other kinds keep their own defaults."""
    settings = load_settings({"BUTTRESS_CONFIG": layered})

    policies = policies_for(settings, "api.example.com:443", "db")

    assert (4, 20) == (
        policies.retry.attempts if policies.retry else None,
        policies.bulkhead.max_concurrent if policies.bulkhead else None,
    )


# --- http_options_for ----------------------------------------------------------------------------


def test_http_options_defaults():
    """Without a file, HTTP options retry idempotent methods and the transient statuses."""
    assert (
        frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}),
        frozenset({408, 429, 500, 502, 503, 504}),
        False,
        "Idempotency-Key",
    ) == (
        http_options_for(Settings(), "a:443").retry_methods,
        http_options_for(Settings(), "a:443").retry_statuses,
        http_options_for(Settings(), "a:443").retry_non_idempotent,
        http_options_for(Settings(), "a:443").idempotency_header,
    )


def test_http_options_layers(tmp_path):
    """Target tables override [defaults.http], which overrides the built-in options."""
    path = write(
        tmp_path,
        """
[defaults.http]
http.retry_statuses = [503]
http.idempotency_header = "X-Request-Id"

[targets."pay.example.com:443"]
http.retry_non_idempotent = true
http.retry_methods = ["get"]
""",
    )
    settings = load_settings({"BUTTRESS_CONFIG": path})

    assert (
        HttpOptions(retry_statuses=frozenset({503}), idempotency_header="X-Request-Id"),
        HttpOptions(
            retry_methods=frozenset({"GET"}),
            retry_statuses=frozenset({503}),
            retry_non_idempotent=True,
            idempotency_header="X-Request-Id",
        ),
    ) == (
        http_options_for(settings, "other:443"),
        http_options_for(settings, "pay.example.com:443"),
    )


# --- db_options_for ------------------------------------------------------------------------------


def test_db_options_default_to_no_write_retries():
    """Without a file, database writes are never retried."""
    assert DbOptions(retry_writes=False) == db_options_for(Settings(), "redis:127.0.0.1:6379/0")


def test_db_options_layers(tmp_path):
    """The best target table overrides [defaults.db], which overrides the built-in options."""
    path = write(
        tmp_path,
        """
[defaults.db]
db.retry_writes = true

[targets."redis:cache:6379/*"]
db.retry_writes = false

[targets."redis:*"]
retry.attempts = 2
""",
    )
    settings = load_settings({"BUTTRESS_CONFIG": path})
    assert (True, False, True) == (
        db_options_for(settings, "redis:127.0.0.1:6379/0").retry_writes,
        db_options_for(settings, "redis:cache:6379/0").retry_writes,
        db_options_for(settings, "postgresql:127.0.0.1:5432/app").retry_writes,
    )


@pytest.mark.parametrize(
    "variable",
    ["BUTTRESS_ENABLED", "BUTTRESS_MODE", "BUTTRESS_RETRY_ATTEMPTS", "BUTTRESS_TIMEOUT_TOTAL"],
)
@pytest.mark.parametrize(
    "secret",
    ["Bearer sk-live-4f9a8b7c6d5e4f3a2b1c", "password hunter2", "https://u:p4ss@example.com/"],
)
def test_secrets_inside_a_value_are_not_echoed(variable, secret):
    """A value holding a credential among other words is shown by its length only."""
    message = error_of({variable: secret})

    assert secret not in message
    assert message.startswith(f"{variable}=<{len(secret)} characters, not shown>")


@pytest.mark.parametrize(
    "secret", ["Bearer sk-live-4f9a8b7c6d5e4f3a2b1c", "8081 ghp_4f9a8b7c6d5e4f3a2b1c"]
)
def test_bad_health_port_hides_a_secret_like_the_other_variables(secret):
    """BUTTRESS_HEALTH_PORT echoed such values in full (issue 14)."""
    with pytest.raises(ConfigurationError) as info:
        read_health_port({"BUTTRESS_HEALTH_PORT": secret})

    assert str(info.value).startswith(f"BUTTRESS_HEALTH_PORT=<{len(secret)} characters, not shown>")


@pytest.mark.parametrize(
    ("raw", "shown"),
    [("9" * 5000, "<5000 characters, not shown>"), ("1000000001", "'1000000001'")],
)
def test_counts_from_the_environment_stop_at_the_ceiling(raw, shown):
    """Beyond 10**9 (or past Python's 4300-digit int limit) a count is refused by name."""
    message = error_of({"BUTTRESS_BULKHEAD_MAX_CONCURRENT": raw})

    assert message.startswith(f"BUTTRESS_BULKHEAD_MAX_CONCURRENT={shown} is not accepted")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[defaults.http]\nretry.backoff = []\n",
            "defaults.http.retry.backoff = [] is not accepted",
        ),
        ('[targets."a"]\nretry.backoff = {}\n', "targets.a.retry.backoff = {} is not accepted"),
        ("[defaults.db]\nbulkhead.max_concurrent = 9223372036854775807\n", "max_concurrent="),
        (
            "[defaults.llm]\nllm.tokens_per_minute = inf\n",
            "tokens_per_minute = inf is out of range",
        ),
        ("a = " + "[" * 3000 + "]" * 3000 + "\n", "invalid TOML: arrays or inline tables nested"),
    ],
)
def test_file_values_that_crashed_are_configuration_errors(tmp_path, text, expected):
    """retry.backoff = [] raised TypeError: unhashable type (issue 14); now it names the key."""
    path = write(tmp_path, text)

    message = error_of({"BUTTRESS_CONFIG": path})

    assert expected in message
    assert message.startswith((f"BUTTRESS_CONFIG: {path}", path))

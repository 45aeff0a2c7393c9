# House style writes assertions as `expected == actual`; ruff's SIM300 calls that Yoda style.
# ruff: noqa: SIM300

"""Tests for the TOML configuration file: parsing, key checks, layering and target matching."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from buttress import templates
from buttress._config_file import (
    FUNCTION_RETRY_ON,
    POLICIES,
    ConfigFile,
    DbOptions,
    HttpOptions,
    load_config_file,
    parse_config,
    settable_keys,
)
from buttress._exceptions import ConfigurationError
from buttress._settings import Settings, check_settings, load_settings, policies_for
from buttress.policies._backoff import constant, decorrelated, exponential
from buttress.policies._cache import Cache
from buttress.policies._circuit_breaker import CircuitBreaker
from buttress.policies._rate_limit import RateLimit
from buttress.policies._retry_budget import RetryBudget
from buttress.policies._timeout import Timeout

DOCS = Path(__file__).parent.parent / "docs" / "configuration.md"


def parse(text: str) -> ConfigFile:
    """Parse TOML *text* as the file b.toml."""
    return parse_config(tomllib.loads(text), "b.toml")


def settings_of(text: str) -> Settings:
    """Settings holding the file *text*, checked as load_settings checks it."""
    settings = Settings(file=parse(text))
    check_settings(settings)
    return settings


def error_of(text: str) -> str:
    """The ConfigurationError message that loading the file *text* raises."""
    with pytest.raises(ConfigurationError) as info:
        settings_of(text)
    return str(info.value)


def documented_example() -> str:
    """The complete example of docs/configuration.md (its first toml block)."""
    match = re.search(r"```toml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert match is not None
    return match.group(1)


# --- the documented example ----------------------------------------------------------------------


def test_documented_example_loads(tmp_path):
    """The complete example in the docs loads through BUTTRESS_CONFIG."""
    path = tmp_path / "buttress.toml"
    path.write_text(documented_example(), encoding="utf-8")

    settings = load_settings({"BUTTRESS_CONFIG": str(path)})

    assert (
        ["db", "function", "http", "llm"],
        ['targets."*.internal:*"', 'targets."api.example.com:443"', "targets.orders-db"],
    ) == (
        sorted(settings.file.defaults) if settings.file else [],
        [s.name for s in settings.file.targets] if settings.file else [],
    )


def test_documented_example_values():
    """Every key of the example reaches its policy with the value written."""
    policies = policies_for(settings_of(documented_example()), "any.example.org:443", "http")
    retry = policies.retry

    assert retry is not None
    assert (
        3,
        20.0,
        60.0,
        "reraise",
        exponential(initial=0.2, max=10.0, multiplier=2.0, jitter="full"),
        RetryBudget(ratio=0.2, min_per_second=3.0, window=10, drop_floor_after=3),
        Timeout(attempt=10.0, total=30.0, respect_app_timeout=False),
        RateLimit(rate=10.0, burst=None, max_wait=0.0),
        Cache(ttl=60.0, max_entries=1024, dedup=True),
    ) == (
        retry.attempts,
        retry.deadline,
        retry.max_retry_after,
        retry.budget_exhausted,
        retry.backoff,
        retry.budget,
        policies.timeout,
        policies.rate_limit,
        policies.cache,
    )
    assert (
        dataclasses.replace(
            templates.http().breaker or CircuitBreaker(),
            failure_rate_threshold=0.5,
            slow_call_rate_threshold=1.0,
            slow_call_duration=60.0,
            window="count",
            window_size=100,
            minimum_calls=20,
            consecutive_failures=5,
            open_duration=30.0,
            open_duration_multiplier=1.0,
            max_open_duration=300.0,
            half_open_calls=5,
            observe=False,
        )
        == policies.breaker
    )


@pytest.mark.parametrize("policy", POLICIES)
def test_every_settable_key_is_documented(policy):
    """docs/configuration.md names every key a file may set."""
    docs = DOCS.read_text(encoding="utf-8")

    assert [] == [key for key in settable_keys(policy) if f"`{key}`" not in docs]


def test_settable_keys_are_the_plain_parameters():
    """Plain parameters are settable; callables and objects are not."""
    assert (
        (
            "attempts",
            "backoff",
            "backoff_initial",
            "backoff_max",
            "backoff_multiplier",
            "budget",
            "budget_exhausted",
            "deadline",
            "jitter",
            "max_retry_after",
        ),
        ("dedup", "max_entries", "ttl"),
        (),
    ) == (settable_keys("retry"), settable_keys("cache"), settable_keys("fallback"))


# --- layering ---------------------------------------------------------------------------------------


def test_policy_removal_with_false():
    """`policy = false` removes that policy from the template."""
    settings = settings_of("[defaults.http]\nbreaker = false\nbulkhead = false\n")

    policies = policies_for(settings, "a:443", "http")

    assert (None, None, templates.http().retry) == (
        policies.breaker,
        policies.bulkhead,
        policies.retry,
    )


def test_true_restores_a_removed_policy():
    """`policy = true` in a target table brings back the template's policy removed below."""
    settings = settings_of('[defaults.db]\nbreaker = false\n[targets."orders"]\nbreaker = true\n')

    assert (None, templates.database().breaker) == (
        policies_for(settings, "users", "db").breaker,
        policies_for(settings, "orders", "db").breaker,
    )


def test_setting_a_removed_policy_adds_it_back():
    """Parameters on a policy removed below add it back, from the template."""
    settings = settings_of(
        '[defaults.http]\nretry = false\n[targets."a:443"]\nretry.attempts = 2\n'
    )

    assert dataclasses.replace(templates.http().retry, attempts=2) == (  # type: ignore[type-var]
        policies_for(settings, "a:443", "http").retry
    )


def test_a_table_adds_a_policy_the_template_lacks():
    """rate_limit and cache tables add those policies, which no template has."""
    settings = settings_of("[defaults.db]\nrate_limit.rate = 5.0\ncache.ttl = 2.0\n")

    policies = policies_for(settings, "orders", "db")

    assert (RateLimit(rate=5.0), Cache(ttl=2.0)) == (policies.rate_limit, policies.cache)


def test_function_retry_retries_connection_errors_and_timeouts():
    """A retry added for kind function retries connection errors and timeouts only."""
    settings = settings_of("[defaults.function]\nretry.attempts = 4\n")

    retry = policies_for(settings, "job", "function").retry

    assert ((ConnectionError, TimeoutError), 4) == (
        retry.on if retry else None,
        retry.attempts if retry else None,
    )
    assert (ConnectionError, TimeoutError) == FUNCTION_RETRY_ON


def test_none_string_sets_none():
    """ "none" sets a parameter that accepts None to None."""
    settings = settings_of(
        '[targets."a:443"]\ntimeout.total = "none"\nrate_limit.burst = "NONE"\n'
        'retry.deadline = "none"\n'
    )

    policies = policies_for(settings, "a:443", "http")

    assert (Timeout(attempt=10.0, total=None, respect_app_timeout=False), None, None) == (
        policies.timeout,
        policies.rate_limit.burst if policies.rate_limit else "missing",
        policies.retry.deadline if policies.retry else "missing",
    )


def test_backoff_keys_adjust_the_current_schedule():
    """Without retry.backoff, back-off keys adjust the template's schedule."""
    settings = settings_of("[defaults.llm]\nretry.backoff_max = 5.0\nretry.jitter = 'equal'\n")

    retry = policies_for(settings, "openai", "llm").retry

    assert exponential(initial=0.5, max=5.0, jitter="equal") == (retry.backoff if retry else None)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('retry.backoff = "constant"', constant()),
        ('retry.backoff = "constant"\nretry.backoff_initial = 0.5', constant(0.5)),
        ('retry.backoff = "constant"\nretry.jitter = "full"', constant(jitter="full")),
        ('retry.backoff = "decorrelated"', decorrelated()),
        (
            'retry.backoff = "decorrelated"\nretry.backoff_initial = 1\nretry.backoff_max = 4',
            decorrelated(initial=1.0, max=4.0),
        ),
        ('retry.backoff = "exponential"', exponential()),
        ('retry.backoff = "exponential"\nretry.backoff_multiplier = 3', exponential(multiplier=3)),
    ],
)
def test_backoff_shape_starts_from_its_defaults(table, expected):
    """retry.backoff picks a shape with its defaults; keys of the same table adjust it."""
    retry = policies_for(settings_of(f"[defaults.http]\n{table}\n"), "a:443", "http").retry

    assert expected == (retry.backoff if retry else None)


def test_retry_budget_false_removes_the_budget():
    """retry.budget = false removes the retry budget."""
    retry = policies_for(settings_of("[defaults.http]\nretry.budget = false\n"), "a", "http").retry

    assert None is (retry.budget if retry else "missing")


def test_retry_budget_table_adjusts_the_budget():
    """retry.budget.* keys change the budget's parameters, keeping the others."""
    retry = policies_for(
        settings_of("[defaults.http]\nretry.budget.window = 30\n"), "a", "http"
    ).retry

    assert RetryBudget(window=30, drop_floor_after=3) == (retry.budget if retry else None)


def test_sub_tables_mean_the_same_as_dotted_keys():
    """[defaults.http.retry] is the same as retry.* keys in [defaults.http]."""
    dotted = settings_of("[defaults.http]\nretry.attempts = 2\nretry.budget.ratio = 0.1\n")
    nested = settings_of(
        "[defaults.http.retry]\nattempts = 2\n[defaults.http.retry.budget]\nratio = 0.1\n"
    )

    assert policies_for(dotted, "a", "http") == policies_for(nested, "a", "http")


# --- target matching -------------------------------------------------------------------------------


MATCHING = """
[targets."*"]
retry.attempts = 2
[targets."*.internal:*"]
retry.attempts = 3
[targets."db?.internal:*"]
retry.attempts = 4
[targets."api.internal:443"]
retry.attempts = 5
[targets."*.example:*"]
retry.attempts = 6
[targets."*.exampl?:*"]
retry.attempts = 7
[targets."[::1]:8080"]
retry.attempts = 8
"""


@pytest.mark.parametrize(
    ("target", "attempts"),
    [
        ("anything", 2),
        ("cache.internal:6379", 3),
        ("db1.internal:5432", 4),
        ("api.internal:443", 5),
        ("shop.example:80", 6),
        ("API.INTERNAL:443", 2),
        ("[::1]:8080", 8),
    ],
)
def test_glob_matching(target, attempts):
    """Exact names beat globs, longer globs beat shorter ones, file order breaks ties."""
    retry = policies_for(settings_of(MATCHING), target, "http").retry

    assert attempts == (retry.attempts if retry else None)


def test_no_matching_table():
    """A target no table matches gets the defaults."""
    settings = settings_of('[targets."a:443"]\nretry.attempts = 9\n')

    assert None is (settings.file.section_for("b:443") if settings.file else "no file")


# --- unknown keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[targets."api.example.com:443"]\nretry.atempts = 5\n',
            (
                'b.toml: unknown key targets."api.example.com:443".retry.atempts; accepted keys in '
                'targets."api.example.com:443".retry: attempts, backoff, backoff_initial, '
                "backoff_max, backoff_multiplier, budget, budget_exhausted, deadline, jitter, "
                "max_retry_after"
            ),
        ),
        (
            "color = 1\n",
            "b.toml: unknown key color; accepted keys in the top level: defaults, targets",
        ),
        (
            "[defaults.grpc]\nretry = false\n",
            "b.toml: unknown key defaults.grpc; accepted keys in defaults: http, db, llm, function",
        ),
        (
            "[defaults.http]\nretries.attempts = 2\n",
            (
                "b.toml: unknown key defaults.http.retries; accepted keys in defaults.http: retry, "
                "breaker, timeout, bulkhead, rate_limit, cache, fallback, http"
            ),
        ),
        (
            "[defaults.db]\nhttp.retry_statuses = [503]\n",
            (
                "b.toml: unknown key defaults.db.http; accepted keys in defaults.db: retry, breaker, "
                "timeout, bulkhead, rate_limit, cache, fallback, db"
            ),
        ),
        (
            "[defaults.http]\nretry.on = 'ValueError'\n",
            (
                "b.toml: unknown key defaults.http.retry.on; accepted keys in defaults.http.retry: "
                "attempts, backoff, backoff_initial, backoff_max, backoff_multiplier, budget, "
                "budget_exhausted, deadline, jitter, max_retry_after"
            ),
        ),
        (
            "[defaults.http]\nretry.budget.windw = 2\n",
            (
                "b.toml: unknown key defaults.http.retry.budget.windw; accepted keys in "
                "defaults.http.retry.budget: ratio, min_per_second, window, drop_floor_after"
            ),
        ),
        (
            "[defaults.http]\nhttp.retry_method = ['GET']\n",
            (
                "b.toml: unknown key defaults.http.http.retry_method; accepted keys in "
                "defaults.http.http: retry_methods, retry_statuses, retry_non_idempotent, "
                "idempotency_header, open_breaker"
            ),
        ),
        (
            "[defaults.http]\nfallback.value = 1\n",
            (
                "b.toml: unknown key defaults.http.fallback.value; accepted keys in "
                "defaults.http.fallback: none"
            ),
        ),
    ],
)
def test_unknown_key_names_file_path_and_accepted_keys(text, expected):
    """An unknown key is named with its full path and the keys its table accepts."""
    assert expected == error_of(text)


# --- bad values --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[targets."api.example.com:443"]\nretry.attempts = 0\n',
            (
                'b.toml: targets."api.example.com:443".retry.attempts: Retry: attempts=0 is out of '
                "range; expected an integer >= 1 or None"
            ),
        ),
        (
            "[defaults.http]\ntimeout.attempt = 'fast'\n",
            (
                "b.toml: defaults.http.timeout.attempt: Timeout: attempt='fast' is not accepted; "
                "expected a number > 0 or None"
            ),
        ),
        (
            "[defaults.db]\nbreaker.window = 'sliding'\n",
            (
                "b.toml: defaults.db.breaker.window: CircuitBreaker: window='sliding' is not "
                "accepted; expected one of 'count', 'time'"
            ),
        ),
        (
            "[defaults.http]\nbulkhead.max_concurrent = 2.5\n",
            (
                "b.toml: defaults.http.bulkhead.max_concurrent: Bulkhead: max_concurrent=2.5 is not "
                "accepted; expected an integer >= 1"
            ),
        ),
        (
            "[defaults.http]\nretry.budget.ratio = 2\n",
            (
                "b.toml: defaults.http.retry.budget.ratio: RetryBudget: ratio=2 is out of range; "
                "expected a number >= 0 and <= 1"
            ),
        ),
        (
            "[defaults.http]\nretry.jitter = 'fulll'\n",
            (
                "b.toml: defaults.http.retry.jitter: exponential: jitter='fulll' is not accepted; "
                "expected one of 'full', 'equal', 'none'"
            ),
        ),
        (
            "[defaults.http]\nretry.backoff = 'fibonacci'\n",
            (
                "b.toml: defaults.http.retry.backoff = 'fibonacci' is not accepted; expected one of "
                "'exponential', 'constant', 'decorrelated'"
            ),
        ),
        (
            "[defaults.http]\nretry.backoff = 'constant'\nretry.backoff_max = 3\n",
            (
                "b.toml: defaults.http.retry.backoff_max: backoff_max does not apply to constant "
                "back-off; accepted with constant: backoff, backoff_initial, jitter"
            ),
        ),
        (
            "[defaults.http]\nretry.backoff_initial = 50\n",
            (
                "b.toml: defaults.http.retry.backoff_initial: exponential: max=8.0 is out of range; "
                "expected a number >= 50 (initial=50)"
            ),
        ),
        (
            "[defaults.http]\nretry = 3\n",
            (
                "b.toml: defaults.http.retry = 3 is not accepted; expected a table of retry "
                "settings, true (keep or add it) or false (remove it)"
            ),
        ),
        (
            "[defaults.http]\nfallback = true\n",
            (
                "b.toml: defaults.http.fallback = true is not accepted; expected false (a fallback "
                "is configured in code, a file can only remove it)"
            ),
        ),
        (
            "[defaults.http]\nhttp.retry_statuses = [200, 600]\n",
            (
                "b.toml: defaults.http.http.retry_statuses: HttpOptions: retry_statuses contains "
                "600, which is not accepted; expected HTTP status codes (integers 100 to 599)"
            ),
        ),
        (
            "[defaults.http]\nhttp.retry_methods = 'GET'\n",
            (
                "b.toml: defaults.http.http.retry_methods: HttpOptions: retry_methods='GET' is not "
                "accepted; expected a list of HTTP methods such as ['GET', 'PUT']"
            ),
        ),
        (
            '[targets."a"]\nhttp.idempotency_header = "Bad Header"\n',
            (
                "b.toml: targets.a.http.idempotency_header: HttpOptions: idempotency_header="
                "'Bad Header' is not accepted; expected a header name such as 'Idempotency-Key'"
            ),
        ),
        (
            '[targets.""]\nretry = false\n',
            (
                'b.toml: targets."": an empty target pattern is not accepted; expected a target name '
                'such as "api.example.com:443" or a glob'
            ),
        ),
        (
            "targets = 3\n",
            "b.toml: targets = 3 is not accepted; expected a table",
        ),
    ],
)
def test_bad_value_names_file_and_key_path(text, expected):
    """A bad value is reported with the file and key path, then the policy's own message."""
    assert expected == error_of(text)


def test_kind_specific_errors_name_the_kind():
    """A value valid alone but not with a kind's defaults says which kind it was applied to."""
    message = error_of(
        '[defaults.db]\nretry.backoff = "constant"\n[targets."a"]\nretry.backoff_multiplier = 3\n'
    )

    assert (
        "b.toml: targets.a.retry.backoff_multiplier: backoff_multiplier does not apply to "
        "constant back-off; accepted with constant: backoff, backoff_initial, jitter "
        "(applied to a target of kind 'db')"
    ) == message


def test_errors_valid_for_every_kind_do_not_name_one():
    """A value that is wrong whatever the kind carries no kind in its message."""
    message = error_of('[targets."a"]\nbreaker.open_duration = 400\n')

    assert (
        "b.toml: targets.a.breaker.open_duration: CircuitBreaker: max_open_duration=300.0 is out "
        "of range; expected a number >= 400 (open_duration=400.0)"
    ) == message


def test_a_key_that_fails_alone_is_blamed():
    """When one key fails on its own, the message names that key."""
    message = error_of("[defaults.http]\nretry.attempts = 'none'\nretry.max_retry_after = 5\n")

    assert (
        "b.toml: defaults.http.retry.attempts: Retry: attempts=None with deadline=None would "
        "retry forever; set attempts (>= 1) or a deadline in seconds"
    ) == message


def test_combined_errors_name_the_table():
    """When only keys together are wrong, the message names their table."""
    message = error_of(
        "[defaults.http]\nbreaker.open_duration = 200\nbreaker.max_open_duration = 100\n"
    )

    assert (
        "b.toml: defaults.http.breaker: CircuitBreaker: max_open_duration=100 is out of range; "
        "expected a number >= 200 (open_duration=200.0)"
    ) == message


def test_http_options_validate_on_construction():
    """HttpOptions normalises methods to upper case and lists to frozensets."""
    options = HttpOptions(retry_methods=["get", "Post"], retry_statuses=[503])  # type: ignore[arg-type]

    assert (frozenset({"GET", "POST"}), frozenset({503})) == (
        options.retry_methods,
        options.retry_statuses,
    )


# --- reading the file ---------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    """A missing file is reported with its path and the reason."""
    path = tmp_path / "nope.toml"

    with pytest.raises(ConfigurationError) as info:
        load_config_file(path)

    assert f"{path}: cannot read the configuration file: No such file or directory" == str(
        info.value
    )


def test_unreadable_file(tmp_path):
    """A path that cannot be read as a file is reported with the reason."""
    with pytest.raises(ConfigurationError) as info:
        load_config_file(tmp_path)

    assert f"{tmp_path}: cannot read the configuration file: Is a directory" == str(info.value)


def test_invalid_toml_gives_line_and_column(tmp_path):
    """A syntax error is reported with tomllib's line and column."""
    path = tmp_path / "bad.toml"
    path.write_text("[defaults.http]\nretry.attempts = 3\nretry attempts = 4\n", encoding="utf-8")

    with pytest.raises(ConfigurationError) as info:
        load_config_file(path)

    assert (
        f"{path}: invalid TOML: Expected '=' after a key in a key/value pair (at line 3, column 7)"
    ) == str(info.value)


def test_non_utf8_file(tmp_path):
    """A file that is not UTF-8 is reported as such, with the byte offset."""
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[targets."caf\xe9"]\n')

    with pytest.raises(ConfigurationError) as info:
        load_config_file(path)

    assert f"{path}: invalid TOML: the file is not UTF-8 (byte 13: invalid continuation byte)" == (
        str(info.value)
    )


def test_empty_file_is_valid(tmp_path):
    """An empty file is valid and changes nothing."""
    path = tmp_path / "empty.toml"
    path.write_text("", encoding="utf-8")

    assert ConfigFile(path=str(path), defaults={}, targets=()) == load_config_file(path)


# --- db options ------------------------------------------------------------------------------------


def test_db_options_are_parsed_in_defaults_db_and_target_tables():
    """db.retry_writes is read from [defaults.db] and target tables, nowhere else."""
    config = parse(
        '[defaults.db]\ndb.retry_writes = true\n[targets."redis:*"]\ndb.retry_writes = false\n'
    )
    assert {"retry_writes": True} == config.defaults["db"].db
    assert {"retry_writes": False} == config.targets[0].db
    assert {} == parse("[defaults.db]\nretry = false\n").defaults["db"].db
    assert DbOptions() == DbOptions(retry_writes=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[defaults.db]\ndb.retry_writes = 'yes'\n",
            (
                "b.toml: defaults.db.db.retry_writes: DbOptions: retry_writes='yes' is not "
                "accepted; expected true or false"
            ),
        ),
        (
            '[targets."redis:*"]\ndb.retry_writes = 1\n',
            (
                'b.toml: targets."redis:*".db.retry_writes: DbOptions: retry_writes=1 is not '
                "accepted; expected true or false"
            ),
        ),
        (
            "[defaults.db]\ndb.retry_write = true\n",
            (
                "b.toml: unknown key defaults.db.db.retry_write; accepted keys in defaults.db.db: "
                "retry_writes"
            ),
        ),
        (
            "[defaults.db]\ndb = true\n",
            "b.toml: defaults.db.db = True is not accepted; expected a table",
        ),
        (
            "[defaults.http]\ndb.retry_writes = true\n",
            (
                "b.toml: unknown key defaults.http.db; accepted keys in defaults.http: retry, "
                "breaker, timeout, bulkhead, rate_limit, cache, fallback, http"
            ),
        ),
    ],
)
def test_bad_db_options_name_file_path_value_and_accepted(text, expected):
    """A bad db.* key or value is named with the file, its key path and what is accepted."""
    assert expected == error_of(text)

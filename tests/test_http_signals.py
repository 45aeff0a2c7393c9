# House style writes assertions as `expected == actual`; ruff's SIM300 calls that Yoda style.
# ruff: noqa: SIM300

"""Tests for reading HTTP status codes and Retry-After from any client's objects."""

from __future__ import annotations

import calendar
import email.utils
import os
import time
from http import HTTPStatus

import pytest
from hypothesis import given
from hypothesis import strategies as st

import buttress
from buttress._http_signals import (
    LLM_TRANSIENT_STATUSES,
    TRANSIENT_STATUSES,
    is_transient,
    is_transient_llm,
    parse_retry_after,
    server_delay,
    status_of,
)

# 1994-11-06 08:49:37 UTC, the example date of RFC 9110.
RFC_DATE = calendar.timegm((1994, 11, 6, 8, 49, 37))


# --- fakes shaped like the client libraries' objects -----------------------------------------


class CaseInsensitiveHeaders:
    """Headers like requests' CaseInsensitiveDict or httpx.Headers: get() ignores case."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = {k.lower(): v for k, v in values.items()}

    def get(self, name, default=None):
        return self._values.get(name.lower(), default)


class Response:
    """A requests/httpx-shaped response: status_code and headers."""

    def __init__(self, status_code=200, headers=None) -> None:
        self.status_code = status_code
        self.headers = CaseInsensitiveHeaders(headers or {})


class AiohttpResponse:
    """An aiohttp-shaped response: status instead of status_code."""

    def __init__(self, status, headers=None) -> None:
        self.status = status
        self.headers = headers or {}


class HTTPError(Exception):
    """A requests.HTTPError / httpx.HTTPStatusError-shaped exception carrying a response."""

    def __init__(self, response) -> None:
        super().__init__("http error")
        self.response = response


class APIStatusError(Exception):
    """An OpenAI/Anthropic SDK-shaped error: status_code on the exception, headers on response."""

    def __init__(self, status_code, headers=None) -> None:
        super().__init__("api error")
        self.status_code = status_code
        self.response = Response(status_code, headers)


class ClientResponseError(Exception):
    """An aiohttp-shaped ClientResponseError: status and headers on the exception."""

    def __init__(self, status, headers=None) -> None:
        super().__init__("client response error")
        self.status = status
        self.headers = headers


class ConnectTimeout(Exception):
    """Named like httpx.ConnectTimeout."""


class ReadTimeout(Exception):
    """Named like httpx.ReadTimeout."""


class ConnectError(Exception):
    """Named like httpx.ConnectError."""


class ClientConnectorError(ConnectError):
    """A subclass of a transport error: matched through the MRO."""


class APIConnectionError(Exception):
    """Named like openai.APIConnectionError."""


class RemoteProtocolError(Exception):
    """Named like httpx.RemoteProtocolError."""


class ProtocolError(Exception):
    """Named like urllib3.exceptions.ProtocolError."""


class ConnectTimeoutWithStatus(Exception):
    """A transport-named error that nevertheless carries a non-transient status."""

    status_code = 404


# --- status_of -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (Response(503), 503),
        (AiohttpResponse(429), 429),
        (HTTPError(Response(502)), 502),
        (HTTPError(AiohttpResponse(504)), 504),
        (APIStatusError(529), 529),
        (ClientResponseError(408), 408),
        (Response(HTTPStatus.SERVICE_UNAVAILABLE), 503),
        (Response(100), 100),
        (Response(599), 599),
    ],
)
def test_status_of_finds_the_status_wherever_clients_put_it(outcome, expected):
    """The status comes from status_code or status, on the outcome or on its response."""
    assert expected == status_of(outcome)


@pytest.mark.parametrize(
    "outcome",
    [
        None,
        42,
        "503",
        ValueError("no status"),
        Response(None),
        Response("503"),
        Response(99),
        Response(600),
        Response(0),
        Response(True),
        Response(503.0),
        HTTPError(None),
        HTTPError(object()),
    ],
)
def test_status_of_is_none_without_a_valid_status(outcome):
    """Missing, non-integer, boolean and out-of-range statuses are ignored."""
    assert status_of(outcome) is None


def test_status_of_prefers_the_outcome_over_its_response():
    """An exception's own status wins over the status of its response."""
    error = APIStatusError(429)
    error.response = Response(500)

    assert 429 == status_of(error)


def test_status_of_falls_back_to_the_response_when_the_outcome_status_is_invalid():
    """An invalid status on the outcome does not hide a valid one on its response."""
    error = HTTPError(Response(503))
    error.status_code = "n/a"

    assert 503 == status_of(error)


# --- parse_retry_after -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0.0), ("5", 5.0), (" 120 ", 120.0), ("1.5", 1.5), ("86400", 86400.0)],
)
def test_parse_retry_after_reads_delta_seconds(value, expected):
    """Delta-seconds are returned as a float."""
    assert expected == parse_retry_after(value)


@pytest.mark.parametrize(
    ("value", "now", "expected"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", RFC_DATE - 30, 30.0),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:49:37 GMT", RFC_DATE - 30, 30.0),  # obsolete RFC 850
        ("Sun, 06 Nov 1994 08:49:37 +0000", RFC_DATE - 0.5, 0.5),
        ("Sun, 06 Nov 1994 09:49:37 +0100", RFC_DATE - 10, 10.0),
        ("Sun, 06 Nov 1994 08:49:37 GMT", RFC_DATE + 3600, 0.0),  # in the past: no wait
    ],
)
def test_parse_retry_after_reads_http_dates(value, now, expected):
    """An HTTP date becomes the seconds from now until then, never negative."""
    assert expected == parse_retry_after(value, now=lambda: now)


def test_parse_retry_after_reads_asctime_dates_as_gmt():
    """An asctime HTTP date is GMT (RFC 9110 5.6.7), whatever the host's local time zone."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "JST-9"  # POSIX form: UTC+9 without tzdata
    time.tzset()
    try:
        delay = parse_retry_after("Sun Nov  6 08:49:37 1994", now=lambda: RFC_DATE - 30)
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()

    assert 30.0 == delay


@pytest.mark.parametrize(
    "value",
    ["", "soon", "-1", "-0.5", "nan", "NaN", "5 seconds", "Sun, 99 Foo 1994 99:99:99 GMT"],
)
def test_parse_retry_after_rejects_garbage(value):
    """Anything that is neither non-negative seconds nor a date yields None."""
    assert parse_retry_after(value, now=lambda: RFC_DATE) is None


@pytest.mark.parametrize("value", ["inf", "Infinity", "-inf", "1e999"])
def test_parse_retry_after_rejects_infinite_delays(value):
    """A non-finite Retry-After is garbage like NaN, not a wait of forever."""
    assert parse_retry_after(value, now=lambda: RFC_DATE) is None


@given(st.text(max_size=40))
def test_parse_retry_after_never_raises(value):
    """Whatever a server sends, parsing returns None or a non-negative number."""
    delay = parse_retry_after(value, now=lambda: RFC_DATE)

    assert delay is None or delay >= 0


@given(st.integers(min_value=0, max_value=10**9))
def test_parse_retry_after_round_trips_integer_seconds(seconds):
    """Any integer delta-seconds value is read back exactly."""
    assert float(seconds) == parse_retry_after(str(seconds))


# --- server_delay ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (Response(429, {"Retry-After": "7"}), 7.0),
        (Response(429, {"retry-after": "7"}), 7.0),
        (Response(429, {"retry-after-ms": "250"}), 0.25),
        (Response(429, {"retry-after-ms": "250", "Retry-After": "9"}), 0.25),
        (Response(429, {"retry-after-ms": "soon", "Retry-After": "9"}), 9.0),
        (Response(429, {"retry-after-ms": "-5", "Retry-After": "9"}), 9.0),
        (Response(429, {"retry-after-ms": "0"}), 0.0),
        (HTTPError(Response(503, {"Retry-After": "3"})), 3.0),
        (APIStatusError(429, {"retry-after-ms": "1500"}), 1.5),
        (ClientResponseError(429, {"Retry-After": "2"}), 2.0),
        (AiohttpResponse(503, {"RETRY-AFTER": "4"}), 4.0),  # a plain dict, any case
        (AiohttpResponse(503, {"Retry-After-Ms": "100"}), 0.1),
    ],
)
def test_server_delay_reads_retry_after_ms_then_retry_after(outcome, expected):
    """retry-after-ms wins when valid; otherwise Retry-After; on the outcome or its response."""
    assert expected == pytest.approx(server_delay(outcome))


@pytest.mark.parametrize(
    "outcome",
    [
        None,
        ValueError("no headers"),
        Response(200),
        Response(503, {"Content-Type": "text/plain"}),
        Response(503, {"Retry-After": "later"}),
        HTTPError(None),
        ClientResponseError(503, None),
        AiohttpResponse(503, [("Retry-After", "5")]),  # no get(): not a mapping
    ],
)
def test_server_delay_is_none_without_a_usable_header(outcome):
    """No header, an unparseable one, or no mapping of headers gives None."""
    assert server_delay(outcome) is None


def test_server_delay_survives_broken_headers():
    """A headers object whose get() raises never breaks the caller."""

    class Exploding:
        def get(self, name):
            raise RuntimeError("broken")

    response = Response(503)
    response.headers = Exploding()

    assert server_delay(response) is None


def test_server_delay_reads_an_http_date_against_the_wall_clock():
    """A Retry-After date two minutes ahead gives a delay of about two minutes."""
    when = email.utils.formatdate(time.time() + 120, usegmt=True)

    delay = server_delay(Response(503, {"Retry-After": when}))

    assert 110.0 < delay <= 120.0


def test_server_delay_for_a_past_date_is_zero():
    """A Retry-After date in the past means retry now."""
    delay = server_delay(Response(503, {"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"}))

    assert 0.0 == delay


def test_server_delay_prefers_headers_on_the_outcome():
    """Headers on the exception itself win over its response's."""
    error = HTTPError(Response(503, {"Retry-After": "30"}))
    error.headers = {"Retry-After": "1"}

    assert 1.0 == server_delay(error)


# --- is_transient / is_transient_llm ---------------------------------------------------------


@pytest.mark.parametrize("status", sorted(TRANSIENT_STATUSES))
def test_transient_statuses(status):
    """408, 429, 500, 502, 503 and 504 are transient for HTTP, as responses or errors."""
    assert [True, True, True] == [
        is_transient(Response(status)),
        is_transient(HTTPError(Response(status))),
        is_transient_llm(Response(status)),
    ]


@pytest.mark.parametrize(
    "status", [200, 201, 204, 301, 304, 400, 401, 403, 404, 409, 422, 501, 505, 529]
)
def test_non_transient_statuses_for_http(status):
    """Success, redirects, client errors and 501/505/529 are not retried by the HTTP template."""
    assert [False, False] == [
        is_transient(Response(status)),
        is_transient(HTTPError(Response(status))),
    ]


@pytest.mark.parametrize(
    ("status", "expected"),
    [(409, True), (501, True), (529, True), (599, True), (400, False), (404, False), (200, False)],
)
def test_llm_transient_statuses(status, expected):
    """The LLM SDKs also retry 409 and every 5xx (529: overloaded), but no other 4xx."""
    assert [expected, expected] == [
        is_transient_llm(Response(status)),
        is_transient_llm(APIStatusError(status)),
    ]


def test_llm_statuses_cover_the_http_ones():
    """Everything transient for HTTP is transient for LLM providers too."""
    assert TRANSIENT_STATUSES <= LLM_TRANSIENT_STATUSES


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionError(),
        ConnectionResetError(),
        ConnectionRefusedError(),
        TimeoutError(),
        buttress.TimeoutError("slow", target="svc", timeout=1.0, scope="attempt"),
        ConnectTimeout(),
        ReadTimeout(),
        ConnectError(),
        ClientConnectorError(),
        APIConnectionError(),
        RemoteProtocolError(),
        ProtocolError(),
    ],
)
def test_transport_failures_are_transient(exc):
    """Connection errors and timeouts are transient, by type or by client-library class name."""
    assert [True, True] == [is_transient(exc), is_transient_llm(exc)]


@pytest.mark.parametrize(
    "outcome",
    [
        ValueError("bad input"),
        KeyError("k"),
        RuntimeError("bug"),
        buttress.CircuitOpenError("open", target="svc"),
        buttress.RetryBudgetExhaustedError("spent", target="svc"),
        KeyboardInterrupt(),
        None,
        "Timeout",
        ConnectTimeout,  # the class, not an instance
    ],
)
def test_other_outcomes_are_not_transient(outcome):
    """Bugs, buttress's own rejections and non-exceptions without a status are not transient."""
    assert [False, False] == [is_transient(outcome), is_transient_llm(outcome)]


def test_a_status_wins_over_a_transport_sounding_class_name():
    """When an outcome carries a status, the status alone decides."""
    assert [False, False] == [
        is_transient(ConnectTimeoutWithStatus()),
        is_transient_llm(ConnectTimeoutWithStatus()),
    ]


# --- real httpx objects ----------------------------------------------------------------------


def test_real_httpx_objects():
    """httpx responses, status errors and transport errors are read like the fakes."""
    httpx = pytest.importorskip("httpx", reason="httpx is an optional integration dependency")
    request = httpx.Request("GET", "https://api.example.com/v1")
    response = httpx.Response(503, headers={"Retry-After": "7"}, request=request)
    error = httpx.HTTPStatusError("unavailable", request=request, response=response)

    expected = (503, 503, 7.0, 7.0, True, True, True, False)
    assert expected == (
        status_of(response),
        status_of(error),
        server_delay(response),
        server_delay(error),
        is_transient(error),
        is_transient(httpx.ConnectError("refused", request=request)),
        is_transient(httpx.ReadTimeout("slow", request=request)),
        is_transient(httpx.Response(404, request=request)),
    )


def test_real_httpx_retry_after_ms_header():
    """httpx.Headers are case-insensitive, so retry-after-ms is found in any case."""
    httpx = pytest.importorskip("httpx", reason="httpx is an optional integration dependency")
    response = httpx.Response(429, headers={"Retry-After-Ms": "1500", "Retry-After": "9"})

    assert 1.5 == server_delay(response)

"""An unmodified app: sequential HTTP requests with requests, then one line of what it saw.

    python app_http.py METHOD URL COUNT TIMEOUT [--hold]

TIMEOUT is the app's own ``timeout=`` (seconds, or ``none``). With ``--hold`` the app keeps
running after its result until a line arrives on stdin (a worker that stays up).
"""

import json
import sys
import time

import requests

print("HARM-READY", flush=True)  # imports done: the test starts its clock


def family(exc: BaseException) -> str:
    """The requests exception family the app would catch this with."""
    for name, kind in (
        ("ConnectionError", requests.exceptions.ConnectionError),
        ("Timeout", requests.exceptions.Timeout),
        ("RequestException", requests.exceptions.RequestException),
    ):
        if isinstance(exc, kind):
            return name
    return "other"


def main() -> None:
    method, url, count, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    limit = None if timeout == "none" else float(timeout)
    outcomes: list[str] = []
    families: list[str] = []
    start = time.monotonic()
    for _ in range(count):
        try:
            response = requests.request(
                method, url, data=b"payload" if method == "POST" else None, timeout=limit
            )
        except Exception as exc:
            outcomes.append(f"{type(exc).__module__}.{type(exc).__qualname__}")
            families.append(family(exc))
        else:
            outcomes.append(str(response.status_code))
            families.append("response")
    elapsed = time.monotonic() - start
    result = {
        "outcomes": outcomes,
        "families": families,
        "elapsed": elapsed,
        "buttress_loaded": "buttress" in sys.modules,
    }
    print("HARM-RESULT " + json.dumps(result), flush=True)
    if "--hold" in sys.argv:
        print("HARM-CHECKPOINT " + json.dumps({"at": "hold"}), flush=True)
        sys.stdin.readline()


main()

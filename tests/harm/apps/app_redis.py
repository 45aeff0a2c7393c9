"""An unmodified app: counter writes, a read, and a blocking pop with the app's own timeout.

    python app_redis.py HOST PORT DB KEY_PREFIX BLOCK_SECONDS SOCKET_TIMEOUT

The app chooses its client's ``socket_timeout`` (redis-py 8's default is 5 s) so that a
``BLPOP`` of an empty list with ``timeout=BLOCK_SECONDS`` returns None after that many seconds.
"""

import json
import sys
import time

import redis

print("HARM-READY", flush=True)  # imports done: the test starts its clock


def main() -> None:
    host, port, db, prefix, block, socket_timeout = sys.argv[1:7]
    client = redis.Redis(
        host=host, port=int(port), db=int(db), socket_timeout=float(socket_timeout)
    )
    outcomes: list[str] = []
    start = time.monotonic()
    steps = [
        lambda: client.incr(f"{prefix}:counter"),
        lambda: client.incr(f"{prefix}:counter"),
        lambda: client.incr(f"{prefix}:counter"),
        lambda: client.get(f"{prefix}:counter"),
        lambda: client.blpop([f"{prefix}:empty"], timeout=int(block)),
    ]
    for step in steps:
        try:
            value = step()
        except Exception as exc:
            outcomes.append(f"{type(exc).__module__}.{type(exc).__qualname__}")
        else:
            outcomes.append(value.decode() if isinstance(value, bytes) else repr(value))
    elapsed = time.monotonic() - start
    client.close()
    result = {
        "outcomes": outcomes,
        "elapsed": elapsed,
        "buttress_loaded": "buttress" in sys.modules,
    }
    print("HARM-RESULT " + json.dumps(result), flush=True)


main()

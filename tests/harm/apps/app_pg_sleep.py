"""An unmodified app: one long PostgreSQL statement, inside the driver's default transaction.

    python app_pg_sleep.py DRIVER HOST PORT DBNAME USER SECONDS

DRIVER is ``psycopg`` or ``psycopg2``. The app also reads the session's ``statement_timeout``:
a setting the app did not choose must be what the server's default is.
"""

import importlib
import json
import sys
import time

DRIVER = importlib.import_module(sys.argv[1])  # psycopg or psycopg2, as the app would import it
print("HARM-READY", flush=True)  # imports done: the test starts its clock


def main() -> None:
    host, port, dbname, user, seconds = sys.argv[2:7]
    conn = DRIVER.connect(host=host, port=port, dbname=dbname, user=user)
    cur = conn.cursor()
    cur.execute("SHOW statement_timeout")
    setting = cur.fetchone()[0]
    start = time.monotonic()
    try:
        cur.execute("SELECT pg_sleep(%s)", (float(seconds),))
        cur.fetchone()
    except Exception as exc:
        outcome = f"{type(exc).__module__}.{type(exc).__qualname__}"
    else:
        outcome = "ok"
    elapsed = time.monotonic() - start
    conn.close()
    result = {
        "outcomes": [outcome],
        "statement_timeout": setting,
        "elapsed": elapsed,
        "buttress_loaded": "buttress" in sys.modules,
    }
    print("HARM-RESULT " + json.dumps(result), flush=True)


main()

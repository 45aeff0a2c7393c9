"""An unmodified app: one chat completion through the real openai SDK, default settings.

python app_openai.py BASE_URL
"""

import json
import sys
import time

import openai

print("HARM-READY", flush=True)  # imports done: the test starts its clock


def main() -> None:
    client = openai.OpenAI(base_url=sys.argv[1], api_key="sk-harm-matrix")
    start = time.monotonic()
    try:
        completion = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
        )
    except Exception as exc:
        outcome = f"{type(exc).__module__}.{type(exc).__qualname__}"
    else:
        outcome = "ok" if completion.choices[0].message.content else "empty"
    elapsed = time.monotonic() - start
    result = {
        "outcomes": [outcome],
        "elapsed": elapsed,
        "buttress_loaded": "buttress" in sys.modules,
    }
    print("HARM-RESULT " + json.dumps(result), flush=True)


main()

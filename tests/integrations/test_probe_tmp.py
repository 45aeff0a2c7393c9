import time
from tests.support.fault_server import delay

def test_observe_timeout(activate_buttress, client, fault_server):
    activate_buttress({"timeout.attempt": 0.3, "retry.attempts": 1}, mode="observe")
    fault_server.script("/slow", delay(1.0))
    t = time.monotonic()
    r = client.do("GET", f"{fault_server.url}/slow")
    print(client.name, r.status, time.monotonic() - t)

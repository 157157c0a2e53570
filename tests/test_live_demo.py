"""The README's main command, `vigil demo`, end to end on the local broker (shortened)."""

import subprocess
import sys

import pytest
from kafka import KafkaAdminClient

from tests.kafka_util import BOOTSTRAP, ROOT, broker_reachable, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_live_demo_prints_the_fault_alert_and_cleans_up(tmp_path):
    if not broker_reachable():
        pytest.fail(f"no Kafka broker at {BOOTSTRAP}: run deploy/kafka/broker start (scripts/test does)")
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "vigil", "demo", "--workdir", str(tmp_path), "--bootstrap-servers", BOOTSTRAP,
         "--history", "12h", "--assets", "2", "--fault", "pump-2:cavitation@30s+5m", "--duration", "75",
         "--metrics-addr", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=400, cwd=ROOT, env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    opened = [line for line in proc.stdout.splitlines() if " OPEN " in line]
    assert opened and all("pump-2" in line for line in opened), proc.stdout
    assert "pump-1" not in proc.stdout  # no false alarm on the healthy pump
    assert f"metrics at http://127.0.0.1:{port}/metrics" in proc.stderr
    assert (tmp_path / "models" / "current").is_file()
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    leftovers = [t for t in admin.list_topics() if t.startswith("vigil-demo-")]
    admin.close()
    assert not any(t.split(".")[0] in proc.stderr for t in leftovers)  # its topics were deleted

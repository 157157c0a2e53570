"""The /metrics text (metrics.exposition): the per-asset gauges are written by RowsFamily.text(),
and must read exactly as prometheus_client writes the same series (GaugeMetricFamily)."""

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest

from detector.metrics import Merged, ServiceMetrics, exposition

SENSORS = ("flow", "pressure")
ASSETS = ["pump-1", 'odd "quoted" \\ back\nslash', "pump-3"]
SCORES = np.array([0.5, float("nan"), 2.5e7])
NORMALIZED = np.array([float("inf"), -1e-7, 1.0])
SHARES = np.array([[0.25, 0.75], [1.0, 0.0], [float("-inf"), 123456789.0]])


def filled(registry: CollectorRegistry) -> ServiceMetrics:
    metrics = ServiceMetrics(registry)
    metrics.per_asset.set_sensors(SENSORS)
    metrics.per_asset.update(ASSETS, SCORES, NORMALIZED, np.array([0.0, 1.0, 0.0]), SHARES)
    metrics.readings.inc(7)
    return metrics


def reference(extra: dict[str, str]) -> str:
    """The per-asset families as prometheus_client writes them."""
    keys, values = list(extra), list(extra.values())
    families = []
    for name, doc, column in (("vigil_asset_score", "Latest window score per asset", SCORES),
                              ("vigil_asset_normalized_score",
                               "Latest score / threshold per asset (1.0 = at threshold)", NORMALIZED),
                              ("vigil_asset_alert_open", "1 while the asset has an open alert, else 0",
                               np.array([0.0, 1.0, 0.0]))):
        family = GaugeMetricFamily(name, doc, labels=["asset", *keys])
        for asset, value in zip(ASSETS, column):
            family.add_metric([asset, *values], value)
        families.append(family)
    share = GaugeMetricFamily("vigil_asset_sensor_share", "Share (0..1) of the asset's latest window score from "
                              "each sensor", labels=["asset", "sensor", *keys])
    for asset, row in zip(ASSETS, SHARES):
        for sensor, value in zip(SENSORS, row):
            share.add_metric([asset, sensor, *values], value)
    families.append(share)

    class Families:
        def collect(self):
            return families

    return generate_latest(Families()).decode()


def asset_part(text: str) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(line for line in lines if "vigil_asset_" in line)


def test_the_per_asset_gauges_read_as_prometheus_client_writes_them():
    registry = CollectorRegistry()
    filled(registry)
    text = exposition(registry).decode()
    assert text == generate_latest(registry).decode()  # the rest, and the samples of the per-asset families
    assert asset_part(text) == reference({})
    assert 'asset="odd \\"quoted\\" \\\\ back\\nslash"' in text and "NaN" in text and "+Inf" in text
    assert registry.get_sample_value("vigil_asset_sensor_share", {"asset": "pump-1", "sensor": "pressure"}) == 0.75


def test_merged_routes_add_their_label_to_the_per_asset_gauges():
    one, two = CollectorRegistry(), CollectorRegistry()
    filled(one), filled(two)
    merged = Merged([(one, {"model": "pumps"}, lambda name: True), (two, {"model": "fans"}, lambda name: True)])
    text = exposition(merged).decode()
    assert text == generate_latest(merged).decode()
    pumps, fans = reference({"model": "pumps"}), reference({"model": "fans"})
    for name in ("vigil_asset_score", "vigil_asset_sensor_share"):  # each family: the pumps' series, then the fans'
        part = [line for line in text.splitlines() if line.startswith(name + "{")]
        assert part == [line for line in (pumps + fans).splitlines() if line.startswith(name + "{")]

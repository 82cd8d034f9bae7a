"""Harbor health: overall and per component, from ``/api/v2.0/health`` (no auth needed).

Example exposition::

    regwatch_harbor_healthy{target="harbor"} 1.0
    regwatch_harbor_component_healthy{component="core",target="harbor"} 1.0
    regwatch_harbor_component_healthy{component="trivy",target="harbor"} 0.0

When harbor-core is down its nginx answers 5xx for /health: the group still succeeds and says
``healthy 0`` and ``component_healthy{component="core"} 0``; the other components are unknown
then, so they are left out rather than guessed.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.client import ServerError, Unreachable
from regwatch.collectors.harbor.api import HarborGroup, NotCollected
from regwatch.families import gauge


class HealthGroup(HarborGroup):
    group = "health"
    endpoints = ("/health",)

    def gather(self) -> Iterable[Metric]:
        try:
            health = self.api.obj("/health")
        except NotCollected:
            return []
        except ServerError:
            return self._families(0.0, [("core", 0.0)])
        except Unreachable:
            return self._families(0.0, [])
        components = [(c.text("name"), 1.0 if c.text("status") == "healthy" else 0.0)
                      for c in health.objects("components") if c.text("name")]
        healthy = 1.0 if health.text("status") == "healthy" else 0.0
        return self._families(healthy, components)

    def _families(self, healthy: float, components: list[tuple[str, float]]) -> list[Metric]:
        name = self.target.name
        return [
            gauge("regwatch_harbor_healthy", "1 if Harbor's /health says every component is healthy (cached).",
                  ["target"], [([name], healthy)]),
            gauge("regwatch_harbor_component_healthy",
                  "1 if Harbor's /health reports the component healthy; core is 0 when harbor-core does not answer "
                  "(cached).",
                  ["target", "component"], [([name, c], v) for c, v in components]),
        ]

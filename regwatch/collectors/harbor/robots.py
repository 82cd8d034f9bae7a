"""Harbor robot accounts: expiry and state, so an alert fires before a CI robot's secret runs out.

Example exposition::

    regwatch_harbor_robot_expiry_timestamp_seconds{robot="robot$ci",target="harbor"} 1.7e+09
    regwatch_harbor_robot_disabled{robot="robot$ci",target="harbor"} 0.0
    regwatch_harbor_robots{target="harbor"} 12.0

A robot that never expires (``expires_at`` -1) has no expiry series. The robot's secret,
which the API may include, is never read.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from regwatch.collectors.harbor.api import HarborGroup, NotCollected
from regwatch.families import gauge


class RobotsGroup(HarborGroup):
    group = "robots"
    endpoints = ("/robots",)

    def gather(self) -> Iterable[Metric]:
        name = self.target.name
        expiry, disabled, count = [], [], 0
        try:
            for page in self.api.pages("/robots"):
                for robot in page:
                    count += 1
                    label = [name, robot.text("name")]
                    disabled.append((label, 1.0 if robot.flag("disable") else 0.0))
                    expires = robot.integer("expires_at")
                    if expires is not None and expires > 0:
                        expiry.append((label, float(expires)))
        except NotCollected:
            return
        yield gauge("regwatch_harbor_robots", "Robot accounts the account can see.", ["target"], [([name], count)])
        yield gauge("regwatch_harbor_robot_expiry_timestamp_seconds",
                    "When the robot account expires; absent for robots that never expire.",
                    ["target", "robot"], expiry)
        yield gauge("regwatch_harbor_robot_disabled", "1 if the robot account is disabled.",
                    ["target", "robot"], disabled)

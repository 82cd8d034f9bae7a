"""Generators for what regwatch ships beside the exporter: alert rules and Grafana dashboards.

``regwatch generate alerts`` and ``regwatch generate dashboards`` write the files committed
under ``alerts/`` and ``dashboards/``; a test checks the committed files equal this output.
"""

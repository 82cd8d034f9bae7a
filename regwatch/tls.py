"""TLS settings every peer shares: the one warning when verification is turned off, and the
ssl context the probe builds from the same options the client takes."""

from __future__ import annotations

import logging
import ssl

log = logging.getLogger("regwatch.tls")


def warn_verification_off(what: str, hint: str = "set tls.ca_file (or --ca-file) to the CA that signed its "
                                                 "certificate instead") -> None:
    """Log the same loud warning wherever TLS verification is turned off (``what`` names the peer:
    ``target hub``, ``auth_logs elk``, ``drill source https://...``)."""
    log.warning("TLS verification is OFF", extra={
        "peer": what,
        "err": "anyone on the network path can read the credentials sent to it and forge its answers",
        "hint": hint})


def ssl_context(ca_file: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """A client context: the system trust store, or ``ca_file``; no verification if ``insecure``."""
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context

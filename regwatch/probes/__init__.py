"""Pull-latency probes: a real pull with every phase timed, and the TLS chain's expiry.

``pull`` runs one probe (``Prober.probe(ProbeSpec)`` -> ``ProbeResult``); ``conn`` opens the
timed connections; ``ref`` parses image references. The serve-side collector is
``regwatch.collectors.probes``, the CLI ``regwatch.commands.probe``.
"""

from regwatch.probes.conn import PHASES, REASONS, ProbeFailure
from regwatch.probes.pull import Prober, ProbeResult, ProbeSpec
from regwatch.probes.ref import BadReference, ImageRef, parse_reference, split_image

__all__ = ["PHASES", "REASONS", "BadReference", "ImageRef", "ProbeFailure", "ProbeResult", "ProbeSpec", "Prober",
           "parse_reference", "split_image"]

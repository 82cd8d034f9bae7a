"""The target context: what the framework builds once per target and hands to every collector of it.

It holds the target's resolved credentials (``regwatch.credentials``), one client per endpoint
(the API, the debug address, each Docker connector), and the time budget every job of the
target runs on (``regwatch.budget``). A collector never builds a client or computes a timeout
itself: it asks its context, so every kind authenticates, retries and times out the same way.

A new registry kind plugs in as a job factory that takes ``contexts(config)`` and builds its
collectors from them (see docs/architecture.md for a worked example).
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from regwatch.budget import Budget
from regwatch.client import RegistryClient, RegistryError
from regwatch.collectors.base import Collector, Job
from regwatch.config import Config, TargetConfig
from regwatch.credentials import NONE, Credentials, CredentialsError, resolve


class KindMismatch(RegistryError):
    """What answers at the target's url is not a registry of the configured kind."""

    reason = "wrong_kind"


class TargetContext:
    """One target's credentials, clients and budget, shared by all of its collectors."""

    def __init__(self, target: TargetConfig, *, credentials: Credentials | None = None,
                 budget: Budget | None = None):
        self.target = target
        self.name = target.name
        self.kind = target.kind
        self.credentials_error = ""
        if credentials is None:
            try:
                # serve reads the config and the docker config, not REGWATCH_USERNAME: env vars are not
                # bound to a host, and serve watches many.
                credentials = resolve(target.url, target, use_env=False)
            except CredentialsError as exc:
                credentials, self.credentials_error = NONE, str(exc)
        self.credentials = credentials
        # Set by the primary job when what answers at url is not a registry of this kind; the other jobs of
        # the target wait for the primary's first run (primary_ran) so their first run already knows.
        self.kind_error = ""
        self.primary_ran = threading.Event()
        self.budget = budget or Budget(timeout=target.timeout)
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ clients

    def client(self, endpoint: str = "api", *, url: str | None = None, credentials: bool = True,
               **options: Any) -> RegistryClient:
        """The client of ``endpoint`` (built on first use, then shared): ``api`` is the target's url;
        ``debug`` its debug_url (never sent credentials); any other name needs ``url`` (a Docker
        connector, an Artifactory repository's v2 API)."""
        with self._lock:
            client = self._clients.get(endpoint)
            if client is None:
                if endpoint == "debug":
                    url, credentials = self.target.debug_url, False
                client = RegistryClient.for_target(
                    self.target, url=url, credentials=self.credentials if credentials else NONE,
                    budget=self.budget, **options)
                self._clients[endpoint] = client
            return client

    def check(self, primary: bool = False) -> None:
        """Raise what stops every collection of the target before it starts (the runner calls it first): a
        credential problem, or (for the secondary jobs) the primary job's finding that the kind is wrong."""
        if self.credentials_error:
            raise CredentialsError(f"target {self.name}: {self.credentials_error}")
        if self.kind_error and not primary:
            raise KindMismatch(f"target {self.name}: not collected: the target's primary job found no "
                               f"{self.kind} API at its url (see its error)")

    def wrong_kind(self, message: str) -> KindMismatch:
        """The primary job's error for an url where no API of this kind answers; the other jobs of the target
        then fail at once, pointing at it, instead of each logging its own 404."""
        self.kind_error = message
        return KindMismatch(message)

    def right_kind(self) -> None:
        self.kind_error = ""

    # ------------------------------------------------------------------ jobs

    def job(self, collector: Collector, *, primary: bool = False, interval: float | None = None,
            collection: float | None = None) -> Job:
        """A job of this target. ``primary`` makes its success the target's ``regwatch_target_up``;
        ``collection`` is the deadline of a fan-out collection (many calls), at least one call's worst case."""
        budget = self.budget
        if collection is not None:
            budget = replace(budget, collection=max(collection, budget.call_worst_case()))
        return Job(self.name, collector, interval or self.target.interval, budget,
                   kind=self.kind if primary else None, context=self)

    def fan_out_budget(self) -> float:
        """The default collection budget of a fan-out collector: its interval (a collection should end before
        the next one is due), and never less than one call's worst case."""
        return self.target.interval

    # ------------------------------------------------------------------ secrets

    def secrets(self) -> list[str]:
        creds = self.credentials
        values = [v for v in (creds.password, creds.token, creds.api_key, creds.identity_token) if v]
        if creds.username and creds.password:
            values.append(base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode())
        return values

    def redact(self, text: str) -> str:
        """``text`` with every secret of this target replaced: a last guard for messages regwatch did not write
        itself (a library's exception text)."""
        for secret in sorted(self.secrets(), key=len, reverse=True):
            if len(secret) >= 4:
                # Whole tokens only: a password that is a word ("monitor") must not eat "monitoring".
                text = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(secret)}(?![A-Za-z0-9_])", "<redacted>", text)
        return text

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


class Contexts:
    """The one context of each target, built when a factory first asks for it."""

    def __init__(self, config: Config, *, sleep: Callable[[float], None] | None = None):
        self.config = config
        self.sleep = sleep
        self._made: dict[str, TargetContext] = {}

    def __getitem__(self, name: str) -> TargetContext:
        if name not in self._made:
            target = self.config.target(name)
            if target is None:
                raise KeyError(name)
            budget = Budget(timeout=target.timeout, **({"sleep": self.sleep} if self.sleep else {}))
            self._made[name] = TargetContext(target, budget=budget)
        return self._made[name]

    def of_kind(self, *kinds: str) -> Iterator[TargetContext]:
        """The context of every target whose kind is one of ``kinds`` (every target without ``kinds``)."""
        for target in self.config.targets:
            if not kinds or target.kind in kinds:
                yield self[target.name]

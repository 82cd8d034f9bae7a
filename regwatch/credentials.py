"""Where regwatch's credentials for a registry come from: one resolution, one order.

1. The config: a target's ``username`` with ``password_file``/``password_env``, ``token_file``
   (a static Bearer token) or ``api_key_file`` (Artifactory).
2. ``REGWATCH_USERNAME``/``REGWATCH_PASSWORD``: for the commands that talk to one registry given
   on the command line (``probe``, ``drill``). ``serve`` does not read them: they are not bound to
   a host, and serve watches many.
3. The docker config (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``), the entry
   for the registry's host: ``auth`` (base64 of ``user:password``), ``username``/``password``,
   ``identitytoken`` (an OAuth2 refresh token for the token server), or a credential helper
   (``credHelpers`` for the host, else ``credsStore``) through the ``docker-credential-*``
   protocol (``get`` with the server URL on stdin, JSON on stdout).

A broken entry (``auth`` that is not base64 of ``user:password``, a helper that fails) is a
``CredentialsError`` naming the file, the host and what to do; no message holds a secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# A credential helper answers with a small JSON object; anything bigger is not one.
_HELPER_OUTPUT_LIMIT = 64 * 1024
_HELPER_TIMEOUT = 10.0
_DOCKER_CONFIG_LIMIT = 4 * 1024 * 1024
# docker login stores Docker Hub under its v1 index URL.
_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


class CredentialsError(Exception):
    """Credentials could not be read (a broken docker config entry, a failing credential helper)."""


@dataclass(frozen=True)
class Credentials:
    """What regwatch presents to one registry. ``source`` says where it came from (for messages);
    ``looked`` lists where regwatch looked when it found nothing."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)
    source: str = "none"
    looked: tuple[str, ...] = ()

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.token or self.api_key or self.identity_token)

    def who(self) -> str:
        """How a message names these credentials: ``user alice (from the config)``."""
        if self.token:
            return f"the token from {self.source}"
        if self.api_key:
            return f"the API key from {self.source}"
        if self.identity_token:
            return f"the identity token of {self.username or 'docker login'} from {self.source}"
        if self.username:
            return f"user {self.username} (from {self.source})"
        return "anonymous access"

    def missing_hint(self, host: str) -> str:
        """What to tell a user whose registry wants credentials and regwatch found none."""
        where = "; ".join(self.looked) if self.looked else "the config"
        return (f"regwatch found no credentials for {host} (looked in: {where}); set username and password_file "
                f"on the target, or export REGWATCH_USERNAME and REGWATCH_PASSWORD, or run `docker login {host}`")


NONE = Credentials()


def docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def host_of(url: str) -> str:
    """``https://registry.example.com:5000/v2/`` -> ``registry.example.com:5000``."""
    return urlsplit(url if "://" in url else f"//{url}").netloc.lower()


def _matches(key: str, host: str) -> bool:
    if host_of(key) == host:
        return True
    return host in ("registry-1.docker.io", "index.docker.io", "docker.io") and key in _DOCKER_HUB_KEYS


def from_target(target: Any) -> Credentials:
    """The credentials a config target names, or NONE if it names none."""
    password, token, api_key = target.secret("password"), target.secret("token"), target.secret("api_key")
    if not (target.username or token or api_key):
        return NONE
    return Credentials(username=target.username, password=password, token=token, api_key=api_key,
                       source="the config")


def resolve(url: str, target: Any = None, *, use_env: bool = True, env: Mapping[str, str] | None = None,
            docker_config: Path | None = None) -> Credentials:
    """The credentials for the registry at ``url``: the config ``target``'s, then (``use_env``)
    REGWATCH_USERNAME/REGWATCH_PASSWORD, then the docker config entry for its host."""
    env = os.environ if env is None else env
    looked: list[str] = []
    if target is not None:
        found = from_target(target)
        if not found.anonymous:
            return found
        looked.append(f"the config (target {target.name} has no username, token_file or api_key_file)")
    if use_env:
        user = env.get("REGWATCH_USERNAME")
        if user:
            return Credentials(username=user, password=env.get("REGWATCH_PASSWORD", ""),
                               source="REGWATCH_USERNAME/REGWATCH_PASSWORD")
        looked.append("REGWATCH_USERNAME/REGWATCH_PASSWORD (not set)")
    path = docker_config or docker_config_path(env)
    found = from_docker_config(host_of(url), path, env)
    if found is not None:
        return found
    looked.append(f"the docker config {path} (no entry for {host_of(url)})")
    return Credentials(looked=tuple(looked))


def _read_docker_config(path: Path) -> dict | None:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_DOCKER_CONFIG_LIMIT + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsError(f"cannot read the docker config {path}: {exc.strerror or exc}") from None
    if len(raw) > _DOCKER_CONFIG_LIMIT:
        raise CredentialsError(f"the docker config {path} is over {_DOCKER_CONFIG_LIMIT // 1024 // 1024} MiB; "
                               "it is not a docker config")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise CredentialsError(f"the docker config {path} is not valid JSON; fix it or run docker login again") \
            from None
    if not isinstance(data, dict):
        raise CredentialsError(f"the docker config {path} is not a JSON object")
    return data


def from_docker_config(host: str, path: Path, env: Mapping[str, str] | None = None) -> Credentials | None:
    """The docker config's credentials for ``host``, or None if it has none."""
    data = _read_docker_config(path)
    if data is None:
        return None
    helpers = data.get("credHelpers") if isinstance(data.get("credHelpers"), dict) else {}
    for key, helper in helpers.items():
        if isinstance(key, str) and _matches(key, host) and isinstance(helper, str):
            return _from_helper(helper, key, host, path, env)
    auths = data.get("auths") if isinstance(data.get("auths"), dict) else {}
    for key, entry in auths.items():
        if not isinstance(key, str) or not _matches(key, host):
            continue
        found = _from_entry(entry, key, path)
        if found is not None:
            return found
        # An empty entry ({} as docker login with a credsStore writes it): the store has the secret.
        break
    store = data.get("credsStore")
    if isinstance(store, str) and store:
        key = next((k for k in auths if isinstance(k, str) and _matches(k, host)), host)
        return _from_helper(store, key, host, path, env, missing_ok=True)
    return None


def _from_entry(entry: Any, key: str, path: Path) -> Credentials | None:
    where = f"the docker config {path}, auths[{key!r}]"
    if not isinstance(entry, dict):
        raise CredentialsError(f"{where} is not an object; run `docker login {host_of(key)}` again")
    source = f"the docker config {path}"
    identity = entry.get("identitytoken")
    if entry.get("auth"):
        raw = entry["auth"]
        try:
            decoded = base64.b64decode(str(raw), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise CredentialsError(f"{where}.auth is not base64 of user:password; run `docker login "
                                   f"{host_of(key)}` again") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise CredentialsError(f"{where}.auth decodes to no user:password pair; run `docker login "
                                   f"{host_of(key)}` again")
        if identity:
            return Credentials(username=user or None, identity_token=str(identity), source=source)
        return Credentials(username=user, password=password, source=source)
    if entry.get("username"):
        return Credentials(username=str(entry["username"]), password=str(entry.get("password") or ""),
                           source=source)
    if identity:
        return Credentials(identity_token=str(identity), source=source)
    return None


def _from_helper(helper: str, key: str, host: str, path: Path, env: Mapping[str, str] | None,
                 missing_ok: bool = False) -> Credentials | None:
    """Ask ``docker-credential-<helper>``; None if it has nothing for the host."""
    if not helper.replace("-", "").replace("_", "").isalnum():
        raise CredentialsError(f"the docker config {path} names credential helper {helper!r}, which is not a "
                               "helper name")
    program = f"docker-credential-{helper}"
    found = shutil.which(program, path=(env or os.environ).get("PATH"))
    if found is None:
        if missing_ok:
            return None
        raise CredentialsError(f"the docker config {path} sends {host} to the credential helper {program}, which "
                               "is not installed (not on PATH); install it or remove the entry")
    try:
        proc = subprocess.run(  # noqa: S603 - the helper the docker config names: a plain name found on PATH, no shell
            [found, "get"], input=key.encode(), capture_output=True, timeout=_HELPER_TIMEOUT,
            env=dict(env) if env is not None else None, check=False)
    except subprocess.TimeoutExpired:
        raise CredentialsError(f"the credential helper {program} did not answer within {_HELPER_TIMEOUT:g}s for "
                               f"{host}") from None
    except OSError as exc:
        raise CredentialsError(f"cannot run the credential helper {program}: {exc.strerror or exc}") from None
    out = proc.stdout[:_HELPER_OUTPUT_LIMIT + 1]
    if proc.returncode != 0:
        # The protocol's "not found" answer is the text "credentials not found in native keychain".
        if b"credentials not found" in proc.stdout.lower() + proc.stderr.lower():
            return None
        raise CredentialsError(f"the credential helper {program} failed for {host} (exit {proc.returncode}); "
                               f"run `{program} list` to check it")
    if len(out) > _HELPER_OUTPUT_LIMIT:
        raise CredentialsError(f"the credential helper {program} answered more than 64 KiB for {host}")
    try:
        answer = json.loads(out)
        user, secret = answer.get("Username"), answer.get("Secret")
    except (ValueError, AttributeError):
        raise CredentialsError(f"the credential helper {program} did not answer with JSON for {host}") from None
    if not isinstance(secret, str) or not secret:
        return None
    source = f"the credential helper {program}"
    if user == "<token>":
        return Credentials(identity_token=secret, source=source)
    return Credentials(username=str(user or ""), password=secret, source=source)

"""Which repositories and tags a backup takes.

Repositories: a ``--repo`` without wildcards is taken as it is (no ``_catalog`` request: many
registries refuse it to robot accounts); patterns with ``* ? [`` are matched (fnmatch) against the
registry's ``_catalog``, or, when ``_catalog`` is refused, against Harbor's project and repository
API. The report says which of these found the repositories.

Tags: ``--tag REGEX`` (any may match) and ``--exclude-tag REGEX`` (none may match), each matched
against the whole tag (``re.fullmatch``). Tags that name another manifest by digest, the OCI 1.1
referrers tag schema ``sha256-<hex>`` and cosign's ``sha256-<hex>.sig|.att|.sbom``, are not filtered:
they follow their subject (taken exactly when the manifest they point at is taken).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from regwatch.drill import remote
from regwatch.oci import check_repository

REFERRER_TAG = re.compile(r"(sha256)-([0-9a-f]{64})(?:\.[A-Za-z0-9_-]{1,32})?")
WILDCARDS = set("*?[")
SHOW = 10


class SelectionError(Exception):
    """The repositories could not be listed at all."""


def referrer_subject(tag: str) -> str | None:
    """``sha256-<hex>[.sig]`` -> ``sha256:<hex>``: the manifest this tag is about."""
    m = REFERRER_TAG.fullmatch(tag)
    return f"{m.group(1)}:{m.group(2)}" if m else None


@dataclass
class TagFilter:
    include: list[re.Pattern] = field(default_factory=list)
    exclude: list[re.Pattern] = field(default_factory=list)

    @classmethod
    def compile(cls, include: tuple[str, ...], exclude: tuple[str, ...]) -> TagFilter:
        """Raises ValueError naming the option and the bad expression."""
        def comp(option: str, value: str) -> re.Pattern:
            try:
                return re.compile(value)
            except re.error as exc:
                raise ValueError(f"{option} {value!r} is not a valid regular expression: {exc}") from None
        return cls([comp("--tag", v) for v in include], [comp("--exclude-tag", v) for v in exclude])

    def wants(self, tag: str) -> bool:
        if self.include and not any(p.fullmatch(tag) for p in self.include):
            return False
        return not any(p.fullmatch(tag) for p in self.exclude)

    def describe(self) -> str:
        parts = [f"--tag {p.pattern!r}" for p in self.include] + [f"--exclude-tag {p.pattern!r}" for p in self.exclude]
        return " ".join(parts)


@dataclass
class Selection:
    repos: list[str]
    found_by: str                 # how the repositories were found (shown in the report)
    patterns: list[str]
    offered: list[str]            # what the listing offered (empty for literal names)
    refused: list[str] = field(default_factory=list)  # names from the registry that break the grammar


def _show(names: list[str]) -> str:
    if not names:
        return "none"
    head = ", ".join(names[:SHOW])
    return head + (f" and {len(names) - SHOW} more" if len(names) > SHOW else "")


def select_repositories(client, patterns: list[str]) -> Selection:  # client: a RegistryClient
    literal = [p for p in patterns if not WILDCARDS & set(p)]
    globs = [p for p in patterns if WILDCARDS & set(p)]
    for name in literal:
        check_repository(name)  # BadName: the command turns it into a usage error
    if patterns and not globs:
        return Selection(sorted(set(literal)), "--repo names as given (no listing needed)", patterns, [])
    refused: list[str] = []
    try:
        offered = remote.catalog(client)
        how = "the registry's _catalog"
    except remote.LISTING_REFUSED as catalog_exc:
        try:
            offered, refused = remote.harbor_repositories(client)
            how = f"Harbor's project and repository API (_catalog was refused: HTTP {catalog_exc.status})"
        except remote.RegistryError as harbor_exc:
            raise SelectionError(
                f"cannot list the repositories of {client.url}: _catalog was refused ({catalog_exc}) and it "
                f"answers no Harbor project API either ({harbor_exc}); name the repositories with --repo NAME "
                "(no wildcards: they are backed up without listing)") from None
    offered = sorted(set(offered))
    chosen = offered if not patterns else [r for r in offered if any(fnmatch.fnmatchcase(r, g) for g in globs)]
    return Selection(sorted(set(chosen) | set(literal)), how, patterns, offered, refused)


def nothing_selected(client_url: str, sel: Selection, tags_offered: dict[str, list[str]],
                     tag_filter: TagFilter) -> str:
    """The message of a backup that selected no image: the patterns, and what the source offered."""
    pats = " ".join(f"--repo {p!r}" for p in sel.patterns) or "(every repository)"
    if not sel.repos and not sel.patterns:
        return (f"no image selected: {client_url} offers no repository through {sel.found_by}; check the account's "
                "permissions (a robot account may see none), or name the repositories with --repo NAME")
    if not sel.repos:
        return (f"no image selected: {pats} matched none of the {len(sel.offered)} repositories {client_url} "
                f"offers through {sel.found_by} ({_show(sel.offered)}); check the pattern, or the account's "
                "permissions if it sees none")
    offered = {repo: tags for repo, tags in tags_offered.items()}
    listing = "; ".join(f"{repo}: {_show(sorted(tags))}" for repo, tags in sorted(offered.items()))
    filt = tag_filter.describe()
    if filt:
        return f"no image selected: {filt} matched none of the tags of {_show(sel.repos)} ({listing})"
    return f"no image selected: {pats} found {_show(sel.repos)} but they have no tags ({listing or 'no answer'})"

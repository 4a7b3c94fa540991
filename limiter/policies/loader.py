"""The policy file (TOML, read with the standard library's tomllib) to a PolicySet, or one error that names
the file, the line and the field: ``limits.toml:12: policies.daily.window: must be ...``.

Every key is known or refused (a misspelt ``refil_rate`` must not leave a limit at its default), every
name used is defined, and every number is in range, so a file that loads is one the limiter can run.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tornado_rate_limiter.limiter.algorithms import BY_NAME, AnyPolicy
from tornado_rate_limiter.limiter.policies.model import (
    ENFORCE,
    SHADOW,
    IPNetwork,
    PolicySet,
    Route,
    cost_overruns,
)

_TOP_KEYS = {"policies", "identities", "routes", "exempt"}


class PolicyFileError(ValueError):
    """The policy file cannot be used; the message names the file, the line and the field."""


class _Source:
    """The file's text, to find the line of a field for an error (tomllib gives none for valid TOML)."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.lines = text.splitlines()

    def line_of(self, path: Sequence[str | int]) -> int:
        """The line that defines ``path`` (table names and keys; an int is the n-th ``[[...]]`` entry), or
        the nearest enclosing table's line; 1 when nothing is found."""
        line, table = 0, ""
        for part in path:
            if isinstance(part, int):
                line = self._nth_header(f"[[{table}]]", part, line)
                continue
            dotted = f"{table}.{part}" if table else part
            found = self._header(dotted, line)
            if found is None:
                found = self._key(part, line)
            if found is not None:
                line = found
            table = dotted  # a table may exist only through its children's headers ([policies.burst])
        return line + 1

    def _header(self, dotted: str, after: int) -> int | None:
        pattern = re.compile(rf"^\s*\[\s*{re.escape(dotted)}\s*\]")
        return next((i for i in range(after, len(self.lines)) if pattern.match(self.lines[i])), None)

    def _nth_header(self, header: str, index: int, after: int) -> int:
        seen = -1
        for i in range(after, len(self.lines)):
            if self.lines[i].strip().startswith(header):
                seen += 1
                if seen == index:
                    return i
        return after

    def _key(self, key: str, after: int) -> int | None:
        pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=|[{{,]\s*\"?{re.escape(key)}\"?\s*=")
        for i in range(after, len(self.lines)):
            if i > after and self.lines[i].lstrip().startswith("["):
                return None  # the next table: the key is not in this one
            if pattern.search(self.lines[i]):
                return i
        return None


class _Reader:
    def __init__(self, source: _Source) -> None:
        self.source = source

    def fail(self, path: Sequence[str | int], message: str) -> PolicyFileError:
        field = ".".join(f"[{part}]" if isinstance(part, int) else part for part in path).replace(".[", "[")
        return PolicyFileError(f"{self.source.name}:{self.source.line_of(path)}: {field}: {message}")

    def table(self, value: object, path: Sequence[str | int], allowed: set[str] | None = None) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a table, got {_kind(value)}")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    raise self.fail([*path, key], f"unknown key (expected one of {', '.join(sorted(allowed))})")
        return value

    def names(self, value: object, path: Sequence[str | int], defined: Mapping[str, AnyPolicy]) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(path, "must be a list of policy names")
        for position, name in enumerate(value):
            if name not in defined:
                raise self.fail(path, f"policy {name!r} is not defined under [policies]")
            if name in value[:position]:
                raise self.fail(path, f"policy {name!r} is listed twice (a request is charged once per policy)")
        return tuple(value)

    def policy(self, name: str, spec: object) -> tuple[AnyPolicy, str]:
        path = ["policies", name]
        spec = self.table(spec, path)
        algorithm_name = spec.get("algorithm", "token_bucket")
        if not isinstance(algorithm_name, str) or algorithm_name not in BY_NAME:
            raise self.fail([*path, "algorithm"], f"must be one of {', '.join(BY_NAME)}, got {algorithm_name!r}")
        algorithm = BY_NAME[algorithm_name]
        shape = algorithm.fields
        self.table(spec, path, {"algorithm", "mode", *shape})
        mode = spec.get("mode", ENFORCE)
        if not isinstance(mode, str) or mode not in (ENFORCE, SHADOW):
            raise self.fail([*path, "mode"], f"must be {ENFORCE!r} or {SHADOW!r}, got {mode!r}")
        for key in shape:
            if key not in spec:
                raise self.fail(path, f"{key} is missing ({algorithm_name} needs {' and '.join(shape)})")
        try:
            policy: AnyPolicy = algorithm.policy_type(*(spec[key] for key in shape), name=name)
        except OverflowError:  # an integer too large for a float
            too_large = next(key for key in shape if isinstance(spec[key], int) and abs(spec[key]) > 1e308)
            raise self.fail([*path, too_large], f"{too_large} is out of range") from None
        except ValueError as exc:
            field = next((key for key in (*shape, "name") if str(exc).startswith(key)), None)
            raise self.fail(path if field in (None, "name") else [*path, field], str(exc)) from None
        return policy, mode


def load_policy_file(path: str | Path) -> PolicySet:
    """Read and check the policy file at ``path``; PolicyFileError (file, line, field) when it is not valid."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        message = f"{file}: cannot be read: {exc.strerror or exc}"
        raise PolicyFileError(message) from None
    return parse_policies(raw, str(file))


def parse_policies(raw: bytes, name: str = "<policies>") -> PolicySet:
    """The PolicySet that the TOML text ``raw`` describes (``name`` is the file shown in errors)."""
    try:
        return _parse(raw, name)
    except PolicyFileError:
        raise
    except Exception as exc:  # a value no check above foresaw: still one line, never a traceback
        message = f"{name}: cannot be used: {exc}"
        raise PolicyFileError(message) from None


def _parse(raw: bytes, name: str) -> PolicySet:
    try:
        text = raw.decode("utf-8")
        document = tomllib.loads(text)
    except UnicodeDecodeError:
        message = f"{name}: is not UTF-8 text"
        raise PolicyFileError(message) from None
    except tomllib.TOMLDecodeError as exc:
        message = f"{name}: is not valid TOML: {exc}"
        raise PolicyFileError(message) from None
    reader = _Reader(_Source(name, text))
    reader.table(document, [], _TOP_KEYS)
    policy_specs = reader.table(document.get("policies", {}), ["policies"])
    if not policy_specs:
        raise reader.fail(["policies"], "define at least one policy")
    policies: dict[str, AnyPolicy] = {}
    modes: dict[str, str] = {}
    for policy_name, spec in policy_specs.items():
        policies[policy_name], modes[policy_name] = reader.policy(policy_name, spec)

    identities = reader.table(document.get("identities", {}), ["identities"], {"ip", "user"})
    ip = reader.table(identities.get("ip", {}), ["identities", "ip"], {"policies"})
    ip_policies = reader.names(ip.get("policies", []), ["identities", "ip", "policies"], policies)
    user = reader.table(
        identities.get("user", {}), ["identities", "user"], {"policies", "tier_claim", "default_tier", "tiers"}
    )
    user_policies = reader.names(user.get("policies", []), ["identities", "user", "policies"], policies)
    tiers_spec = reader.table(user.get("tiers", {}), ["identities", "user", "tiers"])
    tiers = {
        tier: reader.names(listed, ["identities", "user", "tiers", tier], policies)
        for tier, listed in tiers_spec.items()
    }
    tier_claim, default_tier = user.get("tier_claim"), user.get("default_tier")
    if tiers:
        if not isinstance(tier_claim, str) or not tier_claim:
            raise reader.fail(["identities", "user", "tier_claim"], "must name the JWT claim that holds the tier")
        if not isinstance(default_tier, str) or default_tier not in tiers:
            raise reader.fail(
                ["identities", "user", "default_tier"],
                f"must be one of the tiers ({', '.join(tiers)}), got {default_tier!r}",
            )
    elif tier_claim is not None or default_tier is not None:
        raise reader.fail(["identities", "user"], "tier_claim and default_tier need [identities.user.tiers]")

    routes = tuple(_route(reader, index, spec, policies) for index, spec in enumerate(_routes(reader, document)))
    exempt = reader.table(document.get("exempt", {}), ["exempt"], {"networks", "users"})
    # Before PolicySet checks the same, so that the error names the line.
    overrun = next(cost_overruns(policies, ip_policies, user_policies, tiers, routes), None)
    if overrun is not None:
        where, name, cost, quota = overrun
        raise reader.fail(where, f"{cost:g} is more than policy {name!r} ever admits at once ({quota:g})")
    return PolicySet(
        policies=policies,
        modes=modes,
        ip_policies=ip_policies,
        user_policies=user_policies,
        tiers=tiers,
        tier_claim=tier_claim if tiers else None,
        default_tier=default_tier if tiers else None,
        routes=routes,
        exempt_networks=_networks(reader, exempt.get("networks", [])),
        exempt_users=_users(reader, exempt.get("users", [])),
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def _routes(reader: _Reader, document: Mapping[str, Any]) -> list[Any]:
    routes = document.get("routes", [])
    if not isinstance(routes, list):
        raise reader.fail(["routes"], "must be an array of tables: [[routes]]")
    return routes


def _route(reader: _Reader, index: int, spec: object, policies: Mapping[str, AnyPolicy]) -> Route:
    path: list[str | int] = ["routes", index]
    spec = reader.table(spec, path, {"path", "methods", "cost", "policies"})
    pattern = spec.get("path")
    if not isinstance(pattern, str):
        raise reader.fail([*path, "path"] if "path" in spec else path, "path (a regular expression) is missing")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise reader.fail([*path, "path"], f"is not a valid regular expression: {exc}") from None
    methods = spec.get("methods")
    if methods is not None and (
        not isinstance(methods, list) or not methods or not all(isinstance(m, str) and m for m in methods)
    ):
        raise reader.fail([*path, "methods"], 'must be a list of HTTP methods, such as ["GET", "POST"]')
    lists = reader.table(spec.get("policies", {}), [*path, "policies"], {"ip", "user"})
    chosen = {kind: reader.names(listed, [*path, "policies", kind], policies) for kind, listed in lists.items()}
    cost = spec.get("cost", 1)
    if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not 0 < cost <= 1e300:
        raise reader.fail([*path, "cost"], f"must be a number > 0 and at most 1e300, got {str(cost)[:40]}")
    return Route(compiled, frozenset(methods) if methods else None, float(cost), chosen)


def _networks(reader: _Reader, value: object) -> tuple[IPNetwork, ...]:
    if not isinstance(value, list):
        raise reader.fail(["exempt", "networks"], "must be a list of addresses or CIDRs")
    networks = []
    for item in value:
        try:
            networks.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise reader.fail(["exempt", "networks"], f"{item!r} is not an address or a CIDR") from None
    return tuple(networks)


def _users(reader: _Reader, value: object) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise reader.fail(["exempt", "users"], "must be a list of user ids")
    return frozenset(value)


def _kind(value: object) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), type(value).__name__)


__all__ = ["PolicyFileError", "load_policy_file", "parse_policies"]

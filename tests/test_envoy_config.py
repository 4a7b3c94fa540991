"""deploy/envoy/envoy.yaml against Envoy's own messages (xds-protos: no Envoy binary installs where this project
is tested): it parses strictly into a Bootstrap, and its ext_authz filter asks the limiter as the README says,
passing a denial's Content-Type on to the client."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  # its type, for the Any it is in
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from google.protobuf import json_format

CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "envoy" / "envoy.yaml"


def shipped() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return document


def bootstrap(document: dict[str, Any]) -> bootstrap_pb2.Bootstrap:
    return json_format.ParseDict(document, bootstrap_pb2.Bootstrap())


def connection_manager() -> http_connection_manager_pb2.HttpConnectionManager:
    listener = bootstrap(shipped()).static_resources.listeners[0]
    manager = http_connection_manager_pb2.HttpConnectionManager()
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


def ext_authz() -> ext_authz_pb2.ExtAuthz:
    (authz_filter,) = [f for f in connection_manager().http_filters if f.name == "envoy.filters.http.ext_authz"]
    authz = ext_authz_pb2.ExtAuthz()
    assert authz_filter.typed_config.Unpack(authz)
    return authz


def test_the_config_is_envoys_own_messages() -> None:
    """Every field of envoy.yaml, the typed filter configs included, is a field of Envoy's v3 messages."""
    assert bootstrap(shipped()).static_resources.clusters


def test_a_misspelt_field_is_refused() -> None:
    """The check can fail: a field Envoy does not have, inside the ext_authz filter's typed config, is refused."""
    document = copy.deepcopy(shipped())
    manager = document["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    manager["http_filters"][0]["typed_config"]["failure_mode_alow"] = True
    with pytest.raises(json_format.ParseError, match="failure_mode_alow"):
        bootstrap(document)


def test_paths_are_normalized_by_envoy_too() -> None:
    """Envoy normalizes the path (dot segments, repeated slashes) before it asks and routes, so the limiter
    and the application see one path."""
    manager = connection_manager()
    assert manager.normalize_path.value and manager.merge_slashes and manager.use_remote_address.value


def test_the_limiter_is_asked_with_only_what_it_needs() -> None:
    """ext_authz asks /check + the original path, forwarding Authorization and X-Forwarded-For (Envoy adds
    the method, path and Host itself), and fails open (deploy/envoy/README.md says when)."""
    authz = ext_authz()
    assert authz.http_service.path_prefix == "/check" and authz.failure_mode_allow
    forwarded = {pattern.exact for pattern in authz.http_service.authorization_request.allowed_headers.patterns}
    assert forwarded == {"authorization", "x-forwarded-for"}


def test_a_denial_keeps_its_content_type() -> None:
    """A denial's application/problem+json reaches the client: content-type is among the headers Envoy
    passes from the limiter's 429 (without it, Envoy drops it)."""
    response = ext_authz().http_service.authorization_response
    assert "content-type" in {pattern.exact for pattern in response.allowed_client_headers.patterns}

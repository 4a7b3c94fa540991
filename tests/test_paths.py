"""The normalized path routes match: a table of the forms attackers slip routes with, and properties that hold
for any path (normalizing twice changes nothing; every spelling of a path gets its route)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tornado_rate_limiter.limiter import TokenBucket
from tornado_rate_limiter.limiter.policies import PolicySet, Route
from tornado_rate_limiter.limiter.policies.paths import AmbiguousPath, MalformedPath, normalize_path


class TestNormalizePath:
    @pytest.mark.parametrize(
        "target",
        [
            "/api/search",
            "/api/%73earch",
            "/%61pi/search",
            "/%61%70%69/%73earch",
            "/api/se%61rch",
            "//api/search",
            "/api//search",
            "/api/./search",
            "/api/x/../search",
            "/api/x/%2e%2E/search",
            "/api/sea%72ch;x=1",
            "/api;v=2/search",
            "/api/search?q=%zz",
            "/api/search#top",
            "http://app/api/%73earch",
            "HTTPS://app:8443/api/search?q=1",
            "/../api/search",
        ],
    )
    def test_every_spelling_of_the_path_is_one_path(self, target: str) -> None:
        """The forms that slipped a route of ``^/api/search`` through nginx all normalize to ``/api/search``."""
        assert normalize_path(target) == "/api/search"

    @pytest.mark.parametrize(
        ("target", "normalized"),
        [
            ("/", "/"),
            ("", "/"),
            ("/api/search/", "/api/search/"),
            ("/api/search/.", "/api/search/"),
            ("/a/%2f/b", "/a/%2F/b"),  # an encoded slash is not a separator: it keeps its meaning, in upper case
            ("/a/%3Bx", "/a/%3Bx"),  # nor is an encoded ";" a parameter
            ("/caf\xc3\xa9", "/caf%C3%A9"),  # raw bytes of a request line, as Latin-1 characters
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a b", "/a%20b"),
            ("/a\x7fb", "/a%7Fb"),
            ("/~user/-._", "/~user/-._"),
        ],
    )
    def test_what_keeps_its_meaning(self, target: str, normalized: str) -> None:
        """Reserved characters stay encoded (their meaning differs from the raw character), bytes that may not
        stand in a path are encoded, a trailing slash stays."""
        assert normalize_path(target) == normalized

    @pytest.mark.parametrize("target", ["/a%zz", "/a%4", "/%", "/api/%g1/search", "http://app/%"])
    def test_a_malformed_encoding_is_refused(self, target: str) -> None:
        """A ``%`` not followed by two hex digits raises MalformedPath, naming the encoding."""
        with pytest.raises(MalformedPath, match="malformed percent-encoding"):
            normalize_path(target)


SEGMENT_CHARACTERS = string.ascii_letters + string.digits + "-._~!$&'()*+,=:@"
segments = st.text(SEGMENT_CHARACTERS, min_size=1, max_size=8).filter(lambda text: text not in (".", ".."))
plain_paths = st.lists(segments, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts))
UNRESERVED = set(string.ascii_letters + string.digits + "-._~")


@st.composite
def respellings(draw: st.DrawFn, path: str) -> str:
    """``path`` as a client may write it for the same resource: unreserved characters percent-encoded (hex
    in either case), ``./`` and ``x/../`` segments and repeated slashes inserted, path parameters added,
    a query or fragment, the absolute form."""
    out = []
    for part in path.split("/")[1:]:
        spelled = "".join(
            (f"%{ord(character):02x}" if draw(st.booleans()) else f"%{ord(character):02X}")
            if character in UNRESERVED and draw(st.booleans())
            else character
            for character in part
        )
        if draw(st.booleans()):
            spelled += ";" + draw(st.text(SEGMENT_CHARACTERS, max_size=4))
        prefix = draw(st.sampled_from(["", "./", "/", "zz/../", "%2e/", "x/%2E%2e/"]))
        out.append(prefix + spelled)
    target = "/" + "/".join(out)
    target += draw(st.sampled_from(["", "?q=1", "?%zz", "#frag", "?a=/../b"]))
    return draw(st.sampled_from(["", "http://app", "https://app.example:8443"])) + target


class TestProperties:
    @given(st.text(max_size=40))
    def test_normalizing_twice_changes_nothing(self, target: str) -> None:
        """Invariant: normalize_path is idempotent on every target it accepts."""
        try:
            once = normalize_path(target)
        except MalformedPath:
            return
        assert normalize_path(once) == once

    @given(st.data(), plain_paths)
    def test_every_spelling_normalizes_to_the_plain_path(self, data: st.DataObject, path: str) -> None:
        """Invariant: a path written with encoded unreserved characters, dot segments, repeated slashes,
        parameters, a query or the absolute form normalizes to the same path as written plainly."""
        assert normalize_path(data.draw(respellings(path))) == normalize_path(path)

    @given(st.data(), plain_paths)
    def test_a_spelling_is_charged_its_paths_route_or_refused(self, data: st.DataObject, path: str) -> None:
        """Invariant: a request target that normalizes to a path is charged that path's route (cost and
        policies), or refused as ambiguous when a server that keeps its structure would route it otherwise;
        never charged another route."""
        burst, search = TokenBucket(10, 1.0, name="burst"), TokenBucket(10, 1.0, name="search")
        routes = tuple(
            Route(pattern, cost=cost, policies={"ip": ("search",)})
            for pattern, cost in ((r"^/[a-m]", 5.0), (r"[0-9]$", 3.0), (r"~", 2.0))
        )
        policy_set = PolicySet({"burst": burst, "search": search}, ip_policies=("burst",), routes=routes)
        target = data.draw(respellings(path))
        try:
            charged = policy_set.limits_for("ip", "GET", target)
        except AmbiguousPath:
            return
        assert charged == policy_set.limits_for("ip", "GET", path)


def search_route() -> PolicySet:
    """A burst of 10 per client, and ^/api/search at cost 5 of a policy of its own."""
    policies = {"burst": TokenBucket(10, 1.0, name="burst"), "search": TokenBucket(10, 1.0, name="search")}
    routes = (Route(r"^/api/search", cost=5.0, policies={"ip": ("search",)}),)
    return PolicySet(policies, ip_policies=("burst",), routes=routes)


@pytest.fixture
def policy_set() -> PolicySet:
    return search_route()


class TestEncodedSlashes:
    """An application that decodes ``%2F`` into a separator (WSGI does) routes ``/api%2Fsearch`` as
    ``/api/search``: the route table refuses a path whose two readings are different routes."""

    @pytest.mark.parametrize(
        "target",
        ["/api%2Fsearch", "/api%2fsearch", "/api%5Csearch", "/static%2F..%2Fapi/search", "/api/search%2F..%2F..%2Fy"],
    )
    def test_a_path_whose_readings_are_two_routes_is_refused(self, policy_set: PolicySet, target: str) -> None:
        """Either reading could be what the application serves: AmbiguousPath, a 400, never the cheaper one."""
        with pytest.raises(AmbiguousPath, match="another route"):
            policy_set.limits_for("ip", "GET", target)

    @pytest.mark.parametrize(("target", "cost"), [("/files/a%2Fb", 1.0), ("/api/search/a%2Fb", 5.0)])
    def test_an_encoded_slash_that_changes_no_route_is_kept(
        self, policy_set: PolicySet, target: str, cost: float
    ) -> None:
        """Paths that carry encoded slashes in a segment (``/projects/group%2Fname``) keep working when both
        readings are the same route."""
        assert policy_set.limits_for("ip", "GET", target).cost == cost

    @given(st.lists(st.sampled_from(["api", "search", "%2F", "%5C", "..", "x", "/"]), max_size=8))
    def test_the_route_charged_is_the_route_of_both_readings(self, parts: list[str]) -> None:
        """Invariant: a path the route table accepts is charged the route it has whether or not its encoded
        slashes are separators."""
        policy_set = search_route()
        target = "/" + "".join(parts)
        try:
            charged = policy_set.limits_for("ip", "GET", target)
        except AmbiguousPath:
            return
        decoded = target.replace("%2F", "/").replace("%5C", "/")
        assert policy_set.limits_for("ip", "GET", decoded) == charged


class TestStructureKept:
    """Tornado, Express and Werkzeug route on the path as written: ``/api/search/..`` is a term of the
    search to them, ``/`` once normalized. A path that is another route with its structure kept is refused."""

    @pytest.mark.parametrize(
        "target",
        [
            "/api/search/..",
            "/api/search/..;x",
            "/api/search/%2e%2E",
            "//api/search",
            "/api/./search",
            "/api;v=1/search",
        ],
    )
    def test_a_path_whose_structure_decides_its_route_is_refused(self, policy_set: PolicySet, target: str) -> None:
        """Dot segments, repeated slashes or parameters that move a path into or out of a route: refused."""
        with pytest.raises(AmbiguousPath, match="another route"):
            policy_set.limits_for("ip", "GET", target)

    @pytest.mark.parametrize(
        ("target", "cost"),
        [("/api/sea%72ch;x=1", 5.0), ("/api/search/a/../b", 5.0), ("/files/./a", 1.0), ("/a//b", 1.0)],
    )
    def test_a_structure_that_changes_no_route_is_kept(self, policy_set: PolicySet, target: str, cost: float) -> None:
        """Dot segments, repeated slashes and parameters that leave the route as it is change nothing."""
        assert policy_set.limits_for("ip", "GET", target).cost == cost

    def test_a_lone_surrogate_is_encoded_not_an_error(self) -> None:
        """A character no request line can carry, from a library caller, is encoded rather than raising."""
        assert normalize_path("/a\udc80") == "/a%ED%B2%80"

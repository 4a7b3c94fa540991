"""The policy file (limiter/policies): the issue's example reads into the PolicySet it describes, and every
kind of mistake stops it with one line naming the file, the line and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tornado_rate_limiter.limiter import FixedWindow, SlidingWindow, TokenBucket
from tornado_rate_limiter.limiter.policies import PolicyFileError, PolicySet, Route, load_policy_file

EXAMPLE = """\
[policies.burst]                 # the name is the policy's name in headers, keys and metrics
algorithm = "token_bucket"       # the default; or "sliding_window", "fixed_window"
capacity = 20
refill_rate = 5                  # tokens per second

[policies.daily]
algorithm = "fixed_window"
limit = 5000
window = 86400                   # seconds

[policies.new-hourly]
algorithm = "sliding_window"
limit = 1000
window = 3600
mode = "shadow"                  # "enforce" (default) or "shadow": decided and counted, never denies

[policies.pro-burst]
capacity = 200
refill_rate = 50

[policies.search]
algorithm = "sliding_window"
limit = 30
window = 60

[identities.ip]                  # anonymous clients, by address
policies = ["burst", "daily"]

[identities.user]                # authenticated users; the tier comes from a JWT claim
tier_claim = "tier"              # absent or unknown tier: default_tier
default_tier = "free"
[identities.user.tiers]
free = ["burst", "daily", "new-hourly"]
pro = ["pro-burst"]
internal = []                    # not limited

[[routes]]                       # the first rule that matches wins; no match: the identity's policies
path = "^/api/search"            # a regular expression on the request path
methods = ["GET", "POST"]        # optional; all methods when absent
cost = 5                         # optional; default 1
policies = { ip = ["search"], user = ["search"] }   # optional; replaces the identity's list for this route

[exempt]
networks = ["10.0.0.0/8", "2001:db8:42::/48"]       # client addresses never limited
users = ["ops-bot"]                                  # user ids never limited
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "limits.toml"
    path.write_text(text)
    return path


@pytest.fixture
def example(tmp_path: Path) -> PolicySet:
    return load_policy_file(write(tmp_path, EXAMPLE))


class TestTheExample:
    def test_every_policy_is_read_with_its_algorithm_and_mode(self, example: PolicySet) -> None:
        """Each [policies.NAME] becomes that algorithm's policy under its name; mode defaults to enforce."""
        assert example.policies["burst"] == TokenBucket(20, 5, name="burst")
        assert example.policies["daily"] == FixedWindow(5000, 86400, name="daily")
        assert example.policies["new-hourly"] == SlidingWindow(1000, 3600, name="new-hourly")
        assert example.modes == {
            "burst": "enforce",
            "daily": "enforce",
            "new-hourly": "shadow",
            "pro-burst": "enforce",
            "search": "enforce",
        }

    def test_addresses_get_their_list_and_users_their_tier(self, example: PolicySet) -> None:
        """ip: its policies; user: the tier its claim names, the default tier when absent or unknown; an
        empty tier is not limited; shadow policies are kept apart from the enforced ones."""
        burst, daily, hourly = (example.policies[name] for name in ("burst", "daily", "new-hourly"))
        assert example.limits_for("ip", "GET", "/").enforced == (burst, daily)
        assert [example.tier_of(claims) for claims in ({"tier": "pro"}, {"tier": "gold"}, {}, None)] == [
            "pro",
            "free",
            "free",
            "free",
        ]
        free = example.limits_for("user", "GET", "/", tier="free")
        assert (free.enforced, free.shadow, free.cost) == ((burst, daily), (hourly,), 1.0)
        assert example.limits_for("user", "GET", "/", tier="pro").enforced == (example.policies["pro-burst"],)
        internal = example.limits_for("user", "GET", "/", tier="internal")
        assert internal.enforced == internal.shadow == ()

    def test_the_first_matching_route_sets_the_cost_and_the_policies(self, example: PolicySet) -> None:
        """POST /api/search costs 5 against "search" for both kinds; DELETE is not in its methods."""
        search = example.limits_for("ip", "post", "/api/search/users")
        assert (search.cost, search.enforced) == (5.0, (example.policies["search"],))
        other = example.limits_for("ip", "DELETE", "/api/search")
        assert (other.cost, other.enforced) == (1.0, (example.policies["burst"], example.policies["daily"]))

    def test_exemptions(self, example: PolicySet) -> None:
        """Addresses inside the listed networks and the listed user ids are exempt; nothing else is."""
        assert example.is_exempt_address("10.2.3.4") and example.is_exempt_address("2001:db8:42::7")
        assert not example.is_exempt_address("203.0.113.7") and not example.is_exempt_address("not-an-ip")
        assert example.is_exempt_user("ops-bot") and not example.is_exempt_user("ops-bot2")

    def test_the_file_hash_identifies_the_content(self, tmp_path: Path, example: PolicySet) -> None:
        """sha256 is of the bytes: the same content gives the same hash, any change another."""
        assert re.fullmatch(r"[0-9a-f]{64}", example.sha256)
        changed = load_policy_file(write(tmp_path, EXAMPLE.replace("capacity = 20", "capacity = 21")))
        assert changed.sha256 != example.sha256


def line_of(text: str, fragment: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if fragment in line)


MISTAKES = [
    # (what the file gets wrong: replace old with new, the field named, the line's text, the message's words)
    ("refill_rate = 5 ", "refil_rate = 5 ", "policies.burst.refil_rate", "refil_rate = 5", "unknown key"),
    ('pro = ["pro-burst"]', 'pro = ["pro-brust"]', "identities.user.tiers.pro", 'pro = ["pro-brust"]', "not defined"),
    (
        'path = "^/api/search"',
        'path = "^/api/(search"',
        "routes[0].path",
        'path = "^/api/(search"',
        "regular expression",
    ),
    ('"10.0.0.0/8"', '"10.0.0.0/33"', "exempt.networks", "networks =", "not an address"),
    ("cost = 5 ", "cost = 50 ", "routes[0].cost", "cost = 50", "more than policy 'search'"),
    ("window = 3600", "window = 0", "policies.new-hourly.window", "window = 0", "window must be"),
    ("capacity = 20", "capacity = -1", "policies.burst.capacity", "capacity = -1", "capacity must be"),
    ('algorithm = "fixed_window"', 'algorithm = "fixed"', "policies.daily.algorithm", 'algorithm = "fixed"', "one of"),
    ('mode = "shadow"', 'mode = "dry-run"', "policies.new-hourly.mode", 'mode = "dry-run"', "'enforce' or 'shadow'"),
    (
        'default_tier = "free"',
        'default_tier = "gratis"',
        "identities.user.default_tier",
        "default_tier =",
        "one of the tiers",
    ),
    ("[exempt]", "[exempted]", "exempted", "[exempted]", "unknown key"),
    (
        'policies = ["burst", "daily"]',
        'policies = ["burst", "burst"]',
        "identities.ip.policies",
        'policies = ["burst", "burst"]',
        "listed twice",
    ),
    # values of the wrong type or size, which once escaped as TypeError or OverflowError (a traceback)
    ('algorithm = "fixed_window"', 'algorithm = ["x"]', "policies.daily.algorithm", 'algorithm = ["x"]', "one of"),
    ('mode = "shadow"', "mode = 1", "policies.new-hourly.mode", "mode = 1", "'enforce' or 'shadow'"),
    ('default_tier = "free"', 'default_tier = ["free"]', "identities.user.default_tier", "default_tier =", "one of"),
    ("capacity = 20", "capacity = 1" + "0" * 400, "policies.burst.capacity", "capacity = 1000", "out of range"),
    ("cost = 5 ", "cost = 1" + "0" * 400 + " ", "routes[0].cost", "cost = 1000", "at most 1e300"),
    # a policy that cannot admit the cost of 1 every request on its lists pays, a shadow one too
    ("capacity = 200", "capacity = 0.5", "identities.user.tiers.pro", 'pro = ["pro-burst"]', "more than policy"),
    ("limit = 1000\n", "limit = 0.5\n", "identities.user.tiers.free", "free = [", "'new-hourly' ever admits"),
]


@pytest.mark.parametrize(("old", "new", "field", "line", "words"), MISTAKES, ids=[m[2] for m in MISTAKES])
def test_a_mistake_names_the_file_the_line_and_the_field(
    tmp_path: Path, old: str, new: str, field: str, line: str, words: str
) -> None:
    """Each mistake raises PolicyFileError "<file>:<line>: <field>: <why>", one line, the line the
    field is written on."""
    assert old in EXAMPLE
    text = EXAMPLE.replace(old, new, 1)
    path = write(tmp_path, text)
    with pytest.raises(PolicyFileError) as raised:
        load_policy_file(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:{line_of(text, line)}: {field}: "), message
    assert words in message and "\n" not in message


def test_a_set_built_in_code_is_checked_as_a_file_is() -> None:
    """A list naming no policy, or a policy that cannot admit the cost it is charged: ValueError."""
    with pytest.raises(ValueError, match="names 'absent'"):
        PolicySet(policies={}, ip_policies=("absent",))
    with pytest.raises(ValueError, match="a cost of 1 is more than policy 'half'"):
        PolicySet(policies={"half": TokenBucket(0.5, 1, name="half")}, ip_policies=("half",))


def test_kinds_of_their_own_and_shared_names_are_kept_apart() -> None:
    """from_kinds: a kind of an application's own gets its policy; two kinds' policies may share a name
    (their keys never meet); a kind left out is not limited."""
    policies = PolicySet.from_kinds({"ip": TokenBucket(60, 1), "apikey": TokenBucket(5, 1), "user": None})
    assert policies.limits_for("apikey", "GET", "/").enforced == (TokenBucket(5, 1),)
    assert policies.limits_for("ip", "GET", "/").enforced == (TokenBucket(60, 1),)
    assert policies.limits_for("user", "GET", "/").enforced == ()


def test_a_rule_for_get_covers_head() -> None:
    """HEAD is GET without the body: a route for GET applies to it (method names in any case)."""
    route = Route("^/x", methods=["get"])
    assert route.matches("HEAD", "/x") and route.matches("GET", "/x") and not route.matches("POST", "/x")


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"[policies\n", "is not valid TOML"), (b"\xff\xfe", "not UTF-8"), (b"", "at least one policy")],
)
def test_a_file_that_is_no_policy_file_is_refused(tmp_path: Path, content: bytes, words: str) -> None:
    """Not TOML, not text, or no policy at all: one line naming the file."""
    path = tmp_path / "limits.toml"
    path.write_bytes(content)
    with pytest.raises(PolicyFileError, match=re.escape(words)) as raised:
        load_policy_file(path)
    assert str(raised.value).startswith(str(path))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="cannot be read"):
        load_policy_file(tmp_path / "absent.toml")

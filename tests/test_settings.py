"""Settings from the environment: defaults, parsing, and one clear line for each bad value."""

from __future__ import annotations

import ipaddress

import pytest

from tornado_rate_limiter.app import Settings, SettingsError
from tornado_rate_limiter.app.settings import SETTINGS_HELP
from tornado_rate_limiter.handlers import default_policies
from tornado_rate_limiter.limiter import FixedWindow, Policy, SlidingWindow
from tornado_rate_limiter.limiter.algorithms import BY_NAME


class TestFromEnv:
    def test_defaults_when_nothing_is_set(self) -> None:
        """An empty environment gives the documented defaults."""
        assert Settings.from_env({}) == Settings()
        assert (Settings().port, Settings().host, Settings().failure_strategy) == (8080, "0.0.0.0", "open")

    def test_reads_every_variable(self) -> None:
        """Each documented variable lands in its field."""
        env = {
            "PORT": "9000",
            "HOST": "127.0.0.1",
            "REDIS_URL": "redis://cache:6379/1",
            "RATE_LIMIT_CAPACITY": "100",
            "RATE_LIMIT_REFILL_RATE": "2.5",
            "RATE_LIMIT_USER_CAPACITY": "500",
            "RATE_LIMIT_USER_REFILL_RATE": "10",
            "RATE_LIMIT_FAILURE_STRATEGY": "Closed",
            "RATE_LIMIT_TRUSTED_PROXIES": "10.0.0.0/8, ::1",
            "RATE_LIMIT_TRUSTED_HOPS": "2",
            "RATE_LIMIT_FORWARDED_HEADER": "Forwarded",
            "RATE_LIMIT_IPV6_PREFIX": "56",
            "JWT_SECRET": "x" * 32,
            "RATE_LIMIT_FALLBACK_SHARE": "0.25",
            "RATE_LIMIT_REDIS_TIMEOUT": "0.02",
            "RATE_LIMIT_BREAKER_FAILURES": "3",
            "RATE_LIMIT_BREAKER_COOLDOWN": "1.5",
            "RATE_LIMIT_BREAKER_MAX_COOLDOWN": "60",
            "ACCESS_LOG": "All",
        }
        settings = Settings.from_env(env)
        assert settings == Settings(
            port=9000,
            host="127.0.0.1",
            redis_url="redis://cache:6379/1",
            ip_capacity=100,
            ip_refill_rate=2.5,
            user_capacity=500,
            user_refill_rate=10.0,
            failure_strategy="closed",
            trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1")),
            trusted_hops=2,
            forwarded_header="forwarded",
            ipv6_prefix=56,
            jwt_secret="x" * 32,
            fallback_share=0.25,
            redis_timeout=0.02,
            breaker_failures=3,
            breaker_cooldown=1.5,
            breaker_max_cooldown=60.0,
            access_log="all",
        )
        assert (settings.breaker_config.consecutive_failures, settings.breaker_config.max_cooldown) == (3, 60.0)
        assert (settings.ip_policy.capacity, settings.user_policy.refill_rate) == (100, 10.0)

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("PORT", "http"),
            ("PORT", "0"),
            ("PORT", "70000"),
            ("PORT", "-1"),
            ("RATE_LIMIT_CAPACITY", "0"),
            ("RATE_LIMIT_CAPACITY", "1.5"),
            ("RATE_LIMIT_REFILL_RATE", "0"),
            ("RATE_LIMIT_REFILL_RATE", "nan"),
            ("RATE_LIMIT_REFILL_RATE", "inf"),
            ("RATE_LIMIT_USER_REFILL_RATE", "fast"),
            ("RATE_LIMIT_FAILURE_STRATEGY", "maybe"),
            ("RATE_LIMIT_TRUSTED_PROXIES", "10.0.0.0/33"),
            ("RATE_LIMIT_TRUSTED_PROXIES", "proxy.internal"),
            ("RATE_LIMIT_TRUSTED_HOPS", "many"),
            ("RATE_LIMIT_IPV6_PREFIX", "200"),
            ("RATE_LIMIT_FORWARDED_HEADER", "X-Real-Ip"),
            ("JWT_SECRET", "short"),
            ("REDIS_URL", "http://cache:6379"),
            ("REDIS_URL", "redis://a:1,b:2"),
            ("REDIS_URL", "redis+sentinel://s:26379"),
            ("REDIS_URL", "redis+sentinel://s:26379/mymaster?ssl_cert_reqs=none"),
            ("REDIS_URL", "redis://cache:99999"),
            ("REDIS_URL", "redis://cache:6379?socket_timeout=soon"),
            ("REDIS_URL", "redis://cache:6379/abc"),  # redis-py would ignore it and use DB 0
            # redis-py would pass these to its connections: a TypeError at the first one
            ("REDIS_URL", "redis://cache:6379/0?bogus=1"),
            ("REDIS_URL", "redis://cache:6379/0?Socket_Timeout=1"),
            ("REDIS_URL", "unix:///run/redis.sock?bogus=1"),
            ("REDIS_URL", "redis+cluster://a:1,b:2?bogus=1"),
            ("RATE_LIMIT_FALLBACK_SHARE", "1e-309"),
            ("REDIS_URL", "redis+cluster://a:1,b:2/3"),
            ("RATE_LIMIT_FALLBACK_SHARE", "0"),
            ("RATE_LIMIT_FALLBACK_SHARE", "1.5"),
            ("RATE_LIMIT_FALLBACK_SHARE", "1/0"),
            ("RATE_LIMIT_FALLBACK_SHARE", "2/1"),
            ("RATE_LIMIT_FALLBACK_SHARE", "one/4"),
            # valid alone, yet the bucket would take forever to refill: the headers' maths would overflow
            ("RATE_LIMIT_REFILL_RATE", "1e-320"),
            ("RATE_LIMIT_USER_REFILL_RATE", "1e-320"),
            ("RATE_LIMIT_REDIS_TIMEOUT", "-1"),
            ("RATE_LIMIT_BREAKER_FAILURES", "0"),
            ("RATE_LIMIT_BREAKER_COOLDOWN", "soon"),
            ("RATE_LIMIT_BREAKER_MAX_COOLDOWN", "0.5"),  # below the 2 s cool-down
            ("ACCESS_LOG", "verbose"),
            ("MAX_HEADERS", "0"),
            ("MAX_HEADERS", "10001"),
            ("MAX_HEADERS", "many"),
            ("MAX_HEADER_BYTES", "1023"),
            ("MAX_HEADER_BYTES", "1048577"),
            ("MAX_HEADER_BYTES", "16k"),
            ("RATE_LIMIT_ALGORITHM", "leaky_bucket"),
            ("RATE_LIMIT_USER_ALGORITHM", "gcra"),
        ],
    )
    def test_a_bad_value_raises_naming_the_variable(self, name: str, value: str) -> None:
        """An invalid value raises SettingsError whose message names the variable and what is valid."""
        with pytest.raises(SettingsError, match=name) as raised:
            Settings.from_env({name: value})
        assert "expected" in str(raised.value)

    @pytest.mark.parametrize(
        ("name", "value", "field"),
        [
            ("MAX_HEADERS", "1", "max_headers"),
            ("MAX_HEADERS", "10000", "max_headers"),
            ("MAX_HEADER_BYTES", "1024", "max_header_bytes"),
            ("MAX_HEADER_BYTES", "1048576", "max_header_bytes"),
        ],
    )
    def test_the_head_limits_take_their_bounds(self, name: str, value: str, field: str) -> None:
        """MAX_HEADERS and MAX_HEADER_BYTES accept the ends of their ranges."""
        assert getattr(Settings.from_env({name: value}), field) == int(value)

    @pytest.mark.parametrize(("value", "share"), [("1/4", 0.25), (" 1 / 3 ", 1 / 3), ("0.5", 0.5), ("1", 1.0)])
    def test_the_fallback_share_is_a_decimal_or_a_fraction(self, value: str, share: float) -> None:
        """RATE_LIMIT_FALLBACK_SHARE=1/N, as the settings table says to write it, is the share 1/N."""
        assert Settings.from_env({"RATE_LIMIT_FALLBACK_SHARE": value}).fallback_share == share

    def test_a_share_that_scales_a_policy_below_what_can_be_computed_is_refused(self) -> None:
        """Each valid alone, a tiny refill rate and a small share make a fallback rate too small: refused
        at start, naming RATE_LIMIT_FALLBACK_SHARE (it used to answer 500 while Redis was down)."""
        env = {"RATE_LIMIT_FALLBACK_SHARE": "0.000001", "RATE_LIMIT_REFILL_RATE": "0.0001"}
        with pytest.raises(SettingsError, match="RATE_LIMIT_FALLBACK_SHARE"):
            Settings.from_env(env)

    @pytest.mark.parametrize(
        ("host", "address"), [("[::1]", "[::1]:8080"), ("::", "[::]:8080"), ("127.0.0.1", "127.0.0.1:8080")]
    )
    def test_an_ipv6_host_may_be_bracketed_and_is_shown_bracketed(self, host: str, address: str) -> None:
        """HOST=[::1] is the address ::1, and the address is written as in a URL."""
        settings = Settings.from_env({"HOST": host})
        assert settings.host == host.strip("[]") and settings.address == address

    def test_the_help_table_and_the_handlers_defaults_are_the_settings_defaults(self) -> None:
        """Each default --help shows reads back as the Settings default, and RateLimitConfig's default
        policies are the service's: the three places say one thing."""
        for name, default, _ in SETTINGS_HELP:
            if default in ("unset", "as for addresses"):
                continue
            environ, expected = {name: default}, Settings()
            if name.endswith(("_LIMIT", "_WINDOW")):  # read only with a window algorithm
                environ["RATE_LIMIT_ALGORITHM"] = "fixed_window"
                expected = Settings(ip_algorithm="fixed_window", user_algorithm="fixed_window")
            assert Settings.from_env(environ) == expected, name
        assert default_policies() == {"ip": Settings().ip_policy, "user": Settings().user_policy}

    def test_a_bad_secret_is_not_echoed(self) -> None:
        """The error for a short JWT_SECRET does not print the secret."""
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({"JWT_SECRET": "hunter2"})
        assert "hunter2" not in str(raised.value)


class TestAlgorithms:
    def test_the_token_bucket_is_the_default(self) -> None:
        """Nothing set: both identities get today's token buckets."""
        settings = Settings.from_env({})
        assert (settings.ip_policy, settings.user_policy) == (Policy(60, 1.0, name="ip"), Policy(120, 2.0, name="user"))

    @pytest.mark.parametrize(("name", "kind"), [("fixed_window", FixedWindow), ("sliding_window", SlidingWindow)])
    def test_a_window_algorithm_reads_limit_and_window(self, name: str, kind: type) -> None:
        """RATE_LIMIT_ALGORITHM chooses the users' algorithm too, unless its USER_ form says otherwise."""
        settings = Settings.from_env(
            {"RATE_LIMIT_ALGORITHM": name, "RATE_LIMIT_LIMIT": "1000", "RATE_LIMIT_WINDOW": "3600"}
        )
        assert settings.ip_policy == kind(1000, 3600, name="ip")
        assert settings.user_policy == kind(120, 60, name="user")

    def test_each_identity_has_its_own_algorithm(self) -> None:
        """USER_ALGORITHM overrides the algorithm for users only, with its own shape variables."""
        settings = Settings.from_env(
            {
                "RATE_LIMIT_ALGORITHM": "SLIDING_WINDOW",
                "RATE_LIMIT_USER_ALGORITHM": "token_bucket",
                "RATE_LIMIT_USER_CAPACITY": "50",
                "RATE_LIMIT_USER_WINDOW": "",  # empty is unset
            }
        )
        assert settings.ip_policy == SlidingWindow(60, 60, name="ip")
        assert settings.user_policy == Policy(50, 2.0, name="user")

    def test_an_inherited_algorithm_is_named_as_such(self) -> None:
        """A users' shape variable that does not fit the algorithm inherited from RATE_LIMIT_ALGORITHM says
        where that algorithm came from."""
        environ = {"RATE_LIMIT_ALGORITHM": "fixed_window", "RATE_LIMIT_USER_CAPACITY": "9"}
        with pytest.raises(
            SettingsError, match=r"RATE_LIMIT_USER_ALGORITHM \(RATE_LIMIT_ALGORITHM's\) is fixed_window"
        ):
            Settings.from_env(environ)

    @pytest.mark.parametrize(
        ("environ", "named", "wanted"),
        [
            ({"RATE_LIMIT_LIMIT": "100"}, "RATE_LIMIT_LIMIT", "RATE_LIMIT_CAPACITY"),
            (
                {"RATE_LIMIT_ALGORITHM": "fixed_window", "RATE_LIMIT_REFILL_RATE": "2"},
                "RATE_LIMIT_REFILL_RATE",
                "RATE_LIMIT_LIMIT",
            ),
            (
                {"RATE_LIMIT_USER_ALGORITHM": "sliding_window", "RATE_LIMIT_USER_CAPACITY": "9"},
                "RATE_LIMIT_USER_CAPACITY",
                "RATE_LIMIT_USER_LIMIT",
            ),
        ],
    )
    def test_a_variable_of_another_algorithm_is_refused(self, environ: dict[str, str], named: str, wanted: str) -> None:
        """A shape variable the chosen algorithm does not read stops the start, naming both: a limit set
        and silently unused would be worse."""
        with pytest.raises(SettingsError, match=named) as raised:
            Settings.from_env(environ)
        assert wanted in str(raised.value)

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("RATE_LIMIT_LIMIT", "0"),
            ("RATE_LIMIT_LIMIT", "2.5"),
            ("RATE_LIMIT_WINDOW", "0"),
            ("RATE_LIMIT_WINDOW", "1e-300"),  # floor(now / window) overflowed: a 500 on every request
            ("RATE_LIMIT_WINDOW", "2e9"),
            ("RATE_LIMIT_USER_WINDOW", "soon"),
        ],
    )
    def test_a_bad_window_value_is_refused(self, name: str, value: str) -> None:
        """Limits are whole numbers from 1; windows numbers of seconds in (0, 1e9]."""
        with pytest.raises(SettingsError, match=name) as raised:
            Settings.from_env({"RATE_LIMIT_ALGORITHM": "fixed_window", name: value})
        assert "expected" in str(raised.value)


class TestAlgorithmNames:
    @pytest.mark.parametrize("name", sorted(BY_NAME))
    def test_every_algorithm_makes_its_own_policy(self, name: str) -> None:
        """Each algorithm the settings know makes a policy of its own class, from its own shape's settings."""
        settings = Settings(ip_algorithm=name, user_algorithm=name)
        for policy in (settings.ip_policy, settings.user_policy):
            assert type(policy) is BY_NAME[name].policy_type

    def test_an_unknown_name_is_refused_not_a_token_bucket(self) -> None:
        """Settings made in code with a name no algorithm has: a SettingsError naming it (it silently
        became a token bucket)."""
        with pytest.raises(SettingsError, match="RATE_LIMIT_USER_ALGORITHM='gcra' is not valid"):
            _ = Settings(user_algorithm="gcra").user_policy


class TestPolicyFile:
    def test_the_file_is_named_and_the_environment_policies_stay_unread(self) -> None:
        """RATE_LIMIT_CONFIG is kept as given; without it there is no file."""
        assert Settings.from_env({"RATE_LIMIT_CONFIG": "/etc/limits.toml"}).policy_file == "/etc/limits.toml"
        assert Settings.from_env({}).policy_file is None

    @pytest.mark.parametrize(
        "variable",
        ["RATE_LIMIT_ALGORITHM", "RATE_LIMIT_CAPACITY", "RATE_LIMIT_USER_REFILL_RATE", "RATE_LIMIT_USER_WINDOW"],
    )
    def test_a_policy_variable_beside_the_file_is_refused(self, variable: str) -> None:
        """A policy variable set beside RATE_LIMIT_CONFIG would be silently unused: refused, naming both."""
        value = "fixed_window" if variable.endswith("ALGORITHM") else "10"
        with pytest.raises(SettingsError, match=rf"^{variable} is set, but RATE_LIMIT_CONFIG='/l.toml' gives"):
            Settings.from_env({"RATE_LIMIT_CONFIG": "/l.toml", variable: value})

    @pytest.mark.parametrize(("raw", "interval"), [("0", 0.0), ("0.0", 0.0), ("0.5", 0.5), ("3600", 3600.0)])
    def test_the_check_interval_is_seconds_or_0_for_sighup_only(self, raw: str, interval: float) -> None:
        assert Settings.from_env({"RATE_LIMIT_CONFIG_INTERVAL": raw}).policy_check_interval == interval

    @pytest.mark.parametrize("raw", ["-1", "0.01", "3601", "nan", "inf", ".", "often"])
    def test_a_bad_check_interval_is_refused(self, raw: str) -> None:
        with pytest.raises(SettingsError, match=r"^RATE_LIMIT_CONFIG_INTERVAL=.* expected 0 \(reload on SIGHUP"):
            Settings.from_env({"RATE_LIMIT_CONFIG_INTERVAL": raw})

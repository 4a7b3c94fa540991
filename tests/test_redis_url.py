"""Redis URLs: what check_url refuses before anything connects, and what a log may show of one."""

from __future__ import annotations

import pytest

from tornado_rate_limiter.limiter.redis_url import check_url, redacted


class TestCheckUrl:
    @pytest.mark.parametrize(
        ("url", "words"),
        [
            ("rediss://h:6379/0?ssl_cert_reqs=bogus", "ssl_cert_reqs must be none, optional or required"),
            ("rediss://h:6379/0?ssl_ca_certs=/no/such/ca.crt", "ssl_ca_certs=/no/such/ca.crt is no file"),
            ("redis+cluster://a:1,b:2?db=3", "database 0 only"),
            ("redis://h:6379/0?bogus=1", "unknown query parameter 'bogus'"),
            ("redis://h:6379/x1", "the database must be a whole number"),
            ("redis://h:6379/0?ssl_cert_reqs=none", "ssl_\\* parameters need a rediss:// URL"),
        ],
    )
    def test_a_url_that_would_fail_later_is_refused_now(self, url: str, words: str) -> None:
        """Values redis-py would accept and then fail on (or silently ignore) are refused, saying why."""
        with pytest.raises(ValueError, match=words):
            check_url(url)

    @pytest.mark.parametrize(
        "url",
        [
            "rediss://h:6379/0?ssl_cert_reqs=none",
            "redis+cluster://a:1?db=0",
            "redis://h:6379/2?client_name=api",
            "redis://h:6379/0?client_name=no_ssl_x",  # "ssl_" in a value names no parameter
        ],
    )
    def test_good_urls_pass(self, url: str) -> None:
        """The forms the README documents are accepted, whatever their values hold."""
        check_url(url)


class TestRedacted:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("redis://app:hunter2@h:6379/0", "redis://app:***@h:6379/0"),
            ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
            ("redis://h:6379/0?password=hunter2&client_name=api", "redis://h:6379/0?password=***&client_name=api"),
            ("redis://h:6379/0", "redis://h:6379/0"),
        ],
    )
    def test_the_password_is_never_shown(self, url: str, shown: str) -> None:
        """In the credentials or as ?password=, the password becomes ***; the rest stays as written."""
        assert redacted(url) == shown

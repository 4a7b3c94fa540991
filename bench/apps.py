"""The servers the service is compared with over HTTP: `python -m bench.apps <kind>`, one of KINDS.

bare: Tornado's hello world, the ceiling for any handler. bare_headers: the same, also setting the five
rate-limit headers ours sends, with fixed values (what the headers alone cost). bare_streamed: bare_headers
in Tornado's streaming mode (stream_request_body), as ours is so that it checks before the body is read.
limits: the same app whose prepare() checks a limit with the `limits` package (async moving window on
$REDIS_URL, keyed by the remote address) and answers 429 when it is denied. throttled: likewise with
throttled-py's Redis token bucket. ours: the same hello world as a RateLimitedHandler of this project, as a
library user mounts it (a plain tornado Application, the limit on $REDIS_URL or, unset, in memory): the
same response as bare's, plus the rate-limit headers. All read PORT, HOST, REDIS_URL and
RATE_LIMIT_CAPACITY (per second).
Both log server errors (5xx) only, as the service does with ACCESS_LOG=errors (the benchmark sets it):
the comparison measures the limiter, not the access log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import limits
import limits.aio.storage
import limits.aio.strategies
import throttled.asyncio
import tornado.web

from tornado_rate_limiter.handlers import RateLimitConfig, RateLimitedHandler
from tornado_rate_limiter.limiter import LocalBackend, Policy, RateLimiter, RedisBackend


class HelloHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("Hello, world")


class HealthHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("ok")


class HeadersHelloHandler(HelloHandler):
    def get(self) -> None:
        self.set_header("RateLimit-Policy", '"ip";q=1000000000;w=1')
        self.set_header("RateLimit", '"ip";r=999999999;t=0')
        self.set_header("X-RateLimit-Limit", "1000000000")
        self.set_header("X-RateLimit-Remaining", "999999999")
        self.set_header("X-RateLimit-Reset", "0")
        self.write("Hello, world")


@tornado.web.stream_request_body
class StreamedHeadersHelloHandler(HeadersHelloHandler):
    """HeadersHelloHandler in Tornado's streaming mode, as RateLimitedHandler is (to check before the body
    is read): what that mode alone costs, the floor for any limiter that checks before the body."""

    def data_received(self, chunk: bytes) -> None:
        pass


class ThrottledHelloHandler(HelloHandler):
    async def prepare(self) -> None:
        limiter: throttled.asyncio.Throttled = self.settings["limiter"]
        if (await limiter.limit(self.request.remote_ip or "unknown", cost=1)).limited:
            self.set_status(429)
            self.finish("Too Many Requests")


class LimitedHelloHandler(HelloHandler):
    async def prepare(self) -> None:
        limiter: limits.aio.strategies.RateLimiter = self.settings["limiter"]
        if not await limiter.hit(self.settings["item"], self.request.remote_ip or "unknown"):
            self.set_status(429)
            self.finish("Too Many Requests")


class OurLimitedHelloHandler(RateLimitedHandler):
    def get(self) -> None:
        self.write("Hello, world")


class Application(tornado.web.Application):
    def log_request(self, handler: tornado.web.RequestHandler) -> None:
        if handler.get_status() >= 500:
            super().log_request(handler)


KINDS = ("bare", "bare_headers", "bare_streamed", "ours", "limits", "throttled")


def make_app(kind: str) -> Application:
    if kind == "bare":
        return Application([(r"/", HelloHandler), (r"/health", HealthHandler)])
    if kind == "bare_headers":
        return Application([(r"/", HeadersHelloHandler), (r"/health", HealthHandler)])
    if kind == "bare_streamed":
        return Application([(r"/", StreamedHeadersHelloHandler), (r"/health", HealthHandler)])
    if kind == "throttled":
        high = int(os.environ.get("RATE_LIMIT_CAPACITY", "60"))
        store = throttled.asyncio.store.RedisStore(server=os.environ["REDIS_URL"], options={})
        quota = throttled.asyncio.rate_limiter.per_sec(high, burst=high)
        limiter = throttled.asyncio.Throttled(using="token_bucket", quota=quota, store=store)
        return Application([(r"/", ThrottledHelloHandler), (r"/health", HealthHandler)], limiter=limiter)
    if kind == "ours":
        capacity = float(os.environ.get("RATE_LIMIT_CAPACITY", "60"))
        redis_url = os.environ.get("REDIS_URL")
        backend = RedisBackend.from_url(redis_url, timeout=1.0) if redis_url else LocalBackend()
        config = RateLimitConfig(limiter=RateLimiter(backend), policies={"ip": Policy(capacity, capacity, name="ip")})
        return Application([(r"/", OurLimitedHelloHandler), (r"/health", HealthHandler)], rate_limit=config)
    url = os.environ["REDIS_URL"].replace("redis://", "async+redis://")
    storage = limits.aio.storage.RedisStorage(url, implementation="redispy")  # redis.asyncio, as the service
    return Application(
        [(r"/", LimitedHelloHandler), (r"/health", HealthHandler)],
        limiter=limits.aio.strategies.MovingWindowRateLimiter(storage),
        item=limits.RateLimitItemPerSecond(int(os.environ.get("RATE_LIMIT_CAPACITY", "60"))),
    )


async def main(kind: str) -> None:
    make_app(kind).listen(int(os.environ.get("PORT", "8080")), os.environ.get("HOST", "127.0.0.1"))
    await asyncio.Event().wait()  # until the benchmark terminates the process


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in KINDS:
        sys.exit(f"usage: python -m bench.apps {'|'.join(KINDS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(main(sys.argv[1]))

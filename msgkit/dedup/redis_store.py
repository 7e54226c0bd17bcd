"""`redis://[:password@]host:6379/db[?prefix=...]` (or `rediss://`): shared by every host.

One Redis key per (scope, key): `c:<token>` while claimed, with the lease as its expiry,
then `d:<token>` with the TTL as its expiry, so Redis forgets both by itself. Each
operation is one Lua script, so the read and the write it decides on are atomic.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from msgkit.dedup.store import (
    DONE,
    ClaimResult,
    ClaimStatus,
    Scope,
    StoreUnavailableError,
    new_token,
)
from msgkit.url import redact

DEFAULT_PREFIX = "msgkit:dedup:"

_CLAIM = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], 'c:' .. ARGV[1], 'PX', ARGV[2])
  return {1, 0}
end
if string.sub(v, 1, 2) == 'd:' then return {2, 0} end
return {3, redis.call('PTTL', KEYS[1])}
"""

# Done unless another token holds a live claim or finished it; a vanished key means our
# lease expired and nobody took over, so marking it done is still right.
_COMPLETE = """
local v = redis.call('GET', KEYS[1])
if v and v ~= 'c:' .. ARGV[1] and v ~= 'd:' .. ARGV[1] then return 0 end
redis.call('SET', KEYS[1], 'd:' .. ARGV[1], 'PX', ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == 'c:' .. ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, **client_options: Any) -> None:
        """`url` is handed to redis-py (`redis.asyncio.Redis.from_url`) with `client_options`."""
        self.prefix = prefix
        self._url = url
        options = {"socket_connect_timeout": 5.0, "socket_timeout": 5.0, **client_options}
        self._client = aioredis.Redis.from_url(url, **options)
        self._claim = self._client.register_script(_CLAIM)
        self._complete = self._client.register_script(_COMPLETE)
        self._release = self._client.register_script(_RELEASE)

    @property
    def native(self) -> Any:
        """The redis-py client."""
        return self._client

    def redis_key(self, scope: Scope, key: str) -> str:
        # Quoting keeps "/" unique as the separator whatever the names contain.
        return f"{self.prefix}{quote(scope.topic, safe='')}/{quote(scope.group, safe='')}/" \
               f"{quote(key, safe='')}"

    async def claim(self, scope: Scope, key: str, lease_s: float) -> ClaimResult:
        token = new_token()
        status, pttl = await self._call(self._claim, scope, key, token, _ms(lease_s))
        if status == 1:
            return ClaimResult(ClaimStatus.ACQUIRED, token)
        if status == 2:
            return DONE
        return ClaimResult(ClaimStatus.IN_PROGRESS, retry_after=max(0, pttl) / 1000)

    async def complete(self, scope: Scope, key: str, token: str, ttl_s: float) -> bool:
        return bool(await self._call(self._complete, scope, key, token, _ms(ttl_s)))

    async def release(self, scope: Scope, key: str, token: str) -> None:
        await self._call(self._release, scope, key, token)

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, script: Any, scope: Scope, key: str, *args: object) -> Any:
        try:
            return await script(keys=[self.redis_key(scope, key)], args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(
                f"Redis dedup store {redact(self._url)} failed: {redact(str(exc))}"
            ) from None  # the cause could carry connection details; its text is above

    def __repr__(self) -> str:
        return f"<RedisStore {redact(self._url)} prefix={self.prefix!r}>"


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))

"""open-ethereum-pool's API for each Ethereum-family pool, under
``/oep/<pool>/api/``: ``stats``, ``miners``, ``blocks``, ``payments`` and
``accounts/<login>``, in OEP's JSON shapes, so OEP's own front end works
against the pool unchanged (its ``ApiUrl`` set to ``…/oep/<pool>``).

Each answer is read from Redis (one Lua call) and kept for
``web.stats_interval`` seconds, as OEP keeps its snapshot; an account is
kept as long, per login.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.iweb import IRequest

from nomp.config import EthPoolConfig
from nomp.eth.logins import LoginError, check_address
from nomp.store.client import RedisClient
from nomp.store.oepschema import OepKeys
from nomp.web.oepstats import (
    block_document,
    miners_document,
    numeric,
    parse_share,
    payment_document,
    workers_document,
)

BLOCKS_SHOWN = 50  # matured blocks in /api/blocks (OEP's `blocks`)
PAYMENTS_SHOWN = 50  # payments in /api/payments and an account's (OEP's `payments`)
MAX_ACCOUNTS_KEPT = 10_000

_STATS = """
local window_start = ARGV[1]
return {
  redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]),
  redis.call('ZRANGEBYSCORE', KEYS[3], window_start, '+inf', 'WITHSCORES'),
  redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[5]), redis.call('ZCARD', KEYS[6]),
}
"""
_BLOCKS = """
return {
  redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES'), redis.call('ZCARD', KEYS[1]),
  redis.call('ZREVRANGE', KEYS[2], 0, -1, 'WITHSCORES'),
  redis.call('ZREVRANGE', KEYS[3], 0, -1, 'WITHSCORES'),
}
"""
_PAYMENTS = """
return {
  redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES'), redis.call('ZCARD', KEYS[1]),
}
"""
_ACCOUNT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return {
  redis.call('HGETALL', KEYS[1]),
  redis.call('ZREVRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1, 'WITHSCORES'), redis.call('ZCARD', KEYS[2]),
  redis.call('HGET', KEYS[3], ARGV[3]) or '0',
  redis.call('ZRANGEBYSCORE', KEYS[4], ARGV[1], '+inf', 'WITHSCORES'),
}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[Any]) -> list[tuple[str, str]]:
    return [(_text(a), _text(b)) for a, b in zip(flat[::2], flat[1::2], strict=True)]


class OepApi:
    """One Ethereum-family pool's OEP API documents, read from Redis and kept a while."""

    log = Logger()

    def __init__(
        self, config: EthPoolConfig, redis: Callable[[], RedisClient | None], clock: IReactorTime, keep: float
    ) -> None:
        self.config = config
        self.keys = OepKeys.for_coin(config.coin.name)
        self._redis = redis
        self._clock = clock
        self._keep = keep
        self._kept: dict[str, tuple[float, bytes]] = {}

    async def document(self, name: str) -> bytes | None:
        """The JSON of ``stats``, ``miners``, ``blocks``, ``payments`` or
        ``accounts/<login>``; None for anything else (or an unknown account)."""
        now = self._clock.seconds()
        kept = self._kept.get(name)
        if kept is not None and now - kept[0] < self._keep:
            return kept[1]
        document = await self._read(name, now)
        if document is None:
            return None
        body = json.dumps(document, separators=(",", ":")).encode()
        if len(self._kept) >= MAX_ACCOUNTS_KEPT:
            self._kept = {k: v for k, v in self._kept.items() if now - v[0] < self._keep}
        self._kept[name] = (now, body)
        return body

    async def _eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        client = self._redis()
        if client is None:
            raise ConnectionError("Redis is not connected")
        return await client.eval(script, keys, args)

    async def _read(self, name: str, now: float) -> dict[str, Any] | None:
        keys, window = self.keys, self.config.hashrate_window
        if name in ("stats", "miners"):
            reply = await self._eval(
                _STATS,
                [
                    keys.nodes,
                    keys.stats,
                    keys.hashrate,
                    keys.blocks_matured,
                    keys.blocks_immature,
                    keys.blocks_candidates,
                ],
                [repr(now - window)],
            )
            shares = [s for m, score in _pairs(reply[2]) if (s := parse_share(m, float(score))) is not None]
            miners = miners_document(shares, now, window)
            if name == "miners":
                return miners
            return {
                "now": int(now * 1000),
                "nodes": _nodes(dict(_pairs(reply[0]))),
                "stats": numeric(
                    {k: v for k, v in _pairs(reply[1]) if k in ("roundShares", "lastBlockFound")}
                ),
                "hashrate": miners["hashrate"],
                "minersTotal": miners["minersTotal"],
                "maturedTotal": int(reply[3]),
                "immatureTotal": int(reply[4]),
                "candidatesTotal": int(reply[5]),
            }
        if name == "blocks":
            reply = await self._eval(
                _BLOCKS, [keys.blocks_matured, keys.blocks_immature, keys.blocks_candidates], [BLOCKS_SHOWN]
            )
            matured = _blocks(reply[0], candidate=False)
            immature = _blocks(reply[2], candidate=False)
            candidates = _blocks(reply[3], candidate=True)
            return {
                "matured": matured,
                "maturedTotal": int(reply[1]),
                "immature": immature,
                "immatureTotal": len(immature),
                "candidates": candidates,
                "candidatesTotal": len(candidates),
            }
        if name == "payments":
            reply = await self._eval(_PAYMENTS, [keys.payments_all], [PAYMENTS_SHOWN])
            payments = [p for m, s in _pairs(reply[0]) if (p := payment_document(m, float(s))) is not None]
            return {"payments": payments, "paymentsTotal": int(reply[1])}
        if name.startswith("accounts/"):
            return await self._account(name.removeprefix("accounts/"), now)
        return None

    async def _account(self, login: str, now: float) -> dict[str, Any] | None:
        try:
            login = check_address(login)
        except LoginError:
            return None
        keys = self.keys
        large_window = self.config.hashrate_expiration
        reply = await self._eval(
            _ACCOUNT,
            [keys.miner(login), keys.payments_of(login), keys.round_current, keys.hashrate_of(login)],
            [repr(now - large_window), PAYMENTS_SHOWN, login],
        )
        if not reply:
            return None
        payments = [
            p for m, s in _pairs(reply[1]) if (p := payment_document(m, float(s), login=login)) is not None
        ]
        shares = [
            s for m, score in _pairs(reply[4]) if (s := parse_share(m, float(score), login=login)) is not None
        ]
        return {
            "stats": numeric(dict(_pairs(reply[0]))),
            "payments": payments,
            "paymentsTotal": int(reply[2]),
            "roundShares": int(_text(reply[3])),
            **workers_document(shares, now, self.config.hashrate_window, large_window),
            "pageSize": PAYMENTS_SHOWN,
        }


def _nodes(fields: Mapping[str, str]) -> list[dict[str, str]]:
    names = sorted({field.rsplit(":", 1)[0] for field in fields})
    return [
        {part: fields.get(f"{name}:{part}", "") for part in ("name", "height", "difficulty", "lastBeat")}
        for name in names
    ]


def _blocks(flat: Sequence[Any], candidate: bool) -> list[dict[str, Any]]:
    blocks = []
    for member, score in _pairs(flat):
        block = block_document(member, int(float(score)), candidate)
        if block is not None:
            blocks.append(block)
    return blocks


class OepApiResource(resource.Resource):
    """``/oep/<pool>/api/<document>`` for every Ethereum-family pool."""

    isLeaf = True
    log = Logger()

    def __init__(self, apis: Mapping[str, OepApi]) -> None:
        """``apis``: each pool's by name, read at each request: its owner keeps it
        in step with the pools a reload adds and removes (nomp.web.service)."""
        super().__init__()
        self._apis = apis

    def render_GET(self, request: IRequest) -> bytes | int:
        path = [_text(p) for p in getattr(request, "postpath", None) or []]
        api = self._apis.get(path[0]) if len(path) >= 3 and path[1] == "api" else None
        request.setHeader(b"Access-Control-Allow-Origin", b"*")
        request.setHeader(b"Cache-Control", b"no-cache")
        if api is None:
            request.setResponseCode(404)
            return b""
        reading = defer.Deferred.fromCoroutine(api.document("/".join(path[2:])))

        def answer(body: bytes | None) -> None:
            if body is None:
                request.setResponseCode(404)
                request.write(b"")
            else:
                request.setHeader(b"Content-Type", b"application/json")
                request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            self.log.failure("OEP API {path} not answered", failure, path="/".join(path))
            request.setResponseCode(503)
            request.finish()

        reading.addCallbacks(answer, failed)
        return server.NOT_DONE_YET

"""The API's routes, every answer taken from the collector's last snapshot."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from nomp.config import PortConfig
from nomp.config.load import listen_address
from nomp.web.collector import Snapshot
from nomp.web.openapi import DOCUMENT
from nomp.web.stats import PoolStats, block_counts

MAX_PER_PAGE = 500
DEFAULT_PER_PAGE = 50
_OPENAPI_JSON = json.dumps(DOCUMENT, separators=(",", ":")).encode()


def _port(port: PortConfig) -> dict[str, Any]:
    address = listen_address(port.listen)
    vardiff = port.vardiff
    return {
        "port": address[1] if address else None,
        "difficulty": port.diff,
        "vardiff": None if vardiff is None else {"min": vardiff.min_diff, "max": vardiff.max_diff},
        "tls": port.listen.startswith("ssl:"),
    }


def pool_document(stats: PoolStats) -> dict[str, Any]:
    """One pool as /api/pools lists it."""
    pool = stats.pool
    return {
        "name": pool.name,
        "coin": pool.coin.name,
        "symbol": pool.coin.symbol,
        "algorithm": pool.coin.algorithm,
        "hashrate": stats.hashrate,
        "miners": len(stats.miners),
        "workers": len(stats.workers),
        "blocks": block_counts(stats.blocks),
        "ports": [_port(p) for p in pool.ports],
    }


class BadRequest(Exception):
    """A query parameter the API cannot use; its message goes back to the client."""


def _integer_parameter(request: IRequest, name: str, default: int) -> int:
    values = request.args.get(name.encode()) if request.args else None
    if not values:
        return default
    try:
        return int(values[0])
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None


class WebApp:
    """The Klein application; ``snapshot`` returns the collector's current one."""

    app = Klein()

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        metrics: Callable[[], tuple[bytes, str]] | None = None,
        pages: IResource | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._metrics = metrics  # () -> (Prometheus text, its content type)
        self._pages = pages  # the site's pages, for every path outside /api and /metrics

    @staticmethod
    def _json(request: IRequest, body: bytes, code: int = 200) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        return body

    def _error(self, request: IRequest, code: int, message: str) -> bytes:
        return self._json(request, json.dumps({"error": message}).encode(), code)

    @app.route("/api/stats", methods=["GET"])
    def stats(self, request: IRequest) -> bytes:
        return self._json(request, self._snapshot().stats_json)

    @app.route("/api/pool_stats", methods=["GET"])
    def pool_stats(self, request: IRequest) -> bytes:
        return self._json(request, self._snapshot().history_json)

    @app.route("/api/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        return self._json(request, _OPENAPI_JSON)

    @app.route("/api/pools", methods=["GET"])
    def pools(self, request: IRequest) -> bytes:
        body = [pool_document(p) for p in self._snapshot().pools]
        return self._json(request, json.dumps(body).encode())

    @app.route("/api/pools/<string:name>", methods=["GET"])
    def pool(self, request: IRequest, name: str) -> bytes:
        stats = self._snapshot().pool(name)
        if stats is None:
            return self._error(request, 404, f"no pool named {name!r}")
        return self._json(request, json.dumps(pool_document(stats)).encode())

    @app.route("/api/pools/<string:name>/miners", methods=["GET"])
    def miners(self, request: IRequest, name: str) -> bytes:
        try:
            page = _integer_parameter(request, "page", 0)
            per_page = _integer_parameter(request, "per_page", DEFAULT_PER_PAGE)
        except BadRequest as e:
            return self._error(request, 400, str(e))
        if page < 0:
            return self._error(request, 400, "page must be >= 0")
        if not 1 <= per_page <= MAX_PER_PAGE:
            return self._error(request, 400, f"per_page must be 1-{MAX_PER_PAGE}")
        stats = self._snapshot().pool(name)
        if stats is None:
            return self._error(request, 404, f"no pool named {name!r}")
        chosen = stats.miners[page * per_page : (page + 1) * per_page]
        body = {
            "total": len(stats.miners),
            "page": page,
            "per_page": per_page,
            "items": [
                {
                    "address": m.address,
                    "hashrate": m.hashrate,
                    "workers": m.workers,
                    "shares": m.shares,
                    "invalidShares": m.invalid_shares,
                }
                for m in chosen
            ],
        }
        return self._json(request, json.dumps(body).encode())

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        if self._metrics is None:
            return self._error(request, 404, "metrics are not served")
        body, content_type = self._metrics()
        request.setHeader(b"Content-Type", content_type.encode())
        return body

    @app.route("/", branch=True)
    def page(self, request: IRequest) -> IResource | bytes:
        if self._pages is None:
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"Not found\n"
        return self._pages

    @app.route("/api/", branch=True)
    def unknown(self, request: IRequest) -> bytes:
        return self._error(request, 404, f"no such API path: {request.path.decode(errors='replace')}")

"""The API's routes, every answer taken from the collector's last snapshot.

Ethereum-family pools answer in the Bitcoin family's shapes, amounts in
wei where those are in satoshis (a pool's ``unit`` and ``decimals`` say
which), with the fields that only one family has (an uncle's) beside them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from klein import Klein
from twisted.internet import defer
from twisted.web import http
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from nomp.config import PortConfig
from nomp.config.load import listen_address
from nomp.payments.split import payout_address
from nomp.web.collector import BLOCK_STATUSES, Snapshot
from nomp.web.live import LiveStream
from nomp.web.openapi import DOCUMENT
from nomp.web.profitapi import ProfitView, profit_document
from nomp.web.stats import BlockInfo, PaymentInfo, PoolStats, WorkerStats, block_counts, miner_address

MAX_PER_PAGE = 500
DEFAULT_PER_PAGE = 50
MINER_PAYMENTS = 50  # the newest payments shown with a miner
_OPENAPI_JSON = json.dumps(DOCUMENT, separators=(",", ":")).encode()
Item = TypeVar("Item")


def port_document(port: PortConfig) -> dict[str, Any]:
    """One port of a pool as /api/pools lists it.

    The number is the one the port's ``listen`` names (``tcp:``, ``tcp6:``,
    ``ssl:``). A ``systemd:`` port names a socket, not a number: the socket
    unit holds it, and the process serving the web (a ``--role web`` one
    among them) need not be the one given the socket, so it is null, as
    for a ``unix:`` port.
    """
    address = listen_address(port.listen)
    vardiff = port.vardiff
    return {
        "port": address[1] if address else None,
        "difficulty": port.diff,
        "vardiff": None if vardiff is None else {"min": vardiff.min_diff, "max": vardiff.max_diff},
        "tls": port.listen.startswith("ssl:"),
        "protocol": port.protocol,
    }


def pool_document(stats: PoolStats) -> dict[str, Any]:
    """One pool as /api/pools lists it."""
    pool = stats.pool
    network = stats.network_info
    last = stats.last_block
    return {
        "name": pool.name,
        "coin": pool.coin.name,
        "symbol": pool.coin.symbol,
        "algorithm": stats.algorithm,
        "family": stats.family,
        "unit": stats.unit.name,
        "decimals": stats.unit.decimals,
        "hashrate": stats.hashrate,
        "miners": len(stats.miners),
        "workers": len(stats.workers),
        "blocks": block_counts(stats.blocks),
        "ports": [port_document(p) for p in pool.ports],
        "network": None
        if network is None
        else {"height": network.height, "difficulty": network.difficulty, "hashrate": network.hashrate},
        "lastBlock": None
        if last is None
        else {"hash": last.hash, "height": last.height, "time": last.time, "status": last.status},
    }


def block_document(block: BlockInfo) -> dict[str, Any]:
    return {
        "hash": block.hash,
        "height": block.height,
        "txid": block.txid,
        "worker": block.worker,
        "miner": block.miner,
        "time": block.time,
        "reward": block.reward,
        "status": block.status,
        "effort": block.effort,
        "solo": block.solo,
        "uncle": block.uncle,
        "nephewHeight": block.nephew_height,
    }


def payment_document(payment: PaymentInfo) -> dict[str, Any]:
    return {
        "id": payment.id,
        "txid": payment.txid,
        "time": payment.time,
        "total": payment.total,
        "fee": payment.fee,
        "recipients": len(payment.amounts),
    }


def worker_document(worker: WorkerStats) -> dict[str, Any]:
    return {
        "name": worker.name,
        "hashrate": worker.hashrate,
        "shares": worker.shares,
        "invalidShares": worker.invalid_shares,
        "lastShare": worker.last_share,
        "difficulty": worker.difficulty,
    }


def miner_document(stats: PoolStats, address: str) -> dict[str, Any] | None:
    """Everything known of ``address`` in one pool, or None if nothing is."""
    workers = [w for w in stats.workers if payout_address(w.name) == address]
    balances = stats.balances
    payments = [(p, p.amounts[address]) for p in stats.payments if address in p.amounts]
    history = stats.miner_history.get(address, ())
    known = (balances.immature, balances.balance, balances.paid)
    if not workers and not payments and not history and not any(address in held for held in known):
        return None
    return {
        "address": address,
        "hashrate": sum(w.hashrate for w in workers),
        "shares": sum(w.shares for w in workers),
        "invalidShares": sum(w.invalid_shares for w in workers),
        "workers": [worker_document(w) for w in workers],
        "immature": balances.immature.get(address, 0),
        "balance": balances.balance.get(address, 0),
        "paid": balances.paid.get(address, 0),
        "payments": [{"txid": p.txid, "time": p.time, "amount": amount} for p, amount in payments][
            :MINER_PAYMENTS
        ],
        "history": [[at, rate] for at, rate in history],
    }


def network_document(stats: PoolStats) -> dict[str, Any]:
    return {
        "daemons": [
            {
                "name": d.name,
                "ok": d.ok,
                "height": d.height,
                "difficulty": d.difficulty,
                "hashrate": d.hashrate,
                "error": d.error,
            }
            for d in stats.network
        ]
    }


class BadRequest(Exception):
    """A query parameter the API cannot use; its message goes back to the client."""


class NotFound(Exception):
    """No such pool or miner; its message goes back to the client with a 404."""


def _parameter(request: IRequest, name: str) -> str | None:
    values = request.args.get(name.encode()) if request.args else None
    return values[0].decode(errors="replace") if values else None


def _integer_parameter(request: IRequest, name: str, default: int) -> int:
    value = _parameter(request, name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None


def _page_of(request: IRequest, items: Sequence[Item], render: Callable[[Item], Any]) -> dict[str, Any]:
    """One page of ``items`` as the ``page`` and ``per_page`` parameters ask."""
    page = _integer_parameter(request, "page", 0)
    per_page = _integer_parameter(request, "per_page", DEFAULT_PER_PAGE)
    if page < 0:
        raise BadRequest("page must be >= 0")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise BadRequest(f"per_page must be 1-{MAX_PER_PAGE}")
    chosen = items[page * per_page : (page + 1) * per_page]
    return {"total": len(items), "page": page, "per_page": per_page, "items": [render(i) for i in chosen]}


class _SnapshotBody(Resource):
    """GET of one pre-encoded body of the snapshot, with no routing: the hottest paths."""

    isLeaf = True

    def __init__(self, body: Callable[[], bytes]) -> None:
        super().__init__()
        self._body = body

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return self._body()  # twisted.web sets its Content-Length


class WebSite(Site):
    """The Site of a WebApp: the paths in ``direct`` are answered before any routing."""

    def __init__(self, app: WebApp) -> None:
        super().__init__(app.app.resource())
        self._direct = app.direct_paths()
        self.noisy = False

    def getResourceFor(self, request: Request) -> IResource:
        direct = self._direct.get(request.path) if request.method == b"GET" else None
        if direct is not None:
            request.site = self  # as Site.getResourceFor does
            return direct
        return cast(IResource, super().getResourceFor(request))

    def log(self, request: http.Request) -> None:
        """No access log: a line per request in the pool's log would bury it
        at a few thousand requests a second, and format and write more than
        answering costs. A proxy in front can keep one."""


class WebApp:
    """The Klein application; ``snapshot`` returns the collector's current one."""

    app = Klein()

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        metrics: Callable[[], tuple[bytes, str]] | None = None,
        pages: IResource | None = None,
        live: LiveStream | None = None,
        oep: IResource | None = None,
        profit: ProfitView | None = None,
        switching: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._switching = switching  # each switch's documents; None: no switching section
        self._profit = profit  # profit switching's state; None: not configured
        self._oep = oep  # open-ethereum-pool's API of the Ethereum-family pools, under /oep/
        self._metrics = metrics  # () -> (Prometheus text, its content type)
        self._pages = pages  # the site's pages, for every path outside /api and /metrics
        self.live = live if live is not None else LiveStream()

    def direct_paths(self) -> dict[bytes, IResource]:
        """The paths served without routing (a request's path holds no query)."""
        return {
            b"/api/stats": _SnapshotBody(lambda: self._snapshot().stats_json),
            b"/api/pool_stats": _SnapshotBody(lambda: self._snapshot().history_json),
        }

    @staticmethod
    def _json(request: IRequest, body: bytes, code: int = 200) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        # A known length spares the chunked encoding Twisted would use otherwise.
        request.setHeader(b"Content-Length", b"%d" % len(body))
        return body

    def _document(self, request: IRequest, document: object) -> bytes:
        return self._json(request, json.dumps(document, separators=(",", ":")).encode())

    def _error(self, request: IRequest, code: int, message: str) -> bytes:
        return self._json(request, json.dumps({"error": message}).encode(), code)

    def _pool(self, name: str) -> PoolStats:
        stats = self._snapshot().pool(name)
        if stats is None:
            raise NotFound(f"no pool named {name!r}")
        return stats

    @app.handle_errors(BadRequest)
    def bad_request(self, request: IRequest, failure: Any) -> bytes:
        return self._error(request, 400, str(failure.value))

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Any) -> bytes:
        return self._error(request, 404, str(failure.value))

    @app.route("/api/stats", methods=["GET"])
    def stats(self, request: IRequest) -> bytes:
        return self._json(request, self._snapshot().stats_json)

    @app.route("/api/pool_stats", methods=["GET"])
    def pool_stats(self, request: IRequest) -> bytes:
        return self._json(request, self._snapshot().history_json)

    @app.route("/api/live_stats", methods=["GET"])
    def live_stats(self, request: IRequest) -> defer.Deferred[None] | bytes:
        return self.live.open(cast(Request, request), self._snapshot())

    @app.route("/api/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        return self._json(request, _OPENAPI_JSON)

    @app.route("/api/pools", methods=["GET"])
    def pools(self, request: IRequest) -> bytes:
        return self._document(request, [pool_document(p) for p in self._snapshot().pools])

    @app.route("/api/pools/<string:name>", methods=["GET"])
    def pool(self, request: IRequest, name: str) -> bytes:
        return self._document(request, pool_document(self._pool(name)))

    @app.route("/api/pools/<string:name>/miners", methods=["GET"])
    def miners(self, request: IRequest, name: str) -> bytes:
        stats = self._pool(name)
        return self._document(
            request,
            _page_of(
                request,
                stats.miners,
                lambda m: {
                    "address": m.address,
                    "hashrate": m.hashrate,
                    "workers": m.workers,
                    "shares": m.shares,
                    "invalidShares": m.invalid_shares,
                },
            ),
        )

    @app.route("/api/pools/<string:name>/miners/<string:address>", methods=["GET"])
    def miner(self, request: IRequest, name: str, address: str) -> bytes:
        stats = self._pool(name)
        try:
            login = miner_address(stats, address)
        except ValueError as e:
            raise NotFound(f"no miner {address!r} in pool {name!r}: {e}") from None
        document = miner_document(stats, login)
        if document is None:
            raise NotFound(f"no miner {address!r} in pool {name!r}")
        return self._document(request, document)

    @app.route("/api/pools/<string:name>/blocks", methods=["GET"])
    def blocks(self, request: IRequest, name: str) -> bytes:
        stats = self._pool(name)
        status = _parameter(request, "status")
        if status is not None and status not in BLOCK_STATUSES:
            raise BadRequest(f"status must be one of {', '.join(BLOCK_STATUSES)}")
        found = stats.found if status is None else tuple(b for b in stats.found if b.status == status)
        return self._document(request, _page_of(request, found, block_document))

    @app.route("/api/pools/<string:name>/payments", methods=["GET"])
    def payments(self, request: IRequest, name: str) -> bytes:
        stats = self._pool(name)
        return self._document(request, _page_of(request, stats.payments, payment_document))

    @app.route("/api/pools/<string:name>/network", methods=["GET"])
    def network(self, request: IRequest, name: str) -> bytes:
        return self._document(request, network_document(self._pool(name)))

    @app.route("/api/switching", methods=["GET"])
    def switching(self, request: IRequest) -> bytes:
        return self._document(request, [] if self._switching is None else self._switching())

    @app.route("/api/switching/profit", methods=["GET"])
    def profit(self, request: IRequest) -> bytes:
        return self._document(request, profit_document(None if self._profit is None else self._profit()))

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

    @app.route("/oep/", branch=True)
    def oep(self, request: IRequest) -> IResource | bytes:
        """``/oep/<pool>/api/...``: see nomp.web.oepapi."""
        if self._oep is None:
            return self._error(request, 404, "no Ethereum-family pool")
        return self._oep

    @app.route("/api/", branch=True)
    def unknown(self, request: IRequest) -> bytes:
        return self._error(request, 404, f"no such API path: {request.path.decode(errors='replace')}")

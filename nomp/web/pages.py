"""The site's HTML pages (everything outside /api and /metrics).

Each page is a small HTML skeleton; its figures come from the JSON API,
fetched and drawn by the scripts in ``static/`` (served at /static/), so
the first figures and the live updates of /api/live_stats go through the
same code in the browser. The pages load nothing from anywhere else: the
Content-Security-Policy sent with each allows this origin only, and no
inline script or style, so a string that slipped through unescaped still
could not run.

What the server writes into a page itself (a pool's name, an address, the
host miners connect to) is HTML-escaped here; the scripts only ever set
text (``textContent``), never markup.
"""

from __future__ import annotations

import hashlib
import html
import importlib.resources
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from nomp.web.collector import Snapshot
from nomp.web.stats import PoolStats, miner_address

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_CONTENT_TYPES = {
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
}
# A host name, IPv4 address or bracketed IPv6 address, with an optional port:
# anything else in a Host header is not shown to miners as where to connect.
_HOST_HEADER = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?$")


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One file of ``static/``, read once at start."""

    body: bytes
    content_type: bytes
    version: str  # a digest of the body: in the URL, so a changed file is fetched again


def load_static_files() -> dict[str, StaticFile]:
    """Every file of the package's ``static/`` folder whose type the site serves, by name."""
    folder = importlib.resources.files("nomp.web").joinpath("static")
    files: dict[str, StaticFile] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _CONTENT_TYPES:
            body = entry.read_bytes()
            files[entry.name] = StaticFile(
                body, _CONTENT_TYPES[suffix], hashlib.sha256(body).hexdigest()[:12]
            )
    return files


def _e(text: object) -> str:
    """``text`` escaped for HTML text and quoted attribute values."""
    return html.escape(str(text), quote=True)


def _segment(text: str) -> str:
    """``text`` as one URL path segment (a slash in it is escaped too)."""
    return quote(text, safe="")


def _cards(label: str, *cards: tuple[str, str]) -> str:
    """A row of figures: (caption, id of the element the page's script writes the value into)."""
    items = "".join(
        f'<div class="card"><span class="label">{_e(caption)}</span>'
        f'<span class="value" id="{_e(value_id)}">…</span></div>\n'
        for caption, value_id in cards
    )
    return f'<section class="cards" aria-label="{_e(label)}">\n{items}</section>'


def connect_host(request: IRequest) -> str:
    """The host miners should connect to: the one the visitor reached this site by."""
    header = request.getHeader(b"host")
    if header:
        match = _HOST_HEADER.match(header.decode("latin-1").strip())
        if match:
            return match["host"]
    host = request.getHost()
    return str(getattr(host, "host", "") or "localhost")


_CONNECT = """<p>Use your payout address as the user name, optionally followed by a dot and a worker name
(<code>ADDRESS.worker</code>); any password will do.</p>"""
_ETH_CONNECT = """<p>Use your <code>0x</code> address as the user name, optionally followed by a dot and a
worker name (<code>ADDRESS.worker</code>); any password will do. A getwork port takes them in its
path instead (<code>/ADDRESS/worker</code>). Stratum ports speak eth-proxy and NiceHash's
EthereumStratum/1.0.0 alike.</p>"""

# The payments table, filled by the page scripts: on the pool page and the payments page.
_PAYMENTS_TABLE = """<div class="table-wrap">
<table id="payments" class="data">
<thead><tr><th>Sent</th><th class="num">Total</th><th class="num">Fee</th>
<th class="num">Recipients</th><th>Transaction</th></tr></thead>
<tbody><tr><td colspan="5" class="empty">Loading…</td></tr></tbody>
</table>
</div>"""


class Pages:
    """The site. ``snapshot`` (the collector's current one) lets unknown pools
    be told apart from known ones at once, with a 404; without it every pool
    page is served and its script reports a pool the API does not know."""

    app = Klein()

    def __init__(
        self, snapshot: Callable[[], Snapshot] | None = None, profit: bool = False, switching: bool = False
    ) -> None:
        self._snapshot = snapshot
        self._profit = profit  # profit switching runs: its page is linked and served
        self._switching = switching  # there are switching ports: their page is linked and served
        self._static = load_static_files()

    def resource(self) -> IResource:
        return self.app.resource()

    # -- helpers --------------------------------------------------------------

    def _static_url(self, name: str) -> str:
        return f"/static/{name}?v={self._static[name].version}"

    @staticmethod
    def _security_headers(request: IRequest) -> None:
        request.setHeader(b"Content-Security-Policy", CONTENT_SECURITY_POLICY.encode())
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        request.setHeader(b"X-Frame-Options", b"DENY")

    def _render(
        self,
        request: IRequest,
        title: str,
        main: str,
        script: str | None = None,
        data: Mapping[str, str] | None = None,
        code: int = 200,
    ) -> bytes:
        """A whole page: ``main`` is HTML already escaped; ``data`` become the body's
        data- attributes, which the page's ``script`` reads."""
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        self._security_headers(request)
        attributes = "".join(f' data-{name}="{_e(value)}"' for name, value in (data or {}).items())
        scripts = footer = noscript = ""
        if script is not None:
            footer = (
                '\n<footer class="site-footer">Figures update by themselves; amounts are in coins.</footer>'
            )
            noscript = (
                '\n<noscript><p class="notice">The figures on this page need JavaScript.</p></noscript>'
            )
            scripts = "".join(
                f'\n<script src="{self._static_url(name)}" defer></script>'
                for name in ("nomp.js", "charts.js", f"{script}.js")
            )
        page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} · nomp</title>
<link rel="stylesheet" href="{self._static_url("style.css")}">
<link rel="icon" href="{self._static_url("favicon.svg")}" type="image/svg+xml">{scripts}
</head>
<body{attributes}>
<header class="site-header">
<a class="brand" href="/">nomp</a>
<nav class="site-nav"><a href="/">Pools</a>{self._switching_link}{self._profit_link}</nav>
<span id="live" class="live" hidden></span>
</header>
<main>
{main}{noscript}
</main>{footer}
</body>
</html>
"""
        return page.encode()

    @property
    def _switching_link(self) -> str:
        return ' <a href="/switching">Switching</a>' if self._switching else ""

    @property
    def _profit_link(self) -> str:
        return ' <a href="/switching/profit">Profit switching</a>' if self._profit else ""

    def _not_found(self, request: IRequest, message: str) -> bytes:
        main = f"""<h1>Not found</h1>
<p class="notice">{_e(message)}</p>
<p><a href="/">Back to the pools</a></p>"""
        return self._render(request, "Not found", main, code=404)

    def _pool_known(self, name: str) -> bool:
        return self._snapshot is None or self._snapshot().pool(name) is not None

    def _stats(self, name: str) -> PoolStats | None:
        return self._snapshot().pool(name) if self._snapshot is not None else None

    def _pool_title(self, name: str) -> str:
        stats = self._stats(name)
        return f"{name} ({stats.pool.coin.symbol})" if stats is not None else name

    def _address(self, pool: str, address: str) -> str:
        """``address`` as the pool's records hold it (an Ethereum login: lower case), or as
        given if it cannot be one: the dashboard's script then reports it unknown."""
        stats = self._stats(pool)
        if stats is None:
            return address
        try:
            return miner_address(stats, address)
        except ValueError:
            return address

    @staticmethod
    def _pool_nav(name: str, current: str) -> str:
        base = f"/pools/{_segment(name)}"
        links = [("Overview", base), ("Blocks", f"{base}/blocks"), ("Payments", f"{base}/payments")]
        current_mark = ' aria-current="page"'
        items = "".join(
            f'<a href="{_e(href)}"{current_mark if label == current else ""}>{label}</a>'
            for label, href in links
        )
        return f'<nav class="pool-nav">{items}</nav>'

    # -- routes ---------------------------------------------------------------

    @app.route("/static/<string:name>", methods=["GET", "HEAD"])
    def static(self, request: IRequest, name: str) -> bytes:
        file = self._static.get(name)
        if file is None:
            return self._not_found(request, "There is no such file.")
        request.setHeader(b"Content-Type", file.content_type)
        request.setHeader(b"Cache-Control", b"public, max-age=86400")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return file.body

    @app.route("/", methods=["GET", "HEAD"])
    def home(self, request: IRequest) -> bytes:
        main = f"""<h1>Pools</h1>
{_cards("All pools", ("Hashrate", "global-hashrate"), ("Workers", "global-workers"), ("Pools", "pool-count"))}
<section>
<div class="table-wrap">
<table id="pools" class="data">
<thead><tr><th>Pool</th><th>Algorithm</th><th class="num">Hashrate</th><th class="num">Miners</th>
<th class="num">Workers</th><th class="num">Network difficulty</th><th>Last block</th></tr></thead>
<tbody><tr><td colspan="7" class="empty">Loading…</td></tr></tbody>
</table>
</div>
</section>"""
        return self._render(request, "Pools", main, "home")

    @app.route("/pools/<string:pool>", methods=["GET", "HEAD"])
    def pool(self, request: IRequest, pool: str) -> bytes:
        if not self._pool_known(pool):
            return self._not_found(request, f"There is no pool named {pool}.")
        name = _e(pool)
        stats = self._stats(pool)
        lookup = f"/pools/{_segment(pool)}/miners"
        main = f"""<h1><span id="pool-name">{name}</span> <span class="symbol" id="pool-symbol"></span>
<span class="badge" id="pool-algorithm"></span></h1>
{self._pool_nav(pool, "Overview")}
<p class="notice" id="pool-error" hidden></p>
{
            _cards(
                "Pool figures",
                ("Pool hashrate", "pool-hashrate"),
                ("Miners", "pool-miners"),
                ("Workers", "pool-workers"),
                ("Network difficulty", "network-difficulty"),
                ("Network hashrate", "network-hashrate"),
                ("Height", "network-height"),
                ("Blocks pending / confirmed / orphaned", "pool-blocks"),
                ("Last block", "last-block"),
            )
        }
<section>
<h2>Pool hashrate</h2>
<figure class="chart">
<canvas id="hashrate-chart" role="img" aria-label="Pool hashrate over time"></canvas>
<figcaption class="chart-readout" id="hashrate-readout"></figcaption>
</figure>
</section>
<section id="connect">
<h2>Connect a miner</h2>
{_ETH_CONNECT if stats is not None and stats.ethereum else _CONNECT}
<ul id="ports" class="ports"><li class="empty">Loading…</li></ul>
</section>
<section id="lookup">
<h2>Look up a miner</h2>
<form class="lookup" method="get" action="{_e(lookup)}">
<label for="address">Payout address</label>
<input id="address" name="address" required autocomplete="off" spellcheck="false" placeholder="Your address">
<button type="submit">Show</button>
</form>
</section>
<section>
<h2>Top miners</h2>
<div class="table-wrap">
<table id="miners" class="data">
<thead><tr><th>Address</th><th class="num">Hashrate</th><th class="num">Workers</th>
<th class="num">Shares</th></tr></thead>
<tbody><tr><td colspan="4" class="empty">Loading…</td></tr></tbody>
</table>
</div>
</section>
<section>
<h2>Recent blocks</h2>
<div class="table-wrap">
<table id="blocks" class="data">
<thead><tr><th class="num">Height</th><th>Found</th><th>Status</th><th class="num">Reward</th>
<th class="num">Effort</th><th>Finder</th><th>Hash</th></tr></thead>
<tbody><tr><td colspan="7" class="empty">Loading…</td></tr></tbody>
</table>
</div>
<p><a href="/pools/{_e(_segment(pool))}/blocks">All blocks</a></p>
</section>
<section>
<h2>Recent payments</h2>
{_PAYMENTS_TABLE}
<p><a href="/pools/{_e(_segment(pool))}/payments">All payments</a></p>
</section>"""
        data = {"pool": pool, "host": connect_host(request)}
        return self._render(request, self._pool_title(pool), main, "pool", data)

    @app.route("/pools/<string:pool>/miners", methods=["GET", "HEAD"])
    def lookup(self, request: IRequest, pool: str) -> bytes:
        """The lookup form's target: on to the address's dashboard (the form works without scripts)."""
        if not self._pool_known(pool):
            return self._not_found(request, f"There is no pool named {pool}.")
        values = request.args.get(b"address") if request.args else None
        address = self._address(pool, values[0].decode("utf-8", errors="replace").strip() if values else "")
        target = f"/pools/{_segment(pool)}"
        target += f"/miners/{_segment(address)}" if address else "#lookup"
        request.setResponseCode(303)
        request.setHeader(b"Location", target.encode())
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        self._security_headers(request)
        return f'<!doctype html><title>See other</title><a href="{_e(target)}">Continue</a>\n'.encode()

    @app.route("/pools/<string:pool>/miners/<path:address>", methods=["GET", "HEAD"])
    def miner(self, request: IRequest, pool: str, address: str) -> bytes:
        if not self._pool_known(pool):
            return self._not_found(request, f"There is no pool named {pool}.")
        address = self._address(pool, address)
        main = f"""<p class="crumbs"><a href="/pools/{_e(_segment(pool))}">{_e(pool)}</a> &rsaquo; miner</p>
<h1 class="address" id="miner-address">{_e(address)}</h1>
<p class="notice" id="miner-error" hidden></p>
{
            _cards(
                "Miner figures",
                ("Hashrate", "miner-hashrate"),
                ("Workers", "miner-workers"),
                ("Shares (valid / invalid)", "miner-shares"),
                ("Immature", "miner-immature"),
                ("Balance", "miner-balance"),
                ("Paid", "miner-paid"),
            )
        }
<section>
<h2>Hashrate</h2>
<figure class="chart">
<canvas id="miner-chart" role="img" aria-label="This miner's hashrate over time"></canvas>
<figcaption class="chart-readout" id="miner-readout"></figcaption>
</figure>
</section>
<section>
<h2>Workers</h2>
<div class="table-wrap">
<table id="workers" class="data">
<thead><tr><th>Worker</th><th class="num">Hashrate</th><th>Last share</th>
<th class="num">Difficulty</th></tr></thead>
<tbody><tr><td colspan="4" class="empty">Loading…</td></tr></tbody>
</table>
</div>
</section>
<section>
<h2>Payouts</h2>
<div class="table-wrap">
<table id="payouts" class="data">
<thead><tr><th>Sent</th><th class="num">Amount</th><th>Transaction</th></tr></thead>
<tbody><tr><td colspan="3" class="empty">Loading…</td></tr></tbody>
</table>
</div>
</section>"""
        data = {"pool": pool, "address": address}
        return self._render(request, f"{address} on {pool}", main, "miner", data)

    @app.route("/pools/<string:pool>/blocks", methods=["GET", "HEAD"])
    def blocks(self, request: IRequest, pool: str) -> bytes:
        if not self._pool_known(pool):
            return self._not_found(request, f"There is no pool named {pool}.")
        main = f"""<h1>{_e(pool)} blocks</h1>
{self._pool_nav(pool, "Blocks")}
<nav class="filters" id="status-filter" aria-label="Block status"></nav>
<p class="notice" id="list-error" hidden></p>
<div class="table-wrap">
<table id="blocks" class="data">
<thead><tr><th class="num">Height</th><th>Found</th><th>Status</th><th class="num">Reward</th>
<th class="num">Effort</th><th>Finder</th><th>Hash</th><th>Coinbase transaction</th></tr></thead>
<tbody><tr><td colspan="8" class="empty">Loading…</td></tr></tbody>
</table>
</div>
<nav class="pager" id="pager" aria-label="Pages"></nav>"""
        return self._render(request, f"{self._pool_title(pool)} blocks", main, "blocks", {"pool": pool})

    @app.route("/pools/<string:pool>/payments", methods=["GET", "HEAD"])
    def payments(self, request: IRequest, pool: str) -> bytes:
        if not self._pool_known(pool):
            return self._not_found(request, f"There is no pool named {pool}.")
        main = f"""<h1>{_e(pool)} payments</h1>
{self._pool_nav(pool, "Payments")}
<p class="notice" id="list-error" hidden></p>
{_PAYMENTS_TABLE}
<nav class="pager" id="pager" aria-label="Pages"></nav>"""
        title = f"{self._pool_title(pool)} payments"
        return self._render(request, title, main, "payments", {"pool": pool})

    @app.route("/switching", methods=["GET", "HEAD"])
    def switching(self, request: IRequest) -> bytes:
        """Each switching port's switch and the pool it is on (from /api/switching)."""
        if not self._switching:
            return self._not_found(request, "There are no switching ports.")
        main = """<h1>Switching ports</h1>
<p class="notice" id="switching-error" hidden></p>
<div id="switches"><p class="empty">Loading…</p></div>"""
        return self._render(request, "Switching ports", main, "switching")

    @app.route("/switching/profit", methods=["GET", "HEAD"])
    def profit(self, request: IRequest) -> bytes:
        """Each switch's last ranking and decision (from /api/switching/profit)."""
        if not self._profit:
            return self._not_found(request, "Profit switching is not configured.")
        main = """<h1>Profit switching</h1>
<p class="notice" id="profit-error" hidden></p>
<p id="profit-summary"></p>
<div id="profit-switches"><p class="empty">Loading…</p></div>"""
        return self._render(request, "Profit switching", main, "profit")

    @app.route("/", branch=True)
    def not_found(self, request: IRequest) -> bytes:
        return self._not_found(request, "There is no page at this address.")

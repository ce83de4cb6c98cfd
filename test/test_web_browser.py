"""The site's pages in a real browser: headless Chromium (through Playwright)
against a running WebService over a real redis-server, filled by the real
ShareRecorder, StatsCollector and payments ledger.

Six hours of pool history are made by the real collector on a simulated
clock (shares recorded, blocks found, stats collected every 15 minutes),
then the ledger credits and pays those blocks as a payment run would, and
fresh shares give the current figures. Beside the two Bitcoin-family pools
runs an Ethereum-family one, its keys written by its recorder and its
unlocker's and payer's scripts (test/ethweb.py): a block, an uncle, an
orphan, an immature block, a candidate and a payout. Each test leaves a
screenshot in artifacts/screenshots/.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
import time
from typing import Any, cast
from urllib.parse import quote

from playwright.sync_api import Page, expect
from treq.client import HTTPClient
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site

from nomp.config import PoolConfig, PortConfig, RedisConfig, WebConfig
from nomp.daemon import DaemonGroup
from nomp.daemon.rpc import DaemonRPC
from nomp.hashing import ALGORITHMS
from nomp.payments.ledger import Batch, PaymentLedger
from nomp.payments.rounds import PROP
from nomp.payments.split import RewardSplit
from nomp.store.recorder import ShareRecorder
from nomp.store.redis import RedisService
from nomp.store.schema import PoolKeys
from nomp.web.collector import StatsCollector
from nomp.web.pages import CONTENT_SECURITY_POLICY
from nomp.web.service import WebService
from test.browser import PHONE, Session, browse, screenshot
from test.candidates import candidate
from test.ethpool import LOGIN, LOGIN_CHECKSUMMED
from test.ethweb import (
    CANDIDATE_HEIGHT,
    NEPHEW_HEIGHT,
    ORPHAN_HEIGHT,
    PAYOUT_TX,
    UNCLE_HEIGHT,
    eth_block_hash,
    eth_web_pool,
    write_eth_pool,
)
from test.fakedaemon import FakeDaemon, Handler
from test.fakes import pool_config
from test.servers import free_port, shared_redis
from test.waiting import until
from test.webclient import serve

DB = 15  # of the shared redis-server: this module's own, emptied before each test
HISTORY_STEP = 900.0  # seconds between the simulated collections
HISTORY_STEPS = 24  # six hours of history
RETENTION = 86400.0
BROWSER_TIMEOUT_MS = 30_000

XSS = "<script>alert(1)</script>"
MINER = "rltc1qg8yyf2dsd4wlk6hc2gxphy5csxqy4n0a7j3mz5"
OTHER = "rltc1q0s7kntqzc0xz2d6upzj9ml7prwpmmcxwjt5dm4"
NEWCOMER = "rltc1qnewminer5s0hz3l8u2kdcp9ftn4vjw6e7xq0m"
BITCOIN_MINER = "bcrt1qsha256minerx4q9v3m2w7c6d5f8k0j2h3g4l9p"

# Blocks found during the simulated history: (step, finder, height).
BLOCKS = ((4, f"{MINER}.rig1", 2001), (12, f"{OTHER}.gpu0", 2002), (20, f"{MINER}.rig2", 2003))
REWARD = 625_000_000
# The first block, matured: split as the payment processor would (the parts add up to REWARD).
MATURE_SPLIT = RewardSplit(REWARD, {MINER: 512_345_678, OTHER: 100_154_322}, 12_500_000, 6_250_000)
# The third, still immature.
IMMATURE_SPLIT = RewardSplit(REWARD, {MINER: 400_000_001, OTHER: 212_499_999}, 12_500_000, 6_250_000)
# One payout from the first block's credit: MINER keeps 2 coins of balance.
PAYOUT = {MINER: 312_345_678, OTHER: 100_154_322}
PAYOUT_FEE = 22_600


def block_hash(height: int) -> str:
    return hashlib.sha256(f"block {height}".encode()).hexdigest()


def coinbase_txid(height: int) -> str:
    return hashlib.sha256(f"coinbase {height}".encode()).hexdigest()


def litecoin_pool() -> PoolConfig:
    """The shipped pool (scrypt, a vardiff port) with a TLS port beside it."""
    shipped = pool_config(name="litecoin")
    tls = PortConfig(listen="ssl:3334:privateKey=pool.pem:interface=127.0.0.1", diff=16.0)
    return dataclasses.replace(shipped, ports=(*shipped.ports, tls))


def bitcoin_pool() -> PoolConfig:
    coin = dataclasses.replace(
        pool_config().coin, name="bitcoin-regtest", symbol="rBTC", algorithm=ALGORITHMS["sha256d"]
    )
    port = PortConfig(listen="tcp:3335:interface=127.0.0.1", diff=1.0)
    return pool_config(name="bitcoin", coin=coin, ports=(port,))


def mining_info(height: int, difficulty: float, hashrate: float) -> dict[str, Any]:
    """getmininginfo as a node answers it (the fields the collector reads)."""
    return {"blocks": height, "difficulty": difficulty, "networkhashps": hashrate, "chain": "regtest"}


def answering(result: Any) -> Handler:
    """A scripted daemon's handler that always answers ``result``."""
    return lambda params: result


class SiteTests(TestCase):
    """The pages of a running pool, seen through Chromium."""

    async def asyncSetUp(self) -> None:
        server = shared_redis()
        server.command("FLUSHDB", db=DB)
        self.redis = RedisService(RedisConfig(port=server.port, db=DB))
        self.redis.startService()
        self.addCleanup(self.redis.stopService)
        await until(lambda: self.redis.client() is not None)
        self.litecoin = litecoin_pool()
        self.bitcoin = bitcoin_pool()
        self.keys = PoolKeys.for_coin(self.litecoin.coin.name)
        self.bitcoin_keys = PoolKeys.for_coin(self.bitcoin.coin.name)
        self.now = time.time()
        await self.make_history()
        await self.run_payments()
        await self.record_current_shares()
        daemons = await self.start_daemons()
        self.ethereum = eth_web_pool("dev")
        await write_eth_pool(self.ethereum, self.redis.client, cast(IReactorTime, reactor), time.time())
        config = WebConfig(
            listen=f"tcp:{free_port()}:interface=127.0.0.1",
            stats_interval=3600.0,
            history_retention=RETENTION,
        )
        self.web = WebService(
            config,
            lambda: [self.litecoin, self.bitcoin, self.ethereum],
            self.redis.client,
            reactor,
            daemons=daemons,
        )
        self.base = await serve(self, self.web)
        await until(lambda: self.web.collector.snapshot.pools[0].workers != ())

    def setUp(self) -> Any:
        return defer.Deferred.fromCoroutine(self.asyncSetUp())

    # -- the pool's data, written by the pool's own code ----------------------

    def recorder(self, keys: PoolKeys, wall_clock: Any = time.time) -> ShareRecorder:
        return ShareRecorder(
            keys,
            self.redis.client,
            cast(IReactorTime, reactor),
            hashrate_window=300.0,
            wall_clock=wall_clock,
            round_policy=PROP,
        )

    async def make_history(self) -> None:
        """Six hours of shares, three blocks and a collection every 15 minutes, on a simulated clock
        ending 15 minutes ago; the collector keeps its history in Redis, where the web service finds it."""
        clock = task.Clock()
        clock.advance(self.now - HISTORY_STEP * HISTORY_STEPS)
        litecoin = self.recorder(self.keys, clock.seconds)
        bitcoin = self.recorder(self.bitcoin_keys, clock.seconds)
        collector = StatsCollector(
            lambda: [self.litecoin, self.bitcoin],
            self.redis.client,
            clock,
            interval=HISTORY_STEP,
            retention=RETENTION,
        )
        blocks = {step: (worker, height) for step, worker, height in BLOCKS}
        for step in range(HISTORY_STEPS):
            # A daily-looking swell, so the chart has a shape to draw.
            busy = 1.0 + 0.6 * math.sin(step / 4)
            for _ in range(round(12 * busy)):
                litecoin.valid_share(f"{MINER}.rig1", 1.0)
            for _ in range(round(6 * busy)):
                litecoin.valid_share(f"{OTHER}.gpu0", 2.0)
            bitcoin.valid_share(f"{BITCOIN_MINER}.s9", 64.0 * busy)
            if step in blocks:
                worker, height = blocks[step]
                found = candidate(
                    block_hash(height),
                    height,
                    worker,
                    clock.seconds(),
                    txid=coinbase_txid(height),
                    reward=REWARD,
                    network_difficulty=150.0,
                )
                litecoin.block_found(found)
                litecoin.block_settled(found.block_hash, True)
            await litecoin.flush()
            await bitcoin.flush()
            await collector.collect()
            clock.advance(HISTORY_STEP)

    async def run_payments(self) -> None:
        """What a payment run does with the three blocks: the first matured and is paid out
        in part, the second left the chain, the third is still immature."""
        client = self.redis.client()
        assert client is not None
        ledger = PaymentLedger(client, self.keys)
        token = await ledger.acquire(60.0)
        assert token is not None
        mature, orphaned, immature = await ledger.pending_blocks()
        assert mature.txid is not None
        self.assertEqual(await ledger.credit_mature(token, mature, mature.txid, MATURE_SPLIT), 1)
        self.assertTrue(await ledger.orphan(token, orphaned, False, "not in the main chain"))
        self.assertTrue(await ledger.credit_immature(token, immature, IMMATURE_SPLIT))
        batch = Batch("payout-1", dict(PAYOUT), self.now - 3000, "pool")
        await ledger.open_batch(token, batch)
        self.assertTrue(await ledger.record_batch(batch, "ab" * 32, PAYOUT_FEE, 0, self.now - 2900))
        await ledger.release(token)

    async def record_current_shares(self) -> None:
        """The shares of the last minutes: five workers of four addresses, one of them named
        like a script (the recorder writes any name; Stratum would have refused this one)."""
        litecoin = self.recorder(self.keys)
        for _ in range(6):
            litecoin.valid_share(f"{MINER}.rig1", 1.0)
        for _ in range(3):
            litecoin.valid_share(f"{MINER}.rig2", 2.0)
        litecoin.valid_share(f"{MINER}.{XSS}", 1.0)
        litecoin.valid_share(XSS, 4.0)
        litecoin.valid_share(f"{OTHER}.gpu0", 8.0)
        litecoin.invalid_share(f"{OTHER}.gpu0", 8.0)
        await litecoin.flush()
        bitcoin = self.recorder(self.bitcoin_keys)
        bitcoin.valid_share(f"{BITCOIN_MINER}.s9", 128.0)
        await bitcoin.flush()

    async def start_daemons(self) -> Any:
        """One scripted node per pool answering getmininginfo, reached over HTTP by the real client."""
        http_pool = HTTPConnectionPool(reactor)
        self.addCleanup(http_pool.closeCachedConnections)
        http = HTTPClient(Agent(reactor, pool=http_pool))
        answers = {
            "litecoin": mining_info(2_750_123, 18_543_210.5, 1.2e15),
            "bitcoin": mining_info(871_004, 1.1e14, 7.5e20),
        }
        groups: dict[str, DaemonGroup] = {}
        for name, answer in answers.items():
            node = FakeDaemon({"getmininginfo": answering(answer)})
            listening = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Site(node))
            self.addCleanup(listening.stopListening)
            url = f"http://127.0.0.1:{cast(IPv4Address, listening.getHost()).port}"
            rpc = DaemonRPC(http, url, "nomp", "secret", cast(IReactorTime, reactor), timeout=10.0)
            groups[name] = DaemonGroup([rpc], cast(IReactorTime, reactor))
        return groups.get

    # -- helpers ------------------------------------------------------------------

    def assert_clean(self, session: Session) -> None:
        """No dialog opened, no script failed, nothing was fetched from elsewhere."""
        watch = session.watch
        self.assertEqual(watch.dialogs, [])
        self.assertEqual(watch.script_errors, [])
        self.assertEqual(watch.foreign_requests, [])
        self.assertEqual([m for m in watch.console_errors if "Content Security Policy" in m], [])

    @staticmethod
    def row_of(page: Page, table: str, text: str) -> Any:
        return page.locator(f"#{table} tbody tr", has_text=text)

    # -- tests ----------------------------------------------------------------------

    async def test_home_lists_the_pools(self) -> None:
        """Every pool with its algorithm, hashrate, miners, workers, network difficulty and last block."""

        def steps(session: Session) -> dict[str, list[str]]:
            page = session.page
            response = page.goto("/")
            assert response is not None
            self.assertEqual(response.status, 200)
            self.assertEqual(response.headers["content-security-policy"], CONTENT_SECURITY_POLICY)
            expect(page.locator("#pools tbody tr")).to_have_count(3)
            expect(page.locator("#live")).to_have_attribute("data-state", "live")
            rows = {
                name: page.locator(f"#pools tbody tr[data-pool={name}] td").all_inner_texts()
                for name in ("litecoin", "bitcoin", "dev")
            }
            screenshot(page, "home")
            self.assert_clean(session)
            return rows

        rows = await browse(self.base, steps)
        name, algorithm, hashrate, miners, workers, difficulty, last = rows["litecoin"]
        self.assertEqual((name, algorithm, miners, workers), ("litecoin rLTC", "scrypt", "3", "5"))
        self.assertRegex(hashrate, r"^\d+\.\d\d [kMG]?H/s$")
        self.assertEqual(difficulty, "18.54 M")
        self.assertRegex(last, r"^#2,003 · \d+ (min|h) ago$")
        name, algorithm, hashrate, miners, workers, difficulty, last = rows["bitcoin"]
        self.assertEqual((name, algorithm, miners, workers), ("bitcoin rBTC", "sha256d", "1", "1"))
        self.assertEqual((difficulty, last), ("110.00 T", "none yet"))
        name, algorithm, hashrate, miners, workers, difficulty, last = rows["dev"]
        self.assertEqual((name, algorithm, miners, workers), ("dev DEV", "ethash", "2", "3"))
        self.assertEqual((hashrate, difficulty), ("53.33 MH/s", "1.30 G"))  # 16e9 hashes in 300 s
        self.assertRegex(last, rf"^#{CANDIDATE_HEIGHT} · \d+ (min|h) ago$")

    async def test_pool_page(self) -> None:
        """The hashrate chart is drawn from the history; ports, blocks and payments are listed;
        the miner command lines use the host the page was reached by and the pool's algorithm."""

        def steps(session: Session) -> dict[str, Any]:
            page = session.page
            page.goto("/pools/litecoin")
            chart = page.locator("#hashrate-chart")
            expect(chart).to_have_attribute("data-points", str(HISTORY_STEPS + 1))
            drawn = chart.evaluate(
                """canvas => {
                  const style = getComputedStyle(document.documentElement);
                  const accent = style.getPropertyValue("--accent").trim();
                  const [r, g, b] = [1, 3, 5].map(i => parseInt(accent.slice(i, i + 2), 16));
                  const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
                  const columns = new Set();
                  for (let i = 0; i < data.length; i += 4) {
                    const [pr, pg, pb, alpha] = data.slice(i, i + 4);
                    const near = Math.abs(pr - r) + Math.abs(pg - g) + Math.abs(pb - b);
                    if (alpha > 200 && near < 60) columns.add((i / 4) % canvas.width);
                  }
                  return { width: canvas.width, lineColumns: columns.size };
                }"""
            )
            expect(page.locator("#blocks tbody tr")).to_have_count(3)
            expect(page.locator("#payments tbody tr")).to_have_count(1)
            expect(page.locator("#network-difficulty")).to_have_text("18.54 M")
            found = {
                "drawn": drawn,
                "readout": page.inner_text("#hashrate-readout"),
                "commands": page.locator("#ports .command").all_inner_texts(),
                "ports": [
                    [
                        port.locator(f".{part}").inner_text()
                        for part in ("port-number", "port-difficulty", "badge")
                    ]
                    for port in page.locator("#ports .port").all()
                ],
                "blocks": [
                    r.locator("td").all_inner_texts()[:6] for r in page.locator("#blocks tbody tr").all()
                ],
                "payment": page.locator("#payments tbody td").all_inner_texts()[1:4],
                "counters": [page.inner_text(f"#pool-{c}") for c in ("miners", "workers", "blocks")],
            }
            screenshot(page, "pool")
            page.goto("/pools/bitcoin")
            expect(page.locator("#ports .command")).to_have_count(1)
            found["bitcoin"] = page.inner_text("#ports .command")
            screenshot(page, "pool-sha256d")
            self.assert_clean(session)
            return found

        found = await browse(self.base, steps)
        # The line crosses most of the plot's width (the value labels take the left edge).
        self.assertGreater(found["drawn"]["lineColumns"], found["drawn"]["width"] * 0.6)
        self.assertRegex(found["readout"], r"^Latest \d{4}-\d\d-\d\d \d\d:\d\d: \d")
        self.assertEqual(
            found["commands"],
            [
                "cpuminer -a scrypt -o stratum+tcp://127.0.0.1:3333 -u ADDRESS.worker -p x",
                "cpuminer -a scrypt -o stratum+ssl://127.0.0.1:3334 -u ADDRESS.worker -p x",
            ],
        )
        self.assertEqual(
            found["ports"],
            [
                ["Port 3333", "vardiff 0.001 \u2013 1000 (starts at 0.0625)", "no TLS"],
                ["Port 3334", "difficulty 16", "TLS"],
            ],
        )
        self.assertEqual(
            found["bitcoin"], "cpuminer -a sha256d -o stratum+tcp://127.0.0.1:3335 -u ADDRESS.worker -p x"
        )
        heights = [row[0] for row in found["blocks"]]
        statuses = [row[2] for row in found["blocks"]]
        rewards = [row[3] for row in found["blocks"]]
        self.assertEqual(heights, ["2,003", "2,002", "2,001"])
        self.assertEqual(statuses, ["pending", "orphaned", "confirmed"])
        self.assertEqual(rewards, ["6.25000000 rLTC"] * 3)
        self.assertEqual(found["blocks"][0][5], f"{MINER}.rig2")
        self.assertEqual(found["payment"], ["4.12500000 rLTC", "0.00022600 rLTC", "2"])
        self.assertEqual(found["counters"], ["3", "5", "1 / 1 / 1"])

    async def test_miner_dashboard_from_the_lookup_form(self) -> None:
        """An address typed in the pool page's form leads to its dashboard: workers, balances
        (integer satoshis shown as coins), payouts and a hashrate chart."""

        def steps(session: Session) -> dict[str, Any]:
            page = session.page
            page.goto("/pools/litecoin")
            page.fill("#address", f"  {MINER} ")
            page.click("#lookup button[type=submit]")
            page.wait_for_url(f"**/pools/litecoin/miners/{MINER}")
            expect(page.locator("#workers tbody tr")).to_have_count(3)
            # The samples the simulated collections kept in Redis, one each; the web
            # service samples once per stats_interval (an hour), and the last is 15 min old.
            expect(page.locator("#miner-chart")).to_have_attribute("data-points", str(HISTORY_STEPS))
            found = {
                "title": page.inner_text("#miner-address"),
                "balances": [page.inner_text(f"#miner-{b}") for b in ("immature", "balance", "paid")],
                "workers": [
                    r.locator("td").all_inner_texts() for r in page.locator("#workers tbody tr").all()
                ],
                "payouts": page.locator("#payouts tbody td").all_inner_texts(),
            }
            screenshot(page, "miner")
            self.assert_clean(session)
            return found

        found = await browse(self.base, steps)
        self.assertEqual(found["title"], MINER)
        self.assertEqual(found["balances"], ["4.00000001 rLTC", "2.00000000 rLTC", "3.12345678 rLTC"])
        names = [row[0] for row in found["workers"]]
        self.assertEqual(sorted(names), sorted([f"{MINER}.rig1", f"{MINER}.rig2", f"{MINER}.{XSS}"]))
        rig2 = next(row for row in found["workers"] if row[0] == f"{MINER}.rig2")
        self.assertRegex(rig2[1], r"^\d+(\.\d\d)? [kMG]?H/s$")
        self.assertRegex(rig2[2], r"^\d+ s ago$")
        self.assertEqual(rig2[3], "2")
        self.assertEqual(found["payouts"][1:], ["3.12345678 rLTC", "ab" * 32])

    async def test_live_update(self) -> None:
        """New shares and a collection reach open pages through the event stream, without a reload."""
        ready = threading.Event()

        def steps(session: Session) -> dict[str, str]:
            home = session.page
            home.goto("/")
            pool = session.new_page()
            pool.goto("/pools/litecoin")
            for page in (home, pool):
                expect(page.locator("#live")).to_have_attribute("data-state", "live")
                page.evaluate("() => { window.sameDocument = true; }")
            workers = self.row_of(home, "pools", "litecoin").locator("td").nth(4)
            expect(workers).to_have_text("5")
            expect(pool.locator("#pool-workers")).to_have_text("5")
            before = pool.inner_text("#pool-hashrate")
            points = pool.get_attribute("#hashrate-chart", "data-points")
            ready.set()
            expect(workers).to_have_text("6", timeout=BROWSER_TIMEOUT_MS)
            expect(self.row_of(home, "pools", "litecoin").locator("td").nth(3)).to_have_text("4")
            expect(pool.locator("#pool-workers")).to_have_text("6", timeout=BROWSER_TIMEOUT_MS)
            expect(pool.locator("#pool-miners")).to_have_text("4")
            expect(pool.locator("#hashrate-chart")).to_have_attribute(
                "data-points", str(int(points or 0) + 1)
            )
            for page in (home, pool):
                self.assertTrue(page.evaluate("() => window.sameDocument === true"))
            screenshot(home, "live-home")
            screenshot(pool, "live-pool")
            self.assert_clean(session)
            return {"before": before, "after": pool.inner_text("#pool-hashrate")}

        seen = browse(self.base, steps)
        await until(lambda: ready.is_set() or seen.called)
        if not ready.is_set():
            await seen  # the browser failed before the pages were up: its error
        recorder = self.recorder(self.keys)
        for _ in range(40):
            recorder.valid_share(f"{NEWCOMER}.rig9", 4.0)
        await recorder.flush()
        await self.web.collector.collect()
        hashrates = await seen
        self.assertNotEqual(hashrates["before"], hashrates["after"])

    async def test_script_worker_shown_as_text(self) -> None:
        """A worker named <script>alert(1)</script> is shown as those characters, server-side
        and in the scripts' tables, and nothing runs."""

        def steps(session: Session) -> dict[str, Any]:
            page = session.page
            page.goto("/pools/litecoin")
            link = page.locator("#miners tbody a", has_text=XSS)
            expect(link).to_have_count(1)
            found: dict[str, Any] = {"link": link.inner_text()}
            page.goto(f"/pools/litecoin/miners/{MINER}")
            expect(page.locator("#workers tbody tr")).to_have_count(3)
            found["worker"] = self.row_of(page, "workers", XSS).locator("td").first.inner_text()
            screenshot(page, "script-worker")
            # The address in the page's own path, written by the server.
            page.goto(f"/pools/litecoin/miners/{quote(XSS, safe='')}")
            found["heading"] = page.inner_text("#miner-address")
            expect(page.locator("#workers tbody td", has_text="Loading")).to_have_count(0)
            found["scripts"] = page.evaluate(
                "() => [...document.scripts].filter(s => s.textContent.includes('alert')).length"
            )
            screenshot(page, "script-address")
            self.assert_clean(session)
            return found

        found = await browse(self.base, steps)
        self.assertEqual(found["link"], XSS)
        self.assertEqual(found["worker"], f"{MINER}.{XSS}")
        self.assertEqual(found["heading"], XSS)
        self.assertEqual(found["scripts"], 0)

    async def test_blocks_and_payments_pages(self) -> None:
        """The paginated lists, with the block status filter."""

        def steps(session: Session) -> dict[str, Any]:
            page = session.page
            page.goto("/pools/litecoin/blocks")
            expect(page.locator("#blocks tbody tr")).to_have_count(3)
            found: dict[str, Any] = {"pager": page.inner_text("#pager")}
            screenshot(page, "blocks")
            page.goto("/pools/litecoin/blocks?per_page=2")
            expect(page.locator("#blocks tbody tr")).to_have_count(2)
            found["first of two"] = page.inner_text("#pager")
            page.click("#pager a[rel=next]")
            page.wait_for_url("**/blocks?page=1&per_page=2")
            expect(page.locator("#blocks tbody tr")).to_have_count(1)
            found["second of two"] = page.inner_text("#pager")
            found["last height"] = page.locator("#blocks tbody td").first.inner_text()
            page.goto("/pools/litecoin/blocks")
            page.click("#status-filter a:text-is('confirmed')")
            page.wait_for_url("**/blocks?status=confirmed")
            expect(page.locator("#blocks tbody tr")).to_have_count(1)
            found["confirmed"] = page.locator("#blocks tbody td").all_inner_texts()
            page.goto("/pools/litecoin/payments")
            expect(page.locator("#payments tbody tr")).to_have_count(1)
            found["payment"] = page.locator("#payments tbody td").all_inner_texts()
            screenshot(page, "payments")
            self.assert_clean(session)
            return found

        found = await browse(self.base, steps)
        self.assertEqual(found["pager"], "Page 1 of 1 · 3 in all")
        self.assertEqual(found["first of two"], "Page 1 of 2 · 3 in all\nNext →")
        self.assertEqual(found["second of two"], "← Previous\nPage 2 of 2 · 3 in all")
        self.assertEqual(found["last height"], "2,001")
        height, _, status, reward, effort, finder, shown_hash, txid = found["confirmed"]
        self.assertEqual(
            (height, status, reward, finder), ("2,001", "confirmed", "6.25000000 rLTC", f"{MINER}.rig1")
        )
        self.assertRegex(effort, r"^\d+\.\d %$")
        self.assertEqual((shown_hash, txid), (block_hash(2001), coinbase_txid(2001)))
        self.assertEqual(found["payment"][1:], ["4.12500000 rLTC", "0.00022600 rLTC", "2", "ab" * 32])

    async def test_phone_layout(self) -> None:
        """On a phone's screen the pool page is as wide as the screen: tables scroll in their own box."""

        def steps(session: Session) -> tuple[int, int]:
            page = session.page
            page.goto("/pools/litecoin")
            expect(page.locator("#blocks tbody tr")).to_have_count(3)
            expect(page.locator("#hashrate-chart")).to_have_attribute("data-points", str(HISTORY_STEPS + 1))
            widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
            screenshot(page, "phone-pool")
            self.assert_clean(session)
            return cast(tuple[int, int], tuple(widths))

        page_width, screen_width = await browse(self.base, steps, viewport=PHONE)
        self.assertLessEqual(page_width, screen_width)

    async def test_unknown_pages_are_html_404(self) -> None:
        """A path no page has, and a pool nobody runs, are HTML 404 pages."""

        def steps(session: Session) -> list[tuple[int, str, str, str]]:
            page = session.page
            seen = []
            for path in ("/no/such/page", "/pools/nope", "/pools/nope/blocks", "/static/nope.js"):
                response = page.goto(path)
                assert response is not None
                seen.append(
                    (
                        response.status,
                        response.headers["content-type"],
                        response.headers.get("content-security-policy", ""),
                        page.inner_text("h1"),
                    )
                )
                if path == "/pools/nope":
                    screenshot(page, "not-found")
            self.assert_clean(session)
            return seen

        seen = await browse(self.base, steps)
        html = "text/html; charset=utf-8"
        self.assertEqual(seen, [(404, html, CONTENT_SECURITY_POLICY, "Not found")] * 4)

    # -- the Ethereum-family pool: amounts in ether from exact wei, uncles and orphans ----

    async def test_ethereum_pool_page(self) -> None:
        """Its figures from OEP's keys, ethminer command lines for its stratum and getwork
        ports, its blocks (an uncle marked) and its payout, also on the payments page."""

        def steps(session: Session) -> dict[str, Any]:
            page = session.page
            page.goto("/pools/dev")
            expect(page.locator("#blocks tbody tr")).to_have_count(5)
            expect(page.locator("#payments tbody tr")).to_have_count(1)
            expect(page.locator("#miners tbody tr")).to_have_count(2)
            expect(page.locator("#network-height")).to_have_text("110")
            found = {
                "counters": [
                    page.inner_text(f"#{c}")
                    for c in (
                        "pool-hashrate",
                        "pool-miners",
                        "pool-workers",
                        "pool-blocks",
                        "network-difficulty",
                    )
                ],
                "network hashrate": page.inner_text("#network-hashrate"),
                "commands": page.locator("#ports .command").all_inner_texts(),
                "connect": page.inner_text("#connect p"),
                "blocks": [r.locator("td").all_inner_texts() for r in page.locator("#blocks tbody tr").all()],
                "payment": page.locator("#payments tbody td").all_inner_texts()[1:],
                "miners": [
                    r.locator("td").first.inner_text() for r in page.locator("#miners tbody tr").all()
                ],
                "chart": page.get_attribute("#hashrate-chart", "data-points"),
            }
            screenshot(page, "eth-pool")
            page.goto("/pools/dev/payments")
            expect(page.locator("#payments tbody tr")).to_have_count(1)
            found["payments page"] = page.locator("#payments tbody td").all_inner_texts()[1:]
            self.assert_clean(session)
            return found

        found = await browse(self.base, steps)
        self.assertEqual(found["counters"], ["53.33 MH/s", "2", "3", "2 / 2 / 1", "1.30 G"])
        self.assertEqual(found["network hashrate"], "100.00 MH/s")  # 1.3e9 over 13 s blocks
        self.assertEqual(
            found["commands"],
            [
                "ethminer -P stratum+tcp://ADDRESS.worker@127.0.0.1:8008",
                "ethminer -P http://127.0.0.1:8888/ADDRESS/worker",
            ],
        )
        self.assertIn("/ADDRESS/worker", found["connect"])
        heights = [row[0] for row in found["blocks"]]
        self.assertEqual(
            heights, [str(CANDIDATE_HEIGHT), "104", str(ORPHAN_HEIGHT), str(UNCLE_HEIGHT), "100"]
        )
        self.assertEqual(
            [(row[2], row[3]) for row in found["blocks"]],
            [
                ("pending", "—"),
                ("pending", "5.00000000 DEV"),
                ("orphaned", "0.00000000 DEV"),
                ("confirmed uncle", "3.75000000 DEV"),
                ("confirmed", "5.000000000000000123 DEV"),
            ],
        )
        self.assertEqual([row[4] for row in found["blocks"]], ["400.0 %"] * 5)
        self.assertEqual([row[5] for row in found["blocks"]], ["—"] * 5)  # OEP's records name no finder
        self.assertEqual(found["blocks"][1][6], eth_block_hash(104))
        self.assertEqual(found["payment"], ["1.00000000 DEV", "—", "1", PAYOUT_TX])
        self.assertEqual(found["payments page"], found["payment"])
        self.assertEqual(sorted(found["miners"]), sorted([LOGIN, "0x" + "cd" * 20]))
        self.assertEqual(found["chart"], "1")

    async def test_ethereum_blocks_page(self) -> None:
        """Every block with its status: the uncle marked, the block including it in the mark's
        title, the uncle's reward; the orphan's hash unknown; filtered by status."""

        def steps(session: Session) -> dict[str, Any]:
            page = session.page
            page.goto("/pools/dev/blocks")
            expect(page.locator("#blocks tbody tr")).to_have_count(5)
            uncle = page.locator("#blocks tbody tr", has=page.locator(".badge.uncle"))
            expect(uncle).to_have_count(1)
            found: dict[str, Any] = {
                "uncle": uncle.locator("td").all_inner_texts(),
                "uncle title": uncle.locator(".badge.uncle").get_attribute("title"),
                "orphan": page.locator("#blocks tbody tr", has_text="orphaned")
                .locator("td")
                .all_inner_texts(),
            }
            screenshot(page, "eth-blocks")
            page.click("#status-filter a:text-is('orphaned')")
            page.wait_for_url("**/blocks?status=orphaned")
            expect(page.locator("#blocks tbody tr")).to_have_count(1)
            found["orphaned"] = page.locator("#blocks tbody td").first.inner_text()
            page.goto("/pools/dev/blocks?status=confirmed")
            expect(page.locator("#blocks tbody tr")).to_have_count(2)
            self.assert_clean(session)
            return found

        found = await browse(self.base, steps)
        height, _, status, reward, _, finder, shown_hash, txid = found["uncle"]
        self.assertEqual(
            (height, status, reward, finder, shown_hash, txid),
            (str(UNCLE_HEIGHT), "confirmed uncle", "3.75000000 DEV", "—", eth_block_hash(UNCLE_HEIGHT), "-"),
        )
        self.assertEqual(found["uncle title"], f"included as an uncle by block #{NEPHEW_HEIGHT}")
        height, _, status, reward, _, _, shown_hash, _ = found["orphan"]
        self.assertEqual(
            (height, status, reward, shown_hash), (str(ORPHAN_HEIGHT), "orphaned", "0.00000000 DEV", "—")
        )
        self.assertEqual(found["orphaned"], str(ORPHAN_HEIGHT))

    async def test_ethereum_miner_dashboard(self) -> None:
        """A checksummed address typed in the lookup form leads to the login's dashboard:
        immature, balance and paid in ether to the wei, its workers and its payout."""

        def steps(session: Session) -> dict[str, Any]:
            page = session.page
            page.goto("/pools/dev")
            page.fill("#address", LOGIN_CHECKSUMMED)
            page.click("#lookup button[type=submit]")
            page.wait_for_url(f"**/pools/dev/miners/{LOGIN}")
            expect(page.locator("#workers tbody tr")).to_have_count(2)
            expect(page.locator("#payouts tbody tr")).to_have_count(1)
            found = {
                "title": page.inner_text("#miner-address"),
                "balances": [page.inner_text(f"#miner-{b}") for b in ("immature", "balance", "paid")],
                "workers": [
                    r.locator("td").first.inner_text() for r in page.locator("#workers tbody tr").all()
                ],
                "payouts": page.locator("#payouts tbody td").all_inner_texts()[1:],
                "hashrate": page.inner_text("#miner-hashrate"),
            }
            screenshot(page, "eth-miner")
            page.goto(f"/pools/dev/miners/{LOGIN_CHECKSUMMED}")
            expect(page.locator("#workers tbody tr")).to_have_count(2)
            found["checksummed"] = page.inner_text("#miner-balance")
            self.assert_clean(session)
            return found

        found = await browse(self.base, steps)
        self.assertEqual(found["title"], LOGIN)
        self.assertEqual(
            found["balances"],
            ["2.500000000000000007 DEV", "5.750000000000000094 DEV", "1.000000000000000007 DEV"],
        )
        self.assertEqual(found["workers"], [f"{LOGIN}.rig1", f"{LOGIN}.rig2"])
        self.assertEqual(found["payouts"], ["1.00000000 DEV", PAYOUT_TX])
        self.assertEqual(found["hashrate"], "46.67 MH/s")  # 14e9 hashes in 300 s
        self.assertEqual(found["checksummed"], "5.750000000000000094 DEV")

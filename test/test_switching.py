"""Switching ports: logins paid on every coin, and the move of miners
between pools (SwitchPorts over two real StratumPools on fakes, with
StringTransports on a task.Clock)."""

from __future__ import annotations

import dataclasses
from ipaddress import ip_network
from typing import Any

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from nomp.chain.address import address_of, decode_address
from nomp.chain.coinbase import CoinbaseLayout, PayoutPlan
from nomp.chain.jobs import Job, JobRegistry
from nomp.config import BanningConfig, NetworkConfig, PortConfig
from nomp.hashing import ALGORITHMS
from nomp.stratum.methods import MAX_WORKERS
from nomp.switching.logins import LoginRefused, payout_workers
from nomp.switching.ports import SwitchedPool, SwitchPorts
from test.fakes import (
    REGTEST_ADDRESS,
    Connection,
    RecordingTransport,
    StratumHarness,
    find_nonce,
    mainnet_template,
    pool_config,
    regtest_template,
    submit_params,
)
from test.test_stratum_protocol import EXTRANONCE2, NOW, PLAIN_PORT, meets

SCRYPT = ALGORITHMS["scrypt"]
LITECOIN = NetworkConfig(
    chain="main", pubkey_address_prefix=48, script_address_prefixes=(50, 5), bech32_hrp="ltc"
)
BITCOIN = NetworkConfig(chain="main", pubkey_address_prefix=0, script_address_prefixes=(5,), bech32_hrp="bc")
NO_SEGWIT = NetworkConfig(chain="main", pubkey_address_prefix=30, script_address_prefixes=(22,))
KEY_HASH = "751e76e8199196d454941c45d1b3a323f1433bd6"
SWITCH_PORT = PortConfig(listen="tcp:3400:interface=127.0.0.1", diff=0.0001)


class LoginTests(SynchronousTestCase):
    """payout_workers: one login, each coin's address for the same key or script."""

    coins = [("litecoin", LITECOIN), ("bitcoin", BITCOIN), ("nosegwit", NO_SEGWIT)]

    def test_key_hash(self) -> None:
        """40 hex digits are a key hash: each coin's P2PKH address of it, the rig name kept."""
        workers = payout_workers(f"{KEY_HASH}.rig1", self.coins)
        script = bytes.fromhex(f"76a914{KEY_HASH}88ac")
        self.assertEqual(
            workers,
            {coin: address_of(script, network) + ".rig1" for coin, network in self.coins},
        )
        self.assertEqual(workers["bitcoin"], "1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMH.rig1")

    def test_bech32_key_hash(self) -> None:
        """A v0 key-hash address keeps its program under each hrp; a coin without
        bech32 gets the P2PKH address of the same key hash."""
        workers = payout_workers("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", self.coins)
        self.assertEqual(workers["bitcoin"], "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")
        self.assertEqual(decode_address(workers["litecoin"], LITECOIN).script.hex(), f"0014{KEY_HASH}")
        self.assertEqual(decode_address(workers["nosegwit"], NO_SEGWIT).script.hex(), f"76a914{KEY_HASH}88ac")

    def test_script_hash(self) -> None:
        """A P2SH address is the same script hash with each coin's first script prefix."""
        workers = payout_workers("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", self.coins)
        self.assertEqual(workers["litecoin"], "MQMHBtvnBfxTzt3K2bdxgSE7qZPHSXWsGM")
        script = decode_address("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", BITCOIN).script
        self.assertEqual(decode_address(workers["nosegwit"], NO_SEGWIT).script, script)

    def test_address_of_a_later_coin(self) -> None:
        """The login may be an address of any of the switch's coins."""
        legacy = address_of(bytes.fromhex(f"76a914{KEY_HASH}88ac"), NO_SEGWIT)
        workers = payout_workers(f"{legacy}.a", self.coins)
        self.assertEqual(workers["nosegwit"], f"{legacy}.a")
        self.assertEqual(workers["bitcoin"], "1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMH.a")

    def test_taproot_without_bech32_refused(self) -> None:
        """A witness v1 program cannot be paid on a coin without bech32 addresses: refused."""
        taproot = "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0"
        with self.assertRaises(LoginRefused) as caught:
            payout_workers(taproot, self.coins)
        self.assertEqual(
            str(caught.exception),
            f"{taproot} cannot be paid on nosegwit: chain main has no segwit (bech32) addresses",
        )
        self.assertIn("bitcoin", payout_workers(taproot, self.coins[:2]))

    def test_base58_address_with_a_bech32_like_tail(self) -> None:
        """A base58 address whose part after its last 1 could be bech32 data is read as
        base58: bech32 never mixes cases."""
        legacy = "DFpN6QqFfUm3gKNaxN6tNcab1FArL9cZLE"
        self.assertEqual(decode_address(legacy, NO_SEGWIT).kind, "p2pkh")

    def test_no_address_refused(self) -> None:
        """A login that is no coin's address nor a key hash is refused, each coin's reason given."""
        with self.assertRaises(LoginRefused) as caught:
            payout_workers("nonsense.rig", self.coins[:2])
        self.assertEqual(
            str(caught.exception),
            "nonsense is no address of litecoin, bitcoin nor a 40-hex key hash "
            "(litecoin: wrong length; bitcoin: wrong length)",
        )


def _registry(harness: StratumHarness, first_id: int) -> JobRegistry:
    """The harness's pool with job ids from ``first_id``, as PoolService's start at random."""
    config = harness.config
    script = decode_address(config.address, config.coin.network).script
    layout = CoinbaseLayout(tx_version=2, signature=config.pool_signature.encode())
    registry = JobRegistry(config.coin.algorithm, PayoutPlan(script), layout, first_id=first_id)
    harness.registry = harness.pool.registry = registry
    return registry


class SwitchSetup:
    """Two pools (ltc and copy, each a StratumPool on fakes with a job) and a switch over them."""

    assertEqual: Any
    solo_pool: str | None = None  # "ltc" or "copy": that pool's payments scheme is solo

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(NOW)
        shipped = pool_config(ports=(PLAIN_PORT,))
        copy = dataclasses.replace(
            shipped,
            name="copy",
            coin=dataclasses.replace(shipped.coin, name="copycoin-regtest"),
            ports=(dataclasses.replace(PLAIN_PORT, listen="tcp:3336:interface=127.0.0.1"),),
        )
        solo = dataclasses.replace(shipped.payments, scheme="solo")
        if self.solo_pool == "ltc":
            shipped = dataclasses.replace(shipped, payments=solo)
        elif self.solo_pool == "copy":
            copy = dataclasses.replace(copy, payments=solo)
        self.ltc = StratumHarness(shipped, self.clock)
        self.copy = StratumHarness(copy, self.clock)
        _registry(self.ltc, 0x10)
        _registry(self.copy, 0x5000)
        self.ltc_job = self.ltc.new_job(mainnet_template())
        self.copy_job = self.copy.new_job(mainnet_template(height=2_000_001))
        self.ports = SwitchPorts(
            "scrypt",
            [
                SwitchedPool("ltc", self.ltc.server, self.ltc.pool),
                SwitchedPool("copy", self.copy.server, self.copy.pool),
            ],
            BanningConfig(),
            600.0,
            self.clock,
        )
        self.factory = self.ports.factory(SWITCH_PORT)

    def connect(self, ip: str = "10.1.1.1") -> Connection:
        protocol = self.factory.buildProtocol(IPv4Address("TCP", ip, 40000))
        if protocol is None:
            raise ConnectionRefusedError(f"the switch's port refused {ip}")
        transport = RecordingTransport(peerAddress=IPv4Address("TCP", ip, 40000))
        protocol.makeConnection(transport)
        return Connection(protocol, transport)

    def miner(self, login: str = f"{KEY_HASH}.rig", extranonce: bool = False) -> Connection:
        miner = self.connect()
        if extranonce:
            miner.request("mining.extranonce.subscribe")
        miner.subscribe()
        reply = miner.authorize(login)
        self.assertEqual(reply["result"], True, reply)
        return miner

    def share(self, miner: Connection, job: Job, login: str = f"{KEY_HASH}.rig", start: int = 0) -> list[Any]:
        assert miner.session.extranonce1 is not None
        nonce = find_nonce(job, miner.session.extranonce1 + EXTRANONCE2, meets(SWITCH_PORT.diff), start=start)
        return submit_params(login, job, EXTRANONCE2, nonce)

    def worker(self, harness: StratumHarness, login: str = f"{KEY_HASH}.rig") -> str:
        """The worker name ``login``'s shares are recorded under in ``harness``'s pool."""
        address, _, rig = login.partition(".")
        script = bytes.fromhex(f"76a914{address}88ac")
        return f"{address_of(script, harness.config.coin.network)}.{rig}"


class _SwitchCase(SwitchSetup, SynchronousTestCase):
    pass


class AttachTests(_SwitchCase):
    """Connections on a switching port are the current pool's."""

    def test_mines_for_the_current_pool(self) -> None:
        """A miner gets the default pool's job; its share is checked against it and
        recorded in its books under the login's address for that coin."""
        miner = self.connect()
        replies = miner.request("mining.subscribe", ["m/1"])
        notify = replies[-1]
        self.assertEqual((notify["method"], notify["params"][0]), ("mining.notify", self.ltc_job.job_id))
        self.assertIn(miner.protocol, self.ltc.server.connections)
        self.assertEqual(miner.authorize(f"{KEY_HASH}.rig")["result"], True)
        replies = miner.submit(self.share(miner, self.ltc_job))
        self.assertEqual(replies[-1]["result"], True, replies)
        self.assertEqual(self.ltc.recorder.valid, [(self.worker(self.ltc), SWITCH_PORT.diff)])
        self.assertEqual(self.copy.recorder.valid, [])

    def test_login_of_the_coin_address(self) -> None:
        """A coin's own address is accepted, and recorded as it is."""
        miner = self.miner(f"{REGTEST_ADDRESS}.r2")
        miner.submit(self.share(miner, self.ltc_job, f"{REGTEST_ADDRESS}.r2"))
        self.assertEqual(self.ltc.recorder.valid, [(f"{REGTEST_ADDRESS}.r2", SWITCH_PORT.diff)])

    def test_login_refused(self) -> None:
        """A login no coin of the switch can pay is refused with a clear Stratum error."""
        miner = self.connect()
        miner.subscribe()
        reply = miner.authorize("LboLesvYgFbLZtJeq7YWQBmsvVG6Gu9ssn.rig")  # a mainnet address
        self.assertEqual(reply["error"][0], 24)
        self.assertTrue(
            reply["error"][1].startswith(
                "LboLesvYgFbLZtJeq7YWQBmsvVG6Gu9ssn is no address of litecoin-regtest, copycoin-regtest"
            ),
            reply,
        )
        self.assertEqual(miner.authorize("bad:name")["error"][0], 24)

    def test_authorize_refusals(self) -> None:
        """No username is an invalid request; more logins than a connection may hold are refused."""
        miner = self.connect()
        (reply,) = miner.request("mining.authorize", [])
        self.assertEqual(reply["error"][:2], [20, "invalid params: expected username, password"])
        for rig in range(MAX_WORKERS):
            self.assertEqual(miner.authorize(f"{KEY_HASH}.r{rig}")["result"], True)
        reply = miner.authorize(f"{KEY_HASH}.one-more")
        self.assertEqual(reply["error"][:2], [24, f"at most {MAX_WORKERS} workers per connection"])
        self.assertEqual(miner.authorize(f"{KEY_HASH}.r0")["result"], True)  # one it has already

    def test_submit_under_a_pool_name_refused(self) -> None:
        """A share names its login: a per-coin name it was recorded under is not a login."""
        miner = self.miner()
        replies = miner.submit(self.share(miner, self.ltc_job, self.worker(self.ltc)))
        self.assertEqual(replies[-1]["error"][:2], [24, "unauthorized worker"])
        self.assertEqual(self.ltc.recorder.valid, [])

    def test_bans_and_limits(self) -> None:
        """The switch's own limits hold on its ports, and an IP the current pool
        banned for its shares is refused there too."""
        self.ports = SwitchPorts(
            "scrypt",
            list(self.ports.pools.values()),
            BanningConfig(connections_per_ip=1),
            600.0,
            self.clock,
        )
        self.factory = self.ports.factory(SWITCH_PORT)
        self.connect("10.1.1.1")
        with self.assertRaises(ConnectionRefusedError):
            self.connect("10.1.1.1")
        self.ltc.server.bans.ban("10.2.2.2", None, "invalid shares")
        with self.assertRaises(ConnectionRefusedError):
            self.connect("10.2.2.2")
        self.ports.move_to("copy")
        self.connect("10.2.2.2")  # not banned by the pool it is on now

    def test_pool_reload_counts_its_own_connections(self) -> None:
        """A pool's reloaded whitelist recounts the connections its own ports admitted,
        not the switch's attached to it."""
        self.miner()
        self.ltc.connect(ip="10.1.1.1")
        banning = dataclasses.replace(self.ltc.config.banning, whitelist=(ip_network("10.9.0.0/16"),))
        self.ltc.server.apply(dataclasses.replace(self.ltc.config, banning=banning))
        self.assertEqual(self.ltc.server.bans.gatekeeper.connections("10.1.1.1"), 1)

    def test_disconnect_releases(self) -> None:
        """A closed connection leaves the switch and its pool, its extranonce1 free again."""
        miner = self.miner()
        extranonce1 = miner.session.extranonce1
        assert extranonce1 is not None
        miner.lose()
        self.assertEqual((len(self.ports.connections), len(self.ltc.server.connections)), (0, 0))
        self.assertTrue(self.ltc.server.subscriptions.extranonces.claim(extranonce1))


class MoveTests(_SwitchCase):
    """move_to: every miner to the other pool, without a reconnect."""

    def test_move(self) -> None:
        """The miner keeps its connection, extranonce1 and difficulty and gets the new
        pool's job, clean; its shares go to the new pool, a share of the old pool's job
        still to the old pool."""
        miner = self.miner()
        extranonce1, difficulty = miner.session.extranonce1, miner.session.difficulty
        late_share = self.share(miner, self.ltc_job)
        self.assertIsNone(self.ports.can_move_to("copy"))
        moved = self.ports.move_to("copy")
        self.assertEqual((moved.miners, moved.kept, moved.renewed, moved.reconnected), (1, 1, 0, 0))
        (notify,) = miner.read()
        self.assertEqual(notify["method"], "mining.notify")
        self.assertEqual((notify["params"][0], notify["params"][-1]), (self.copy_job.job_id, True))
        self.assertFalse(miner.closing)
        self.assertEqual((miner.session.extranonce1, miner.session.difficulty), (extranonce1, difficulty))
        self.assertNotIn(miner.protocol, self.ltc.server.connections)
        self.assertIn(miner.protocol, self.copy.server.connections.subscribed())

        self.assertEqual(miner.submit(self.share(miner, self.copy_job))[-1]["result"], True)
        self.assertEqual(miner.submit(late_share)[-1]["result"], True)
        self.assertEqual(self.copy.recorder.valid, [(self.worker(self.copy), SWITCH_PORT.diff)])
        self.assertEqual(self.ltc.recorder.valid, [(self.worker(self.ltc), SWITCH_PORT.diff)])
        # Counted once: the old pool's ledger saw it.
        self.assertEqual(miner.submit(late_share)[-1]["error"][:2], [22, "duplicate share"])

    def test_new_connections_go_to_the_new_pool(self) -> None:
        """After a move a new miner gets the new pool's job."""
        self.ports.move_to("copy")
        miner = self.connect()
        notify = miner.request("mining.subscribe")[-1]
        self.assertEqual(notify["params"][0], self.copy_job.job_id)
        self.assertIn(miner.protocol, self.copy.server.connections)

    def test_new_job_of_the_new_pool_reaches_moved_miners(self) -> None:
        """The new pool's broadcasts reach moved miners; the old pool's do not."""
        miner = self.miner()
        self.ports.move_to("copy")
        miner.read()
        self.ltc.new_job(mainnet_template(height=2_000_002, previousblockhash="ab" * 32))
        self.assertEqual(miner.read(), [])
        job = self.copy.new_job(mainnet_template(height=2_000_003, previousblockhash="cd" * 32))
        (notify,) = miner.read()
        self.assertEqual(notify["params"][0], job.job_id)

    def test_taken_extranonce1_renewed(self) -> None:
        """When the new pool hands the miner's extranonce1 out already, a miner that
        takes mining.set_extranonce gets a new one, then the job; a share of the old
        pool's job made with the old value still counts there."""
        miner = self.miner(extranonce=True)
        old = miner.session.extranonce1
        assert old is not None
        late_share = self.share(miner, self.ltc_job)
        self.assertTrue(self.copy.server.subscriptions.extranonces.claim(old))
        moved = self.ports.move_to("copy")
        self.assertEqual((moved.kept, moved.renewed), (0, 1))
        set_extranonce, notify = miner.read()
        new = miner.session.extranonce1
        assert new is not None and new != old
        self.assertEqual(set_extranonce["method"], "mining.set_extranonce")
        self.assertEqual(set_extranonce["params"], [new.hex(), 4])
        self.assertEqual((notify["params"][0], notify["params"][-1]), (self.copy_job.job_id, True))
        self.assertEqual(miner.submit(late_share)[-1]["result"], True)
        self.assertEqual(len(self.ltc.recorder.valid), 1)

    def test_taken_extranonce1_without_set_extranonce(self) -> None:
        """A miner that does not take mining.set_extranonce and whose value the new pool
        holds is asked to reconnect and closed."""
        miner = self.miner()
        assert miner.session.extranonce1 is not None
        self.copy.server.subscriptions.extranonces.claim(miner.session.extranonce1)
        moved = self.ports.move_to("copy")
        self.assertEqual(moved.reconnected, 1)
        self.assertEqual([m["method"] for m in miner.read()], ["client.reconnect"])
        self.assertTrue(miner.closing)

    def test_value_held_in_the_pool_left(self) -> None:
        """The pool a miner left keeps its extranonce1 from its own miners while the
        miner may still send shares of its jobs, and frees it once the miner is gone."""
        miner = self.miner()
        extranonce1 = miner.session.extranonce1
        assert extranonce1 is not None
        self.ports.move_to("copy")
        ltc_values = self.ltc.server.subscriptions.extranonces
        self.assertFalse(ltc_values.claim(extranonce1))
        miner.lose()
        self.assertTrue(ltc_values.claim(extranonce1))
        self.assertTrue(self.copy.server.subscriptions.extranonces.claim(extranonce1))

    def test_back_and_forth(self) -> None:
        """Moved back, the miner mines for the first pool again with its value."""
        miner = self.miner()
        self.ports.move_to("copy")
        moved = self.ports.move_to("ltc")
        self.assertEqual((moved.miners, moved.kept), (1, 1))
        notify = miner.read()[-1]
        self.assertEqual(notify["params"][0], self.ltc_job.job_id)
        self.assertEqual(miner.submit(self.share(miner, self.ltc_job))[-1]["result"], True)
        self.assertEqual(self.ltc.recorder.valid, [(self.worker(self.ltc), SWITCH_PORT.diff)])

    def test_not_to_a_pool_without_job(self) -> None:
        """A pool with no job yet cannot take the miners."""
        self.copy.pool.registry = None
        self.assertEqual(self.ports.can_move_to("copy"), "pool copy has no job yet: it is still starting")

    def test_not_without_an_instance_byte(self) -> None:
        """While no extranonce1 instance byte is held, no miner is moved."""
        self.copy.server.set_instance(None)
        self.assertEqual(
            self.ports.can_move_to("copy"),
            "no extranonce1 instance byte is held yet (it is leased from Redis): try again shortly",
        )

    def test_unsubscribed_miner_subscribes_with_the_new_pool(self) -> None:
        """A connection that has not subscribed yet does so with the pool it was moved to."""
        miner = self.connect()
        self.ports.move_to("copy")
        self.assertEqual(miner.read(), [])
        notify = miner.request("mining.subscribe")[-1]
        self.assertEqual(notify["params"][0], self.copy_job.job_id)
        self.assertIn(miner.protocol, self.copy.server.connections.subscribed())


class SoloPoolTests(_SwitchCase):
    """A switch between a solo pool (ltc) and one that is not (copy): a late share is
    the pool's whose job it is, solo or not as that pool is."""

    solo_pool = "ltc"

    def setUp(self) -> None:
        super().setUp()
        self.solo: dict[str, list[tuple[str, bool]]] = {"ltc": [], "copy": []}  # (worker, solo)
        for name, harness in (("ltc", self.ltc), ("copy", self.copy)):
            self.patch(harness.recorder, "valid_share", self._recording(name, harness.recorder.valid_share))

    def _recording(self, name: str, valid_share: Any) -> Any:
        def record(worker: str, difficulty: float, solo: bool = False) -> None:
            valid_share(worker, difficulty, solo)
            self.solo[name].append((worker, solo))

        return record

    def block(self, miner: Connection, job: Job) -> list[Any]:
        """A share of ``job`` that is a block."""
        assert miner.session.extranonce1 is not None
        target = min(job.template.target, SCRYPT.share_target(SWITCH_PORT.diff))
        nonce = find_nonce(job, miner.session.extranonce1 + EXTRANONCE2, lambda value: value <= target)
        return submit_params(f"{KEY_HASH}.rig", job, EXTRANONCE2, nonce)

    def test_late_shares(self) -> None:
        """A late share of the solo pool's job after a move to the other is recorded solo
        there, and one of the other's job after the move back is not."""
        miner = self.miner()
        late_solo = self.share(miner, self.ltc_job)
        self.ports.move_to("copy")
        late_shared = self.share(miner, self.copy_job)
        self.assertEqual(miner.submit(late_solo)[-1]["result"], True)
        self.ports.move_to("ltc")
        self.assertEqual(miner.submit(late_shared)[-1]["result"], True)
        self.assertEqual(self.ltc.recorder.valid, [(self.worker(self.ltc), SWITCH_PORT.diff)])
        self.assertEqual(self.copy.recorder.valid, [(self.worker(self.copy), SWITCH_PORT.diff)])
        self.assertEqual(
            self.solo, {"ltc": [(self.worker(self.ltc), True)], "copy": [(self.worker(self.copy), False)]}
        )

    def test_late_blocks(self) -> None:
        """A late block of the solo pool's job is a solo candidate of that pool, and a
        late block of the other's job, sent once the miner is back on the solo pool, is not."""
        ltc_job = self.ltc.new_job(regtest_template(previousblockhash="cc" * 32, height=2_000_002))
        miner = self.miner()
        late_solo = self.block(miner, ltc_job)
        self.ports.move_to("copy")
        copy_job = self.copy.new_job(regtest_template(previousblockhash="dd" * 32, height=2_000_003))
        late_shared = self.block(miner, copy_job)
        self.ports.move_to("ltc")
        self.assertEqual(miner.submit(late_shared)[-1]["result"], True)
        self.ports.move_to("copy")
        self.assertEqual(miner.submit(late_solo)[-1]["result"], True)
        self.assertEqual([c.solo for c in self.ltc.pool.found], [True])
        self.assertEqual([c.solo for c in self.copy.pool.found], [False])
        self.assertEqual(
            self.solo, {"ltc": [(self.worker(self.ltc), True)], "copy": [(self.worker(self.copy), False)]}
        )

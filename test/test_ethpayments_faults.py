"""An Ethereum-family pool's payment run killed (SIGKILL) at each step, then run again:
every miner is paid its credit exactly once and the audit is clean. Redis is
restarted while a sent payout is still unrecorded. The dev node serves from
this test's reactor, a real redis-server holds OEP's keys, and
``nomp-payments run`` (the unlocker's run, then the payer's) is a process of
its own, killed through test/failpoints.py as the Bitcoin family's is."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import TestCase

from nomp.payments.ethpayer import FAILPOINTS as PAYER_STEPS
from nomp.store.oepschema import OepKeys
from test.ethnode import DevChain, start_dev_node
from test.servers import RedisServer
from test.test_ethaudit import (
    ALICE,
    BOB,
    COIN,
    DEPTH,
    FUNDS,
    POOL_ACCOUNT,
    find_block,
    hash_of,
    matured_credits,
    nomp_payments_here,
    write_eth_conf,
    write_key,
)
from test.test_payments import nomp_payments
from test.waiting import until

DB = 0  # of this test's own redis-server
LOCK_TIMEOUT = 1.5
# After crediting (the unlocker made the block's credits balances), then each step of a payout:
# after its journal entry, after signing, after the send before its record, after recording.
STEPS = ("after_matured", *PAYER_STEPS)
RESTART_AT = "after_sending"  # Redis restarts between this kill and the run after it
MINERS = (ALICE, BOB)
# Seven logins, paid in batches of 1, 2 and 4 (a run's first batch is one payout, each next
# twice the last), the run killed the Nth time it passes a step: (step, N, entries then open
# in the journal, how many of them signed, transactions then in the node's pool). Inside the
# third batch: reserved, none signed; signed, none sent; 3 of its 4 sent, none recorded. And
# at the second batch's record, which goes after the third batch's reserve.
BATCH_MINERS = (ALICE, BOB, *("0x" + f"{n:02x}" * 20 for n in (0xC3, 0xD4, 0xE5, 0xF6, 0x17)))
MID_BATCH = (
    ("after_reserving", 4, 4, 0, 3),
    ("after_signing", 5, 4, 4, 3),
    ("after_sending", 6, 4, 4, 6),
    ("after_recording", 2, 4, 0, 3),
)


def account(login: str) -> bytes:
    return bytes.fromhex(login[2:])


class KilledEthPaymentRunTests(TestCase):
    timeout = 300

    def start_parts(self) -> tuple[RedisServer, DevChain, Path]:
        """A persistent redis-server, a dev node whose pool account is funded, and the conf
        folder of a pool paying from it (with its key file): the server, the chain, the folder."""
        redis_server = RedisServer(persistent=True).start()
        self.addCleanup(redis_server.stop)
        node = start_dev_node(self, POOL_ACCOUNT, difficulty=1, alloc={POOL_ACCOUNT: FUNDS})
        key_file = write_key(Path(self.mktemp()))
        conf = write_eth_conf(
            Path(self.mktemp()), node.url, redis_server.port, DB, key_file, lock_timeout=LOCK_TIMEOUT
        )
        return redis_server, node.chain, conf

    async def run_again_and_check(
        self,
        step: str,
        redis_server: RedisServer,
        chain: DevChain,
        conf: Path,
        before: dict[str, int],
        credited: dict[str, int],
    ) -> None:
        """Once the killed run's lock has expired, a run that ends well: each login of
        ``before`` (its balance before the killed run) has received, once mined, exactly
        what the unlocker credited it since ``credited``, and no payout is left open."""
        keys = OepKeys.for_coin(COIN)
        await until(lambda: redis_server.command("EXISTS", keys.unlocker_lock, db=DB) == 0, timeout=10)
        again = await nomp_payments(conf, "run", "dev")
        self.assertEqual(again.returncode, 0, f"{step}: {again.stdout}{again.stderr}")
        chain.mine()
        rose = {login: chain.balance(account(login)) - before[login] for login in before}
        now_credited = matured_credits(redis_server, DB)
        expected = {login: now_credited[login] - credited.get(login, 0) for login in before}
        self.assertEqual(rose, expected, step)
        self.assertTrue(all(wei > 0 for wei in expected.values()), step)
        self.assertEqual(hash_of(redis_server, DB, keys.payouts_journal), {}, step)
        self.assertEqual(redis_server.command("ZCARD", keys.payments_pending, db=DB), 0, step)

    async def check_audit_clean(self, step: str, conf: Path) -> None:
        """``nomp-payments audit`` finds every difference zero."""
        status, out, err = await nomp_payments_here(conf, "audit", "dev")
        self.assertEqual((status, err), (0, ""), f"{step}: {out}")
        self.assertTrue(out.endswith("  clean: every difference is zero\n"), f"{step}: {out}")

    async def test_killed_at_every_step(self) -> None:
        """A block found each round; the run killed at the round's step and run again: each
        miner's account rises by exactly what the unlocker credited it, once, and the audit
        prints zero differences."""
        redis_server, chain, conf = self.start_parts()
        keys = OepKeys.for_coin(COIN)

        for round_number, step in enumerate(STEPS, 1):
            before = {login: chain.balance(account(login)) for login in MINERS}
            credited = matured_credits(redis_server, DB)
            find_block(chain, redis_server, DB, {ALICE: round_number, BOB: 2})
            chain.mine_blocks(DEPTH)

            killed = await nomp_payments(conf, "run", "dev", entry=("test.failpoints", step))
            self.assertEqual((killed.returncode, killed.stdout), (-9, ""), f"{step}: {killed.stderr}")
            if step == RESTART_AT:
                [entry] = hash_of(redis_server, DB, keys.payouts_journal).values()
                self.assertIn('"state": "signed"', entry)
                self.assertEqual(len(chain.pending_transactions), 1, "sent, not recorded")
                redis_server.restart()
            await self.run_again_and_check(step, redis_server, chain, conf, before, credited)
            await self.check_audit_clean(step, conf)

        self.assertEqual(
            redis_server.command("ZCARD", keys.payments_all, db=DB), len(STEPS) * len(MINERS), "once each"
        )
        self.assertEqual(chain.pending_transactions, ())

    async def test_killed_inside_a_batch(self) -> None:
        """Seven miners a round, the run killed inside its third batch (4 payouts) at each
        step, then run again: each miner paid its credit exactly once, the audit clean. Killed
        after 3 of the batch's 4 sends, Redis restarts before the next run."""
        redis_server, chain, conf = self.start_parts()
        keys = OepKeys.for_coin(COIN)
        paid_before = 0

        for round_number, (step, nth, left_open, signed_open, pooled) in enumerate(MID_BATCH, 1):
            before = {login: chain.balance(account(login)) for login in BATCH_MINERS}
            credited = matured_credits(redis_server, DB)
            shares = {login: 1 for login in BATCH_MINERS} | {ALICE: round_number}
            find_block(chain, redis_server, DB, shares)
            chain.mine_blocks(DEPTH)

            killed = await nomp_payments(conf, "run", "dev", entry=("test.failpoints_nth", step, str(nth)))
            self.assertEqual((killed.returncode, killed.stdout), (-9, ""), f"{step}: {killed.stderr}")
            journal = hash_of(redis_server, DB, keys.payouts_journal)
            self.assertEqual(len(journal), left_open, step)
            signed = sum('"state": "signed"' in entry for entry in journal.values())
            self.assertEqual(signed, signed_open, step)
            self.assertEqual(len(chain.pending_transactions), pooled, step)
            if step == RESTART_AT:
                redis_server.restart()
            await self.run_again_and_check(step, redis_server, chain, conf, before, credited)
            paid_before += len(BATCH_MINERS)
            self.assertEqual(redis_server.command("ZCARD", keys.payments_all, db=DB), paid_before, step)
            self.assertEqual(chain.pending_transactions, (), step)
            self.assertEqual(chain.nonce(POOL_ACCOUNT), paid_before, f"{step}: a transaction a payout")
            await self.check_audit_clean(step, conf)

"use strict";

/* A miner's dashboard: its workers, hashrate history, balances and payouts;
   read again from the API whenever the live stats move on. */
(() => {
  const { cell, setText } = NOMP;
  const poolName = document.body.dataset.pool;
  const address = document.body.dataset.address;
  const api = `${NOMP.apiPoolPath(poolName)}/miners/${encodeURIComponent(address)}`;
  const chart = NOMP.chart(
    document.getElementById("miner-chart"),
    document.getElementById("miner-readout"),
    NOMP.formatHashrate,
  );
  let pool = null; // the API's document of the pool: its symbol and unit
  let loading = false;

  function render(miner) {
    setText("miner-hashrate", NOMP.formatHashrate(miner.hashrate));
    setText("miner-workers", NOMP.formatCount(miner.workers.length));
    setText(
      "miner-shares",
      `${NOMP.formatDifficulty(miner.shares)} / ${NOMP.formatDifficulty(miner.invalidShares)}`,
    );
    setText("miner-immature", NOMP.formatAmount(miner.immature, pool));
    setText("miner-balance", NOMP.formatAmount(miner.balance, pool));
    setText("miner-paid", NOMP.formatAmount(miner.paid, pool));
    chart.set(miner.history || []);
    NOMP.fillRows(
      "workers",
      miner.workers,
      (worker) => [
        cell(worker.name),
        cell(NOMP.formatHashrate(worker.hashrate), "num"),
        cell(NOMP.timeAgo(worker.lastShare)),
        cell(NOMP.formatDifficulty(worker.difficulty), "num"),
      ],
      "No worker has sent shares lately.",
    );
    NOMP.fillRows(
      "payouts",
      miner.payments,
      (payment) => [
        cell(NOMP.timeAgo(payment.time)),
        cell(NOMP.formatAmount(payment.amount, pool), "num"),
        cell(NOMP.hash(payment.txid)),
      ],
      "Nothing paid yet.",
    );
  }

  function unknown(message) {
    NOMP.showNotice("miner-error", message);
    for (const id of ["miner-hashrate", "miner-workers", "miner-shares", "miner-immature", "miner-balance", "miner-paid"]) {
      setText(id, "—");
    }
    chart.set([]);
    NOMP.fillRows("workers", [], () => [], "No worker.");
    NOMP.fillRows("payouts", [], () => [], "Nothing paid.");
  }

  async function refresh() {
    if (loading) return;
    loading = true;
    try {
      render(await NOMP.getJSON(api));
      document.getElementById("miner-error").hidden = true;
    } catch (error) {
      if (error.status === 404) unknown(`This pool knows no shares, balance or payout of ${address}.`);
      else NOMP.showNotice("miner-error", `The miner cannot be loaded: ${error.message}`);
    } finally {
      loading = false;
    }
  }

  async function load() {
    try {
      pool = await NOMP.getJSON(NOMP.apiPoolPath(poolName));
    } catch (error) {
      NOMP.showNotice("miner-error", error.status === 404 ? `There is no pool named ${poolName}.` : error.message);
      return;
    }
    await refresh();
    NOMP.live(() => refresh());
  }

  load();
})();

"use strict";

/* A pool's page: its figures (following the live stats), hashrate chart,
   ports with a ready miner command line, top miners, blocks and payments. */
(() => {
  const { el, cell, setText } = NOMP;
  const RECENT = 10;
  const poolName = document.body.dataset.pool;
  const host = document.body.dataset.host || window.location.hostname;
  const api = NOMP.apiPoolPath(poolName);
  const chart = NOMP.chart(
    document.getElementById("hashrate-chart"),
    document.getElementById("hashrate-readout"),
    NOMP.formatHashrate,
  );
  let pool = null; // the API's document of this pool
  let blockCounts = null; // to reload the blocks when one is found or changes state

  function showCounters(hashrate, miners, workers, blocks) {
    setText("pool-hashrate", NOMP.formatHashrate(hashrate));
    setText("pool-miners", NOMP.formatCount(miners));
    setText("pool-workers", NOMP.formatCount(workers));
    if (blocks) {
      const counts = [blocks.pending, blocks.confirmed, blocks.orphaned].map(NOMP.formatCount);
      setText("pool-blocks", counts.join(" / "));
    }
  }

  /** The miner command line for one port: cpuminer's options, which most miners share;
   * for an Ethereum-family pool, ethminer's pool URL (getwork's path holds the login). */
  function commandLine(port) {
    if (pool.family === "ethereum") {
      if (port.protocol === "getwork") return `ethminer -P http://${host}:${port.port}/ADDRESS/worker`;
      const scheme = port.tls ? "stratum+ssl" : "stratum+tcp";
      return `ethminer -P ${scheme}://ADDRESS.worker@${host}:${port.port}`;
    }
    const scheme = port.tls ? "stratum+ssl" : "stratum+tcp";
    return `cpuminer -a ${pool.algorithm} -o ${scheme}://${host}:${port.port} -u ADDRESS.worker -p x`;
  }

  function difficulty(port) {
    if (!port.vardiff) return `difficulty ${NOMP.formatDifficulty(port.difficulty)}`;
    const range = `${NOMP.formatDifficulty(port.vardiff.min)} – ${NOMP.formatDifficulty(port.vardiff.max)}`;
    return `vardiff ${range} (starts at ${NOMP.formatDifficulty(port.difficulty)})`;
  }

  function renderPool() {
    setText("pool-symbol", pool.symbol);
    setText("pool-algorithm", pool.algorithm);
    showCounters(pool.hashrate, pool.miners, pool.workers, pool.blocks);
    blockCounts = JSON.stringify(pool.blocks);
    const network = pool.network;
    setText("network-difficulty", network ? NOMP.formatDifficulty(network.difficulty) : "—");
    setText("network-hashrate", network ? NOMP.formatHashrate(network.hashrate) : "—");
    setText("network-height", network ? NOMP.formatCount(network.height) : "—");
    const last = document.getElementById("last-block");
    if (pool.lastBlock) {
      last.replaceChildren(`#${NOMP.formatCount(pool.lastBlock.height)} · `, NOMP.timeAgo(pool.lastBlock.time));
    } else {
      last.textContent = "none yet";
    }
    const list = document.getElementById("ports");
    const ports = pool.ports.filter((port) => port.port !== null);
    if (ports.length === 0) {
      list.replaceChildren(el("li", { className: "empty", text: "This pool listens on no TCP port." }));
      return;
    }
    list.replaceChildren(
      ...ports.map((port) =>
        el(
          "li",
          { className: "port" },
          el(
            "p",
            { className: "port-facts" },
            el("span", { className: "port-number", text: `Port ${port.port}` }),
            el("span", { className: "port-difficulty", text: difficulty(port) }),
            el("span", { className: port.tls ? "badge tls" : "badge", text: port.tls ? "TLS" : "no TLS" }),
          ),
          el("code", { className: "command", text: commandLine(port) }),
        ),
      ),
    );
  }

  async function loadHistory() {
    const key = String(pool.coin).toLowerCase();
    try {
      const history = await NOMP.getJSON("/api/pool_stats");
      const points = [];
      for (const entry of history) {
        const stats = entry.pools && entry.pools[key];
        if (stats) points.push([entry.time, stats.hashrate]);
      }
      chart.set(points);
    } catch (error) {
      setText("hashrate-readout", `The history cannot be loaded: ${error.message}`);
    }
  }

  async function loadMiners() {
    try {
      const page = await NOMP.getJSON(`${api}/miners?per_page=${RECENT}`);
      NOMP.fillRows(
        "miners",
        page.items,
        (miner) => [
          cell(el("a", { href: NOMP.minerPath(poolName, miner.address), text: miner.address })),
          cell(NOMP.formatHashrate(miner.hashrate), "num"),
          cell(NOMP.formatCount(miner.workers), "num"),
          cell(NOMP.formatDifficulty(miner.shares), "num"),
        ],
        "No miner has sent shares lately.",
      );
    } catch (error) {
      NOMP.fillRows("miners", [], () => [], `The miners cannot be loaded: ${error.message}`);
    }
  }

  async function loadBlocks() {
    try {
      const page = await NOMP.getJSON(`${api}/blocks?per_page=${RECENT}`);
      const columns = (block) => NOMP.blockCells(block, pool, false);
      NOMP.fillRows("blocks", page.items, columns, "No block found yet.");
    } catch (error) {
      NOMP.fillRows("blocks", [], () => [], `The blocks cannot be loaded: ${error.message}`);
    }
  }

  async function loadPayments() {
    try {
      const page = await NOMP.getJSON(`${api}/payments?per_page=${RECENT}`);
      const columns = (payment) => NOMP.paymentCells(payment, pool);
      NOMP.fillRows("payments", page.items, columns, "No payment sent yet.");
    } catch (error) {
      NOMP.fillRows("payments", [], () => [], `The payments cannot be loaded: ${error.message}`);
    }
  }

  function onStats(stats) {
    const entry = stats.pools && stats.pools[String(pool.coin).toLowerCase()];
    if (!entry) return;
    showCounters(entry.hashrate, NOMP.minerCount(entry.workers), entry.workerCount, entry.blocks);
    chart.add([stats.time, entry.hashrate]);
    loadMiners();
    const counts = JSON.stringify(entry.blocks);
    if (counts !== blockCounts) {
      blockCounts = counts;
      loadBlocks();
      loadPayments();
    }
  }

  async function load() {
    try {
      pool = await NOMP.getJSON(api);
    } catch (error) {
      const message = error.status === 404 ? `There is no pool named ${poolName}.` : error.message;
      NOMP.showNotice("pool-error", message);
      return;
    }
    renderPool();
    await Promise.all([loadHistory(), loadMiners(), loadBlocks(), loadPayments()]);
    NOMP.live(onStats);
  }

  load();
})();

"use strict";

/* The home page: every pool in one table; its counters follow the live stats. */
(() => {
  const { el, cell, setText } = NOMP;
  const rows = new Map(); // stats key (the coin's name, lower case) -> that pool's cells

  function lastBlock(block) {
    if (!block) return cell("none yet");
    const text = el("span", null, `#${NOMP.formatCount(block.height)} · `, NOMP.timeAgo(block.time));
    return cell(text);
  }

  function render(pools) {
    const tbody = document.querySelector("#pools tbody");
    setText("pool-count", NOMP.formatCount(pools.length));
    let hashrate = 0;
    let workers = 0;
    if (pools.length === 0) {
      NOMP.fillRows("pools", [], () => [], "No pool is configured.");
    } else {
      tbody.replaceChildren();
      for (const pool of pools) {
        const cells = {
          hashrate: cell(NOMP.formatHashrate(pool.hashrate), "num"),
          miners: cell(NOMP.formatCount(pool.miners), "num"),
          workers: cell(NOMP.formatCount(pool.workers), "num"),
        };
        const name = el("a", { href: NOMP.poolPath(pool.name), text: pool.name });
        const title = el("span", null, name, " ", el("span", { className: "symbol", text: pool.symbol }));
        const network = pool.network ? NOMP.formatDifficulty(pool.network.difficulty) : "—";
        const row = el(
          "tr",
          { "data-pool": pool.name },
          cell(title),
          cell(pool.algorithm),
          cells.hashrate,
          cells.miners,
          cells.workers,
          cell(network, "num"),
          lastBlock(pool.lastBlock),
        );
        tbody.append(row);
        rows.set(String(pool.coin).toLowerCase(), cells);
        hashrate += pool.hashrate;
        workers += pool.workers;
      }
    }
    setText("global-hashrate", NOMP.formatHashrate(hashrate));
    setText("global-workers", NOMP.formatCount(workers));
  }

  function onStats(stats) {
    for (const [key, cells] of rows) {
      const pool = stats.pools && stats.pools[key];
      if (!pool) continue;
      cells.hashrate.textContent = NOMP.formatHashrate(pool.hashrate);
      cells.workers.textContent = NOMP.formatCount(pool.workerCount);
      cells.miners.textContent = NOMP.formatCount(NOMP.minerCount(pool.workers));
    }
    if (stats.global) {
      setText("global-hashrate", NOMP.formatHashrate(stats.global.hashrate));
      setText("global-workers", NOMP.formatCount(stats.global.workers));
    }
  }

  async function load() {
    try {
      render(await NOMP.getJSON("/api/pools"));
    } catch (error) {
      NOMP.fillRows("pools", [], () => [], `The pools cannot be loaded: ${error.message}`);
      return;
    }
    NOMP.live(onStats);
  }

  load();
})();

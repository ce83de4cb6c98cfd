"use strict";

/*
 * Shared by every page: elements built from data, the number and time
 * formats, the JSON API, and the live stats stream.
 *
 * Whatever comes from the API (worker names, addresses, hashes) is only
 * ever set as text (textContent, text nodes, attribute values): never as
 * markup, so a worker called "<script>..." is shown, not run.
 */
const NOMP = (() => {
  const COIN_DECIMALS = 8; // a Bitcoin-family coin's places; a pool's document says its own
  const POLL_INTERVAL_MS = 30000;
  const HASHRATE_UNITS = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s", "ZH/s"];
  const DIFFICULTY_SUFFIXES = ["", "k", "M", "G", "T", "P", "E"];
  const BLOCK_STATUSES = ["pending", "confirmed", "orphaned"];

  /** A new element: options.text becomes its text, options.className its class,
   * any other option an attribute; children (nodes or strings) are appended as they are. */
  function el(tag, options, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(options || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "className") node.className = value;
      else node.setAttribute(key, String(value));
    }
    node.append(...children);
    return node;
  }

  function setText(id, text) {
    const node = document.getElementById(id);
    if (node) node.textContent = text;
  }

  function showNotice(id, message) {
    const node = document.getElementById(id);
    if (!node) return;
    node.textContent = message;
    node.hidden = false;
  }

  // A JSON string (skipped whole, escapes and all), or an integer of 16 digits or more
  // outside one: past Number.MAX_SAFE_INTEGER, or close enough to it to be rounded.
  const STRING_OR_LONG_INTEGER = /"(?:[^"\\]|\\.)*"|(?<![\d.eE+-])-?\d{16,}(?![\d.eE])/g;

  /** JSON.parse, but an integer too long for a double's exact digits (an amount in wei)
   * becomes the string of its digits: formatCoins reads that as a BigInt, exactly. */
  function parseJSON(text) {
    return JSON.parse(text.replace(STRING_OR_LONG_INTEGER, (token) => (token[0] === '"' ? token : `"${token}"`)));
  }

  /** The JSON body of a GET; an Error with .status (and the API's message) otherwise. */
  async function getJSON(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    let body = null;
    try {
      body = parseJSON(await response.text());
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const message = body && typeof body.error === "string" ? body.error : `${response.status} ${response.statusText}`;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // -- addresses of pages and API calls ------------------------------------

  const poolPath = (pool) => `/pools/${encodeURIComponent(pool)}`;
  const minerPath = (pool, address) => `${poolPath(pool)}/miners/${encodeURIComponent(address)}`;
  const apiPoolPath = (pool) => `/api/pools/${encodeURIComponent(pool)}`;

  // -- formats ----------------------------------------------------------------

  function groupDigits(digits) {
    return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  function formatCount(value) {
    return Number.isFinite(value) ? groupDigits(String(Math.trunc(value))) : "—";
  }

  function formatHashrate(hashesPerSecond) {
    let value = Number(hashesPerSecond);
    if (!Number.isFinite(value)) return "—";
    let unit = 0;
    while (Math.abs(value) >= 1000 && unit < HASHRATE_UNITS.length - 1) {
      value /= 1000;
      unit += 1;
    }
    // Whole hashes per second, but a chart's axis below 10 H/s needs its fractions.
    const decimals = unit > 0 || (value !== 0 && Math.abs(value) < 10) ? 2 : 0;
    return `${value.toFixed(decimals)} ${HASHRATE_UNITS[unit]}`;
  }

  /** An amount in a coin's smallest unit (an integer, or its decimal string: satoshis,
   * wei) as coins of ``decimals`` places, with integer arithmetic only (BigInt division
   * and remainder): floating point would round the last digits. Every place is shown
   * down to the eighth; past it (wei), only as many as the amount has. */
  function formatCoins(units, symbol, decimals = COIN_DECIMALS) {
    if (units === null || units === undefined) return "—";
    let amount;
    try {
      amount = BigInt(units); // throws for a fraction: not an amount of the unit
    } catch (_) {
      return "—";
    }
    const negative = amount < 0n;
    if (negative) amount = -amount;
    const perCoin = 10n ** BigInt(decimals);
    const whole = groupDigits((amount / perCoin).toString());
    const shown = Math.min(decimals, COIN_DECIMALS);
    const places = (amount % perCoin).toString().padStart(decimals, "0");
    const fraction = places.slice(0, shown) + places.slice(shown).replace(/0+$/, "");
    const text = `${negative ? "-" : ""}${whole}${fraction ? `.${fraction}` : ""}`;
    return symbol ? `${text} ${symbol}` : text;
  }

  /** An amount of a pool's (its API document gives the symbol and the unit's decimals). */
  function formatAmount(units, pool) {
    return formatCoins(units, pool.symbol, pool.decimals);
  }

  /** Small difficulties as they are (a Stratum port's 0.001); large ones with a suffix. */
  function formatDifficulty(value) {
    if (value === null || value === undefined) return "—";
    let number = Number(value);
    if (!Number.isFinite(number)) return "—";
    if (Math.abs(number) < 100000) return String(Number(number.toPrecision(6)));
    let suffix = 0;
    while (Math.abs(number) >= 1000 && suffix < DIFFICULTY_SUFFIXES.length - 1) {
      number /= 1000;
      suffix += 1;
    }
    return `${number.toFixed(2)} ${DIFFICULTY_SUFFIXES[suffix]}`;
  }

  function formatPercent(ratio) {
    if (ratio === null || ratio === undefined || !Number.isFinite(Number(ratio))) return "—";
    return `${(Number(ratio) * 100).toFixed(1)} %`;
  }

  const pad = (n) => String(n).padStart(2, "0");

  /** Local date and time of unix seconds, to the minute. */
  function formatDate(unixSeconds) {
    if (!unixSeconds) return "—";
    const d = new Date(unixSeconds * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function formatAgo(unixSeconds) {
    if (!unixSeconds) return "never";
    const seconds = Math.max(0, Math.round(Date.now() / 1000 - unixSeconds));
    if (seconds < 60) return `${seconds} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return `${Math.floor(seconds / 86400)} d ago`;
  }

  /** "5 min ago", with the date in its title and datetime. */
  function timeAgo(unixSeconds) {
    if (!unixSeconds) return el("span", { text: "never" });
    const iso = new Date(unixSeconds * 1000).toISOString();
    return el("time", { datetime: iso, title: formatDate(unixSeconds), text: formatAgo(unixSeconds) });
  }

  /** A hash or txid, cut short by the stylesheet, whole in its title. */
  function hash(text) {
    if (!text) return el("span", { text: "—" });
    return el("span", { className: "hash", title: text, text });
  }

  // -- tables -----------------------------------------------------------------

  /** A table cell: a node as it is, anything else as text. */
  function cell(content, className) {
    const td = el("td", { className });
    if (content instanceof Node) td.append(content);
    else td.textContent = content === null || content === undefined ? "—" : String(content);
    return td;
  }

  /** Replace the rows of table #tableId: columns(item) gives each row's cells. */
  function fillRows(tableId, items, columns, emptyText) {
    const table = document.getElementById(tableId);
    if (!table) return;
    const tbody = table.tBodies[0];
    if (!items || items.length === 0) {
      const width = table.tHead ? table.tHead.rows[0].cells.length : 1;
      tbody.replaceChildren(el("tr", null, el("td", { colspan: width, className: "empty", text: emptyText })));
      return;
    }
    tbody.replaceChildren(...items.map((item) => el("tr", null, ...columns(item))));
  }

  function statusBadge(status) {
    const known = BLOCK_STATUSES.includes(status);
    return el("span", { className: known ? `badge status-${status}` : "badge", text: status || "unknown" });
  }

  /** A block's status, and an Ethereum uncle's badge with the height of the block including it. */
  function blockStatus(block) {
    const status = document.createDocumentFragment();
    status.append(statusBadge(block.status));
    if (block.uncle) {
      const nephew = `included as an uncle by block #${formatCount(block.nephewHeight)}`;
      status.append(" ", el("span", { className: "badge uncle", title: nephew, text: "uncle" }));
    }
    return status;
  }

  /** The cells of one block of /api/pools/<pool>/blocks; ``pool`` is the pool's API document. */
  function blockCells(block, pool, withTransaction) {
    const finder = document.createDocumentFragment();
    if (block.miner) finder.append(el("a", { href: minerPath(pool.name, block.miner), text: block.worker || block.miner }));
    else finder.append(block.worker || "—");
    if (block.solo) finder.append(" ", el("span", { className: "badge", text: "solo" }));
    const cells = [
      cell(formatCount(block.height), "num"),
      cell(timeAgo(block.time)),
      cell(blockStatus(block)),
      cell(formatAmount(block.reward, pool), "num"),
      cell(formatPercent(block.effort), "num"),
      cell(finder),
      cell(hash(block.hash)),
    ];
    if (withTransaction) cells.push(cell(hash(block.txid)));
    return cells;
  }

  /** The cells of one payout of /api/pools/<pool>/payments; ``pool`` is the pool's API document. */
  function paymentCells(payment, pool) {
    return [
      cell(timeAgo(payment.time)),
      cell(formatAmount(payment.total, pool), "num"),
      cell(formatAmount(payment.fee, pool), "num"),
      cell(formatCount(payment.recipients), "num"),
      cell(hash(payment.txid)),
    ];
  }

  /** Previous / next links of a paginated list (pages count from 0, as the API's). */
  function pager(container, page, perPage, total, hrefOfPage) {
    if (!container) return;
    const pages = Math.max(1, Math.ceil(total / perPage));
    container.replaceChildren();
    if (page > 0) container.append(el("a", { href: hrefOfPage(Math.min(page, pages) - 1), rel: "prev", text: "← Previous" }));
    container.append(el("span", { text: `Page ${page + 1} of ${pages} · ${formatCount(total)} in all` }));
    if (page + 1 < pages) container.append(el("a", { href: hrefOfPage(page + 1), rel: "next", text: "Next →" }));
  }

  /** A non-negative integer from the page's query string, or fallback. */
  function queryInteger(name, fallback) {
    const text = new URLSearchParams(window.location.search).get(name);
    const value = Number.parseInt(text === null ? "" : text, 10);
    return Number.isSafeInteger(value) && value >= 0 ? value : fallback;
  }

  // -- stats --------------------------------------------------------------------

  /** The number of addresses among a pool's workers in /api/stats (a worker is "address.name"). */
  function minerCount(workers) {
    const addresses = new Set();
    for (const worker of Object.keys(workers || {})) addresses.add(worker.split(".", 1)[0]);
    return addresses.size;
  }

  /** Call onStats with every /api/stats document the server pushes on
   * /api/live_stats; if the stream cannot be had, poll /api/stats instead. */
  function live(onStats) {
    const indicator = document.getElementById("live");
    const show = (state, text) => {
      if (!indicator) return;
      indicator.hidden = false;
      indicator.dataset.state = state;
      indicator.textContent = text;
    };
    let polling = null;
    const poll = async () => {
      try {
        onStats(await getJSON("/api/stats"));
        show("polling", "updates every 30 s");
      } catch (_) {
        show("offline", "offline");
      }
    };
    const startPolling = () => {
      if (polling !== null) return;
      show("polling", "updates every 30 s");
      polling = window.setInterval(poll, POLL_INTERVAL_MS);
    };
    if (!("EventSource" in window)) {
      startPolling();
      return;
    }
    const source = new EventSource("/api/live_stats");
    source.addEventListener("open", () => show("live", "live"));
    source.addEventListener("message", (event) => {
      let stats;
      try {
        stats = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      show("live", "live");
      onStats(stats);
    });
    source.addEventListener("error", () => {
      // CLOSED: the server refused the stream (no such endpoint); otherwise the browser retries by itself
      if (source.readyState === EventSource.CLOSED) startPolling();
      else show("offline", "reconnecting");
    });
  }

  return {
    el,
    setText,
    showNotice,
    parseJSON,
    getJSON,
    poolPath,
    minerPath,
    apiPoolPath,
    formatCount,
    formatHashrate,
    formatCoins,
    formatAmount,
    formatDifficulty,
    formatPercent,
    formatDate,
    formatAgo,
    timeAgo,
    hash,
    cell,
    fillRows,
    statusBadge,
    blockCells,
    paymentCells,
    pager,
    queryInteger,
    minerCount,
    live,
  };
})();

"use strict";

/* Switching ports: each switch, its pools and the one its miners mine for, read again every interval. */
(() => {
  const { el, cell } = NOMP;
  const REFRESH_MS = 15000;

  function switchRow(state) {
    const pools = el("span");
    state.pools.forEach((pool, index) => {
      if (index > 0) pools.append(", ");
      pools.append(pool === state.current ? el("strong", { text: pool }) : pool);
    });
    return el(
      "tr",
      { "data-switch": state.name },
      cell(state.name),
      cell(state.algorithm),
      cell(state.current),
      cell(pools),
      cell(NOMP.formatCount(state.miners), "num"),
      cell(NOMP.formatCount(state.switches), "num"),
      cell(state.last_reason || "—"),
    );
  }

  async function load() {
    const container = document.getElementById("switches");
    const notice = document.getElementById("switching-error");
    try {
      const switches = await NOMP.getJSON("/api/switching");
      notice.hidden = true;
      if (switches.length === 0) {
        container.replaceChildren(el("p", { className: "empty", text: "No switching ports." }));
        return;
      }
      const head = el(
        "tr",
        null,
        el("th", { text: "Switch" }),
        el("th", { text: "Algorithm" }),
        el("th", { text: "Mining for" }),
        el("th", { text: "Pools" }),
        el("th", { className: "num", text: "Miners" }),
        el("th", { className: "num", text: "Switches" }),
        el("th", { text: "Last switch" }),
      );
      const table = el("table", { className: "data" }, el("thead", null, head), el("tbody", null, ...switches.map(switchRow)));
      container.replaceChildren(el("div", { className: "table-wrap" }, table));
    } catch (error) {
      NOMP.showNotice("switching-error", `The switching ports cannot be shown: ${error.message}`);
    }
  }

  load();
  window.setInterval(load, REFRESH_MS);
})();

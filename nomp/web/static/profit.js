"use strict";

/* Profit switching: each switch's last ranking and decision, read again every interval. */
(() => {
  const { el, cell } = NOMP;
  const REFRESH_MS = 30000;

  function plural(count, one, many) {
    return `${NOMP.formatCount(count)} ${count === 1 ? one : many}`;
  }

  function decisionText(decision, outcome) {
    if (decision.action === "switch") {
      return `Switched ${decision.from} → ${decision.to}: ${decision.reason}${outcome ? ` (${outcome})` : ""}`;
    }
    return `Stays on ${decision.from}: ${decision.reason}`;
  }

  function rankingTable(state, unit) {
    const head = el(
      "tr",
      null,
      el("th", { text: "Pool" }),
      el("th", { className: "num", text: `Price (${unit})` }),
      el("th", { className: "num", text: "Block reward" }),
      el("th", { className: "num", text: "Height" }),
      el("th", { className: "num", text: `${unit} per GH/s per day` }),
    );
    const rows = state.ranking.map((estimate) => {
      const name = el("span", null, estimate.pool, " ", el("span", { className: "symbol", text: estimate.symbol }));
      if (estimate.pool === state.current) name.append(" ", el("span", { className: "badge", text: "current" }));
      return el(
        "tr",
        null,
        cell(name),
        cell(estimate.price, "num"),
        cell(NOMP.formatCoins(estimate.reward, estimate.symbol), "num"),
        cell(NOMP.formatCount(estimate.height), "num"),
        cell(estimate.revenuePerGigahashDay, "num"),
      );
    });
    if (rows.length === 0) rows.push(el("tr", null, el("td", { colspan: 5, className: "empty", text: "No pool could be valued." })));
    return el("div", { className: "table-wrap" }, el("table", { className: "data" }, el("thead", null, head), el("tbody", null, ...rows)));
  }

  function switchSection(state, unit) {
    const section = el("section", { "data-switch": state.name });
    section.append(el("h2", null, state.name, " ", el("span", { className: "badge", text: state.algorithm })));
    const counts = state.switches;
    section.append(
      el("p", null, `On ${state.current} since `, NOMP.timeAgo(state.since), ` · ${plural(counts.done, "switch", "switches")} made, ${NOMP.formatCount(counts.refused + counts.failed)} refused or failed`),
      el("p", { className: "decision", text: decisionText(state.decision, state.outcome) }),
      rankingTable(state, unit),
    );
    if (state.skipped.length > 0) {
      const list = el("ul", { className: "skipped" });
      for (const skipped of state.skipped) list.append(el("li", { text: `${skipped.pool}: ${skipped.reason}` }));
      section.append(el("h3", { text: "Not ranked" }), list);
    }
    return section;
  }

  async function load() {
    const container = document.getElementById("profit-switches");
    const notice = document.getElementById("profit-error");
    try {
      const profit = await NOMP.getJSON("/api/switching/profit");
      notice.hidden = true;
      if (!profit.enabled) {
        container.replaceChildren(el("p", { className: "empty", text: "Profit switching is not configured." }));
        return;
      }
      const summary = document.getElementById("profit-summary");
      const source = profit.source === "http" ? "an HTTP endpoint" : "a file";
      summary.replaceChildren(`Prices in ${profit.unit} from ${source}, ranked every ${profit.interval} s; last read `, NOMP.timeAgo(profit.prices.readAt), ".");
      if (profit.prices.error) NOMP.showNotice("profit-error", `The prices cannot be read: ${profit.prices.error}. No switch is made meanwhile.`);
      const sections = profit.switches.map((state) => switchSection(state, profit.unit));
      if (sections.length === 0) sections.push(el("p", { className: "empty", text: "No ranking yet." }));
      container.replaceChildren(...sections);
    } catch (error) {
      NOMP.showNotice("profit-error", `Profit switching cannot be shown: ${error.message}`);
    }
  }

  load();
  window.setInterval(load, REFRESH_MS);
})();

"use strict";

/* A pool's blocks, a page at a time, optionally of one status only. */
(() => {
  const DEFAULT_PER_PAGE = 25;
  const STATUSES = ["pending", "confirmed", "orphaned"];
  const poolName = document.body.dataset.pool;
  const page = NOMP.queryInteger("page", 0);
  const perPage = Math.min(Math.max(NOMP.queryInteger("per_page", DEFAULT_PER_PAGE), 1), 100);
  const requested = new URLSearchParams(window.location.search).get("status");
  const status = STATUSES.includes(requested) ? requested : null;

  function href(pageNumber, statusShown) {
    const query = new URLSearchParams();
    if (statusShown) query.set("status", statusShown);
    if (pageNumber > 0) query.set("page", String(pageNumber));
    if (perPage !== DEFAULT_PER_PAGE) query.set("per_page", String(perPage));
    const text = query.toString();
    return `${NOMP.poolPath(poolName)}/blocks${text ? `?${text}` : ""}`;
  }

  function renderFilter() {
    const filter = document.getElementById("status-filter");
    for (const choice of [null, ...STATUSES]) {
      const link = NOMP.el("a", { href: href(0, choice), text: choice || "all" });
      if (choice === status) link.setAttribute("aria-current", "page");
      filter.append(link);
    }
  }

  async function load() {
    renderFilter();
    const query = new URLSearchParams({ page: String(page), per_page: String(perPage) });
    if (status) query.set("status", status);
    try {
      const [pool, list] = await Promise.all([
        NOMP.getJSON(NOMP.apiPoolPath(poolName)),
        NOMP.getJSON(`${NOMP.apiPoolPath(poolName)}/blocks?${query}`),
      ]);
      const columns = (block) => NOMP.blockCells(block, pool, true);
      NOMP.fillRows("blocks", list.items, columns, page > 0 ? "No block on this page." : "No block found yet.");
      NOMP.pager(document.getElementById("pager"), list.page, list.per_page, list.total, (n) => href(n, status));
    } catch (error) {
      NOMP.fillRows("blocks", [], () => [], "No blocks to show.");
      NOMP.showNotice("list-error", `The blocks cannot be loaded: ${error.message}`);
    }
  }

  load();
})();

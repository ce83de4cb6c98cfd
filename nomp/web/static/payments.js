"use strict";

/* A pool's payouts, a page at a time. */
(() => {
  const DEFAULT_PER_PAGE = 25;
  const poolName = document.body.dataset.pool;
  const page = NOMP.queryInteger("page", 0);
  const perPage = Math.min(Math.max(NOMP.queryInteger("per_page", DEFAULT_PER_PAGE), 1), 100);

  function href(pageNumber) {
    const query = new URLSearchParams();
    if (pageNumber > 0) query.set("page", String(pageNumber));
    if (perPage !== DEFAULT_PER_PAGE) query.set("per_page", String(perPage));
    const text = query.toString();
    return `${NOMP.poolPath(poolName)}/payments${text ? `?${text}` : ""}`;
  }

  async function load() {
    const query = new URLSearchParams({ page: String(page), per_page: String(perPage) });
    try {
      const [pool, list] = await Promise.all([
        NOMP.getJSON(NOMP.apiPoolPath(poolName)),
        NOMP.getJSON(`${NOMP.apiPoolPath(poolName)}/payments?${query}`),
      ]);
      const columns = (payment) => NOMP.paymentCells(payment, pool);
      NOMP.fillRows("payments", list.items, columns, page > 0 ? "No payment on this page." : "No payment sent yet.");
      NOMP.pager(document.getElementById("pager"), list.page, list.per_page, list.total, href);
    } catch (error) {
      NOMP.fillRows("payments", [], () => [], "No payments to show.");
      NOMP.showNotice("list-error", `The payments cannot be loaded: ${error.message}`);
    }
  }

  load();
})();

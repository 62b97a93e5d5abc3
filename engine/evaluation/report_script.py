"""The evaluation report's one inline script: sorting and filtering of the slice tables (TFMA's slice browser is
the reference), added on top of a page that is complete without it.

Tables of class "slices" (the per-slice delta tables and the support table) get click-to-sort headers: the first
click sorts ascending, the second descending, the third restores the page's own order (worst slice first). Sorting
is numeric where every defined cell of the column reads as a number ("12,345 (under support)" is 12345, "+0.0123"
is 0.0123, an interval cell sorts by its row's estimate, carried in its data-sort attribute), by text otherwise;
an undefined cell ("—" or empty) sorts last either way, and ties keep the page's order. Tables also of class
"long" get a filter box above them: a substring of the slice name (first column, case-insensitive) hides the
other rows. Without the script the page shows every row in the page's order: the script only reorders and hides
rows it was given, it never fetches or builds any. No external resource, no storage, no network.
"""
from __future__ import annotations

SORT_CSS = """th.sortable{cursor:pointer}th.sortable[aria-sort=ascending]::after{content:" ▲"}
th.sortable[aria-sort=descending]::after{content:" ▼"}.slice-filter{margin:4px 0}.slice-filter input{margin-right:8px}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var each = function (list, f) { Array.prototype.forEach.call(list, f); };
  function text(td) {
    var s = td.textContent.replace(/\s+/g, " ").trim();
    return s === "" || s === "\u2014" ? null : s;
  }
  function number(td) {
    var s = td.hasAttribute("data-sort") ? td.getAttribute("data-sort") : text(td);
    if (s === null) return null;
    var m = /^\[?\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)/i.exec(s.replace(/\u2212/g, "-").replace(/,/g, ""));
    return m ? parseFloat(m[1]) : NaN;
  }
  function sort(table, original, th, col) {
    var next = {none: "ascending", ascending: "descending", descending: "none"};
    var order = next[th.getAttribute("aria-sort")] || "ascending";
    each(th.parentNode.cells, function (h) {
      if (h.classList.contains("sortable")) h.setAttribute("aria-sort", "none");
    });
    th.setAttribute("aria-sort", order);
    var rows = original.slice();
    if (order !== "none") {
      var nums = rows.map(function (r) { return number(r.cells[col]); });
      var numeric = nums.every(function (k) { return k === null || !isNaN(k); });
      var keys = numeric ? nums : rows.map(function (r) {
        var t = text(r.cells[col]);
        return t === null ? null : t.toLowerCase();
      });
      var sign = order === "descending" ? -1 : 1;
      var at = rows.map(function (r, i) { return i; });
      at.sort(function (a, b) {
        var x = keys[a], y = keys[b];
        if (x === null || y === null) return (x === null) - (y === null) || a - b;
        return (x < y ? -sign : x > y ? sign : 0) || a - b;
      });
      rows = at.map(function (i) { return rows[i]; });
    }
    var body = table.tBodies[0];
    rows.forEach(function (r) { body.appendChild(r); });
  }
  function filter(table, original) {
    var bar = document.createElement("div"), box = document.createElement("input");
    var shown = document.createElement("span");
    bar.className = "slice-filter";
    box.type = "search";
    box.placeholder = "filter slices";
    box.setAttribute("aria-label", "show only the slices whose name contains");
    shown.className = "note";
    bar.appendChild(box);
    bar.appendChild(shown);
    table.parentNode.insertBefore(bar, table);
    box.addEventListener("input", function () {
      var q = box.value.trim().toLowerCase(), n = 0;
      original.forEach(function (r) {
        var hit = r.cells[0].textContent.toLowerCase().indexOf(q) >= 0;
        r.hidden = !hit;
        n += hit ? 1 : 0;
      });
      shown.textContent = q ? n + " of " + original.length + " slices" : "";
    });
  }
  each(document.querySelectorAll("table.slices"), function (table) {
    var original = Array.prototype.slice.call(table.tBodies[0].rows);
    each(table.tHead.rows[0].cells, function (th, col) {
      if (!th.textContent.trim()) return;
      th.classList.add("sortable");
      th.tabIndex = 0;
      th.title = "sort by this column (a third click restores the page's order)";
      th.setAttribute("aria-sort", "none");
      th.addEventListener("click", function () { sort(table, original, th, col); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(table, original, th, col); }
      });
    });
    if (table.classList.contains("long")) filter(table, original);
  });
})();
"""

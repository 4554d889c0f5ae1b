// Sorts the rows of every `table.sortable` by the column whose header is clicked (again:
// the other way). A cell that starts with a number (a mean "86.43 ± 0.81", a difference
// "+0.15 [−5.61, +5.91]", an epoch "2*", a rank) sorts by that number; the others ("—",
// "(reference)", "floor") sort after every number, by their text; ties keep their order.
"use strict";
(function () {
  var NUMBER = /^\s*([-+\u2212]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)/;

  function key(cell) {
    var text = cell.textContent.trim();
    var m = NUMBER.exec(text);
    return { num: m ? parseFloat(m[1].replace("\u2212", "-")) : null, text: text };
  }

  function compare(a, b, dir) {
    if (a.num !== null && b.num !== null) return dir * (a.num - b.num);
    if (a.num !== null) return -1;
    if (b.num !== null) return 1;
    return dir * (a.text < b.text ? -1 : a.text > b.text ? 1 : 0);
  }

  function sortBy(table, th) {
    var col = th.cellIndex;
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var body = table.tBodies[0];
    var rows = Array.prototype.map.call(body.rows, function (row, i) {
      return { row: row, i: i, key: key(row.cells[col]) };
    });
    rows.sort(function (a, b) {
      return compare(a.key, b.key, dir) || a.i - b.i;
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
  }

  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.tabIndex = 0;
      th.title = "sort by this column";
      th.addEventListener("click", function () { sortBy(table, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th); }
      });
    });
  });
})();

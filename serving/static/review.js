// Review page helpers (no build step). The server validates everything again; this only guides.
(function () {
  "use strict";
  // Whole queue rows are clickable.
  document.querySelectorAll("tr[data-href]").forEach(function (row) {
    row.addEventListener("click", function (ev) {
      if (ev.target.closest("a")) return;
      window.location.href = row.getAttribute("data-href");
    });
  });
  var form = document.getElementById("decision-form");
  if (!form) return;
  var select = document.getElementById("reason_code");
  var note = document.getElementById("note");
  var hint = document.getElementById("note-hint");
  function decision() {
    var checked = form.querySelector("input[name=decision]:checked");
    return checked ? checked.value : null;
  }
  function refresh() {
    var d = decision();
    Array.prototype.forEach.call(select.options, function (opt) {
      if (!opt.value) return;
      var fits = !d || opt.getAttribute("data-decisions").split(" ").indexOf(d) >= 0;
      opt.hidden = !fits;
      opt.disabled = !fits;
      if (!fits && opt.selected) select.value = "";
    });
    var needReason = d === "reject" || d === "request_change" ||
      (d === "approve" && select.hasAttribute("data-override-required"));
    select.required = needReason;
    var chosen = select.options[select.selectedIndex];
    var needNote = chosen && chosen.hasAttribute("data-needs-note");
    note.required = !!needNote;
    hint.textContent = needNote ? "(required for \u201cother\u201d)" : "(optional)";
  }
  form.addEventListener("change", refresh);
  form.addEventListener("submit", function () {
    var button = document.getElementById("submit-decision");
    // the idempotency key makes a double submit harmless; this just avoids the second request
    setTimeout(function () { button.disabled = true; }, 0);
  });
  refresh();
})();

// Small progressive enhancements; every page works without JavaScript.
(function () {
  "use strict";
  var film = document.getElementById("film");
  var caption = document.getElementById("film-caption");
  var picks = document.querySelectorAll(".heatmap-pick");
  picks.forEach(function (button) {
    button.addEventListener("click", function () {
      var on = button.getAttribute("aria-pressed") !== "true";
      picks.forEach(function (b) { b.setAttribute("aria-pressed", "false"); });
      if (on) {
        button.setAttribute("aria-pressed", "true");
        film.src = button.dataset.src;
        caption.textContent = "Attention of " + button.dataset.label + " over the film (brighter: more attention).";
      } else {
        film.src = film.dataset.plain;
        caption.textContent = "Model input, windowed for display.";
      }
    });
  });
  var form = document.getElementById("sign-form");
  if (!form) { return; }
  var state = document.getElementById("edit-state");
  var fields = form.querySelectorAll("textarea[data-draft]");
  function update() {
    var changed = Array.prototype.some.call(fields, function (t) { return t.value.trim() !== t.dataset.draft.trim(); });
    state.textContent = changed ? "Edited: the signed report will differ from the draft." : "Unchanged from the draft.";
  }
  fields.forEach(function (t) { t.addEventListener("input", update); });
  form.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && document.getElementById("sign-button")) { form.requestSubmit(); }
  });
  form.addEventListener("submit", function () {
    var button = document.getElementById("sign-button");
    if (button) { button.disabled = true; button.textContent = "Signing…"; }
  });
})();

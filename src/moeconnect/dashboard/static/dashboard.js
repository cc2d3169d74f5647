// Copy buttons: the only script. Without JavaScript the buttons stay hidden and the
// read-only fields can still be selected and copied by hand.
(function () {
  "use strict";
  function announce(text) {
    var live = document.getElementById("live");
    if (live) { live.textContent = text; }
  }
  function copy(button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    if (!field) { return; }
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      announce("Copied to the clipboard");
      setTimeout(function () { button.textContent = label; }, 2000);
    };
    var fallback = function () {
      field.focus();
      field.select();
      try { document.execCommand("copy"); done(); } catch (e) { announce("Select the text and copy it"); }
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, fallback);
    } else {
      fallback();
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    var buttons = document.querySelectorAll("button[data-copy]");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].hidden = false;
      buttons[i].addEventListener("click", function (event) { copy(event.currentTarget); });
    }
  });
})();

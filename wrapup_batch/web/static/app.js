// The analysts' page: the file drop zone, and live progress from server-sent events.
// No build step; served as is (the Content-Security-Policy allows only scripts from this site).
(function () {
  "use strict";

  function setUpDrop() {
    var drop = document.getElementById("drop");
    var input = document.getElementById("file");
    var name = document.getElementById("file-name");
    if (!drop || !input) return;
    function show() {
      name.textContent = input.files && input.files.length ? input.files[0].name : "";
      drop.classList.toggle("has-file", !!name.textContent);
    }
    input.addEventListener("change", show);
    ["dragenter", "dragover"].forEach(function (type) {
      drop.addEventListener(type, function (e) { e.preventDefault(); drop.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (type) {
      drop.addEventListener(type, function (e) { e.preventDefault(); drop.classList.remove("over"); });
    });
    drop.addEventListener("drop", function (e) {
      if (e.dataTransfer && e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        show();
      }
    });
  }

  function setUpProgress() {
    var box = document.getElementById("progress");
    if (!box || !box.dataset.events || !window.EventSource) return;
    var source = new EventSource(box.dataset.events);
    source.addEventListener("progress", function (e) { box.innerHTML = e.data; });
    source.addEventListener("end", function () { source.close(); window.location.reload(); });
  }

  document.addEventListener("DOMContentLoaded", function () { setUpDrop(); setUpProgress(); });
})();

// unveil dashboard: small enhancements only; every page works without this script.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // a filter change applies at once (the Filter button stays for keyboards and no-script)
  const state = document.getElementById("state");
  if (state && state.form) {
    state.addEventListener("change", () => state.form.requestSubmit());
  }
});

// a live part of a page (data-live="<stream url>") is drawn again whenever the server sends it
document.addEventListener("DOMContentLoaded", () => {
  for (const part of document.querySelectorAll("[data-live]")) {
    const stream = new EventSource(part.dataset.live);
    stream.addEventListener("update", (event) => {
      part.innerHTML = event.data;
      part.dataset.updated = String(Number(part.dataset.updated || "0") + 1);
    });
  }
});

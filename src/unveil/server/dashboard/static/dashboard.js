// unveil dashboard: small enhancements only; every page works without this script.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // a filter change applies at once (the Filter button stays for keyboards and no-script)
  const state = document.getElementById("state");
  if (state && state.form) {
    state.addEventListener("change", () => state.form.requestSubmit());
  }
});

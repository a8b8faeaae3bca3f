// sluice console: live regions and confirmations. Fragments come
// rendered and escaped by the server; this only puts them in place.
"use strict";

for (const region of document.querySelectorAll("[data-live]")) {
  const source = new EventSource(region.dataset.live);
  source.addEventListener("update", (event) => {
    region.innerHTML = event.data;
  });
  // An import that ended: its page is reloaded to show what it reported.
  source.addEventListener("done", () => {
    source.close();
    window.location.reload();
  });
}

for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });
}

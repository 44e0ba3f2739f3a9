// Shared by every admin page: a confirmation before destructive forms (data-confirm).
// Data is never written as markup: text goes in with textContent.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement)) return;
  const question = form.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

window.admin = {
  csrfToken: () => document.body.dataset.csrf || "",
  // GET JSON from the panel's API; a lost session sends the browser to the login page.
  async getJson(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" },
                                         credentials: "same-origin" });
    if (response.status === 401) {
      window.location.assign("/admin/login?next=" + encodeURIComponent(window.location.pathname));
      throw new Error("logged out");
    }
    if (!response.ok) throw new Error(`${path}: ${response.status}`);
    return response.json();
  },
  el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  },
};

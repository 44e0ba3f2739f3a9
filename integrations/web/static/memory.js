// The memory panel: what the assistant remembers about this person, to view, edit, delete and
// export (/api/memories, docs/memory.md), and the Remember button, which sends the typed text
// as "/remember ...": a worker screens it like any message before keeping it.

const $ = (selector) => document.querySelector(selector);
const USER_KEY = "assistant.userId";  // the chat's own local-mode id (app.js STORAGE.user)

const session = { local: true, csrf: null, loaded: null };

function loadSession() {
  session.loaded ??= fetch("/auth/session", { headers: { Accept: "application/json" } })
    .then((response) => (response.ok ? response.json() : null))
    .then((body) => {
      if (body?.signed_in) {
        session.local = false;
        session.csrf = body.csrf_token;
      }
    })
    .catch(() => {});
  return session.loaded;
}

function url(path = "") {
  let user = null;
  try { user = localStorage.getItem(USER_KEY); } catch { /* none */ }
  const query = session.local && user ? `?user_id=${encodeURIComponent(user)}` : "";
  return `/api/memories${path}${query}`;
}

async function call(method, path = "", body = undefined) {
  await loadSession();
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (session.csrf) headers["X-CSRF-Token"] = session.csrf;
  const response = await fetch(url(path), {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    let message = `The server answered ${response.status}.`;
    try { message = (await response.json()).error?.message || message; } catch { /* keep */ }
    throw new Error(message);
  }
  return response.status === 204 ? null : response.json();
}

function showError(text) {
  const error = $("#memory-error");
  error.textContent = text;
  error.hidden = !text;
}

function button(label, action, testId) {
  const made = document.createElement("button");
  made.type = "button";
  made.textContent = label;
  made.dataset.testid = testId;
  made.addEventListener("click", action);
  return made;
}

function row(memory) {
  const item = document.createElement("li");
  item.dataset.memoryId = memory.id;
  const text = document.createElement("span");
  text.className = "memory-text";
  text.textContent = memory.text;  // text, never HTML
  item.append(text);
  if (memory.automatic) {  // noticed by the assistant, not asked for (ASSISTANT_LONGTERM_AUTO)
    const mark = document.createElement("span");
    mark.className = "memory-automatic";
    mark.textContent = "noticed";
    mark.title = "The assistant noticed this in a message; you did not ask it to remember.";
    item.append(mark);
  }
  item.append(
    button("Edit", () => edit(item, memory), "memory-edit"),
    button("Delete", () => remove(memory), "memory-delete"));
  return item;
}

function edit(item, memory) {
  const input = document.createElement("input");
  input.value = memory.text;
  input.dataset.testid = "memory-input";
  input.setAttribute("aria-label", "Memory text");
  item.replaceChildren(input,
    button("Save", async () => {
      try {
        await call("PATCH", `/${memory.id}`, { text: input.value });
        await refresh();
      } catch (error) { showError(error.message); }
    }, "memory-save"),
    button("Cancel", () => item.replaceWith(row(memory)), "memory-cancel"));
  input.focus();
}

async function remove(memory) {
  try {
    await call("DELETE", `/${memory.id}`);
    await refresh();
  } catch (error) { showError(error.message); }
}

async function refresh() {
  showError("");
  const memories = await call("GET");
  $("#memory-list").replaceChildren(...memories.map(row));
  $("#memory-empty").hidden = memories.length > 0;
}

async function exportJson() {
  try {
    const data = await call("GET", "/export");
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)],
      { type: "application/json" }));
    link.download = "memories.json";
    link.click();
    URL.revokeObjectURL(link.href);
  } catch (error) { showError(error.message); }
}

function remember() {
  const input = $("#message-input");
  const text = input.value.trim();
  if (!text) { input.focus(); return; }
  input.value = text.startsWith("/remember") ? text : `/remember ${text}`;
  input.dispatchEvent(new Event("input", { bubbles: true }));
  $("#composer").requestSubmit();
}

$("#memory-open").addEventListener("click", async () => {
  $("#memory-panel").showModal();
  try { await refresh(); } catch (error) { showError(error.message); }
});
$("#memory-close").addEventListener("click", () => $("#memory-panel").close());
$("#memory-export").addEventListener("click", exportJson);
$("#memory-forget-all").addEventListener("click", async () => {
  try {
    await call("DELETE");
    await refresh();
  } catch (error) { showError(error.message); }
});
$("#remember").addEventListener("click", remember);

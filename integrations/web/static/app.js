// The web chat: sends messages to /api/chat, streams the reply in, and keeps the conversation
// id in localStorage so a reload shows the conversation again. No framework, no build step.

import { renderMarkdown } from "./markdown.js";
import { readEvents } from "./sse.js";

const STORAGE = {
  conversation: "assistant.conversationId",
  user: "assistant.userId",
  pending: "assistant.pendingMessage",  // the message being answered, to resume after a reload
};
const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const COUNTER_FROM = 0.75;  // show the character counter from this share of the limit
const RESUME_WITHIN_MS = 10 * 60 * 1000;
const PINNED_WITHIN_PX = 120;
const TEXTAREA_MAX_PX = 220;
const MESSAGES = {
  offline: "The assistant is busy or offline, try again in a moment.",
  network: "Can't reach the assistant. Check your connection and try again.",
  interrupted: "The answer was interrupted. Try again.",
  load: "Couldn't load your conversation: the assistant may be offline. Reload the page to try again.",
  empty: "(The assistant sent an empty answer.)",
};

const $ = (selector) => document.querySelector(selector);
const ui = {
  chat: $("#chat"),
  messages: $('[data-testid="messages"]'),
  welcome: $("#welcome"),
  input: $('[data-testid="message-input"]'),
  send: $('[data-testid="send-button"]'),
  form: $("#composer"),
  newConversation: $('[data-testid="new-conversation"]'),
  counter: $("#char-count"),
  error: $("#error"),
  errorText: $("#error-text"),
  errorClose: $("#error-close"),
  jump: $("#jump"),
};

// localStorage can be missing or refuse writes (private windows, quotas): the chat still works.
const store = {
  get(key) { try { return localStorage.getItem(key); } catch { return null; } },
  set(key, value) { try { localStorage.setItem(key, value); } catch { /* not kept */ } },
  remove(key) { try { localStorage.removeItem(key); } catch { /* nothing kept */ } },
};

/** A random id matching the API's id pattern (getRandomValues works outside secure contexts). */
function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function storedId(key) {
  const value = store.get(key);
  return value && ID_PATTERN.test(value) ? value : null;
}

function userId() {
  let id = storedId(STORAGE.user);
  if (!id) {
    id = `web-${newId()}`;
    store.set(STORAGE.user, id);
  }
  return id;
}

// Who is using the page (GET /auth/session): local mode, or a signed-in person whose CSRF
// token goes with every state-changing call (docs/security.md).
const session = { mode: "local", csrf: null };

/** Headers for a call to /api; with a session, its CSRF token. */
function apiHeaders(headers = {}) {
  return session.csrf ? { ...headers, "X-CSRF-Token": session.csrf } : headers;
}

function signIn() {
  window.location.assign(`/auth/login?next=${encodeURIComponent(window.location.pathname)}`);
}

/** False when the page is leaving for the sign-in page. */
async function loadSession() {
  let body = null;
  try {
    const response = await fetch("/auth/session", { headers: { Accept: "application/json" } });
    if (response.ok) body = await response.json();
  } catch { /* offline: the first call will say so */ }
  if (!body) return true;
  session.mode = body.mode;
  if (body.mode === "signin" && !body.signed_in) {
    signIn();
    return false;
  }
  if (body.signed_in) {
    session.csrf = body.csrf_token;
    $("#account-name").textContent = body.name || body.handle;
    $("#sign-out-token").value = body.csrf_token;
    $("#account").hidden = false;
  } else {
    $("#local-mode").hidden = false;
  }
  return true;
}

const state = {
  conversationId: storedId(STORAGE.conversation),
  userId: userId(),
  streaming: false,
  loading: true,
  controller: null,
  pinned: true,  // follow new text unless the reader scrolled up
  retry: null,   // {text, messageId} of a refused send, so resending it is answered once
};

const number = new Intl.NumberFormat();
const charCount = (text) => [...text].length;  // code points, as the server counts
const maxChars = () => Number(ui.input.dataset.maxChars) || 4000;

// -- messages ---------------------------------------------------------------------------------

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function typingIndicator() {
  const dots = element("span", "typing");
  dots.setAttribute("data-testid", "typing");
  dots.append(element("span", "visually-hidden", "The assistant is typing"));
  for (let i = 0; i < 3; i += 1) dots.append(element("span", "dot"));
  return dots;
}

function addMessage(role, { text = "", messageId = null, createdAt = null, status = "done" } = {}) {
  const item = element("li", `message ${role}`);
  item.setAttribute("data-testid", "message");
  item.dataset.role = role;
  if (messageId) item.dataset.messageId = messageId;
  const bubble = element("div", "bubble");
  bubble.append(element("span", "visually-hidden", role === "user" ? "You:" : "Assistant:"));
  const body = element("div", "text");
  body.setAttribute("data-testid", "message-text");
  bubble.append(body);
  if (role === "assistant") {
    const avatar = element("span", "avatar");
    avatar.setAttribute("aria-hidden", "true");
    avatar.append($(".topbar .logo svg").cloneNode(true));
    item.append(avatar);
  }
  item.append(bubble);
  if (createdAt) {
    const when = new Date(createdAt);
    if (!Number.isNaN(when.getTime())) bubble.title = when.toLocaleString();
  }
  if (role === "user") {
    body.textContent = text;
  } else {
    setAssistantText(item, text);
    setStatus(item, status);
  }
  ui.messages.append(item);
  updateWelcome();
  follow();
  return item;
}

function setAssistantText(item, text) {
  const body = item.querySelector(".text");
  item.dataset.text = text;
  renderMarkdown(body, text);
}

/** The documents a reply drew on (docs/knowledge.md): "[1] Title, Section" under it. */
function showCitations(item, citations) {
  const bubble = item.querySelector(".bubble");
  bubble.querySelector(".sources")?.remove();
  if (!Array.isArray(citations) || citations.length === 0) return;
  const list = element("ol", "sources");
  list.setAttribute("data-testid", "citations");
  list.setAttribute("aria-label", "Sources");
  for (const citation of citations) {
    const where = [citation.title, (citation.section || "").split(" › ").pop()]
      .filter(Boolean).join(", ") + (citation.page ? ` (p. ${citation.page})` : "");
    const entry = element("li", "source");
    entry.value = Number(citation.number) || 0;
    const url = String(citation.source || "");
    if (/^https?:\/\//.test(url)) {
      const link = element("a", "", `[${citation.number}] ${where}`);
      link.href = url;
      link.rel = "noopener noreferrer";
      link.target = "_blank";
      entry.append(link);
    } else {
      entry.textContent = `[${citation.number}] ${where}`;
    }
    list.append(entry);
  }
  bubble.append(list);
}

/** An assistant message's state: streaming (typing dots until text comes), done or error. */
function setStatus(item, status, notice = "") {
  item.dataset.state = status;
  item.setAttribute("aria-busy", String(status === "streaming"));
  const bubble = item.querySelector(".bubble");
  bubble.querySelector(".typing")?.remove();
  bubble.querySelector(".notice")?.remove();
  bubble.querySelector(".empty")?.remove();
  if (status === "streaming" && !item.dataset.text) bubble.append(typingIndicator());
  if (status === "done" && !item.dataset.text) bubble.append(element("p", "empty", MESSAGES.empty));
  if (status === "error") {
    const box = element("div", "notice");
    box.setAttribute("role", "alert");
    box.append(element("span", "", notice));
    const retry = element("button", "retry", "Try again");
    retry.type = "button";
    retry.addEventListener("click", () => retryReply(item));
    box.append(retry);
    bubble.append(box);
  }
}

// Streamed tokens arrive faster than frames: render at most once per frame.
let pendingRender = null;
function showStreamedText(item, text) {
  item.dataset.text = text;
  if (!pendingRender) {
    pendingRender = requestAnimationFrame(() => {
      pendingRender = null;
      if (item.dataset.state !== "streaming") return;
      item.querySelector(".typing")?.remove();
      renderMarkdown(item.querySelector(".text"), item.dataset.text);
      follow();
    });
  }
}

function updateWelcome() {
  ui.welcome.hidden = ui.messages.children.length > 0;
}

// -- scrolling --------------------------------------------------------------------------------

function nearBottom() {
  return ui.chat.scrollHeight - ui.chat.scrollTop - ui.chat.clientHeight < PINNED_WITHIN_PX;
}

function follow(force = false) {
  if (force) state.pinned = true;
  if (state.pinned) ui.chat.scrollTop = ui.chat.scrollHeight;
  ui.jump.hidden = state.pinned || !ui.messages.children.length;
}

ui.chat.addEventListener("scroll", () => {
  state.pinned = nearBottom();
  ui.jump.hidden = state.pinned || !ui.messages.children.length;
}, { passive: true });
ui.jump.addEventListener("click", () => {
  ui.chat.scrollTo({ top: ui.chat.scrollHeight, behavior: "smooth" });
  state.pinned = true;
  ui.jump.hidden = true;
});

// -- errors -----------------------------------------------------------------------------------

function showError(text) {
  ui.errorText.textContent = text;
  ui.error.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
  ui.errorText.textContent = "";
}

ui.errorClose.addEventListener("click", () => { hideError(); ui.input.focus(); });

/** What to tell the person for an HTTP status and the server's own message. */
function friendlyError(status, serverMessage = "") {
  if (status === 413) {
    const limit = serverMessage.match(/limit is (\d+)/);
    const limitText = limit ? ` (the limit is ${number.format(Number(limit[1]))} characters)` : "";
    return `Your message is too long${limitText}. Shorten it and send again.`;
  }
  if (status === 429) return "You're sending messages too quickly. Wait a moment and try again.";
  if (status === 502 || status === 503 || status === 504) return MESSAGES.offline;
  if (status >= 400 && status < 500 && serverMessage) {
    return `The assistant couldn't take that message: ${serverMessage}`;
  }
  return "Something went wrong on the server. Try again in a moment.";
}

async function responseError(response) {
  let message = "";
  try {
    const body = await response.json();
    message = String(body?.error?.message ?? "");
  } catch { /* not JSON: the status says enough */ }
  return friendlyError(response.status, message);
}

// -- the composer -----------------------------------------------------------------------------

function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, TEXTAREA_MAX_PX)}px`;
  ui.input.style.overflowY = ui.input.scrollHeight > TEXTAREA_MAX_PX ? "auto" : "hidden";
}

function updateComposer() {
  const count = charCount(ui.input.value.trim());
  const limit = maxChars();
  ui.send.disabled = state.streaming || state.loading || count === 0;
  ui.form.classList.toggle("busy", state.streaming);
  if (count >= limit * COUNTER_FROM) {
    ui.counter.textContent = `${number.format(count)} / ${number.format(limit)}`;
    ui.counter.classList.toggle("over", count > limit);
    ui.counter.classList.toggle("near", count <= limit && count > limit * 0.95);
  } else {
    ui.counter.textContent = "";
    ui.counter.classList.remove("over", "near");
  }
}

function setStreaming(on) {
  state.streaming = on;
  ui.form.setAttribute("aria-busy", String(on));
  updateComposer();
}

ui.input.addEventListener("input", () => { autosize(); updateComposer(); });
ui.input.addEventListener("keydown", (event) => {
  // Enter sends, Shift+Enter is a new line; never send in the middle of an IME composition.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
    event.preventDefault();
    sendMessage();
  }
});
ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  sendMessage();
});
for (const suggestion of document.querySelectorAll(".suggestion")) {
  suggestion.addEventListener("click", () => {
    ui.input.value = suggestion.textContent;
    autosize();
    updateComposer();
    ui.input.focus();
  });
}

// -- talking to the server --------------------------------------------------------------------

function rememberConversation(id) {
  state.conversationId = id;
  store.set(STORAGE.conversation, id);
}

function restoreInput(text) {
  const current = ui.input.value.trim();
  ui.input.value = current ? `${text}\n${current}` : text;
  autosize();
  updateComposer();
}

async function sendMessage() {
  if (state.streaming || state.loading) return;
  const text = ui.input.value.trim();
  if (!text) return;
  const count = charCount(text);
  if (count > maxChars()) {
    showError(`Your message is ${number.format(count)} characters; the limit is `
      + `${number.format(maxChars())}. Shorten it and send again.`);
    ui.input.focus();
    return;
  }
  const messageId = state.retry?.text === text ? state.retry.messageId : newId();
  state.retry = null;
  if (!state.conversationId) rememberConversation(newId());
  hideError();
  const request = {
    conversation_id: state.conversationId,
    // Local mode only: a signed-in person is who the server says (the body cannot name one).
    ...(session.mode === "local" ? { user_id: state.userId } : {}),
    text,
    message_id: messageId,
    stream: true,
  };
  const userItem = addMessage("user", { text, messageId });
  const reply = addMessage("assistant", { status: "streaming" });
  ui.input.value = "";
  autosize();
  follow(true);
  const outcome = await streamReply(request, reply);
  if (outcome.refused) {
    // Nothing was said: take the message back into the box so no typing is lost.
    userItem.remove();
    reply.remove();
    updateWelcome();
    restoreInput(text);
    state.retry = outcome.retryable ? { text, messageId } : null;
    showError(outcome.message);
  }
  ui.input.focus();
}

async function retryReply(item) {
  if (state.streaming) return;
  const request = JSON.parse(item.dataset.request || "null");
  if (!request) return;
  setAssistantText(item, "");
  setStatus(item, "streaming");
  const outcome = await streamReply(request, item);
  if (outcome.refused) setStatus(item, "error", outcome.message);
}

/**
 * POSTs the message and streams the reply into `item`.
 * Returns {refused, message, retryable} when the server said no before answering.
 */
async function streamReply(request, item) {
  const controller = new AbortController();
  state.controller = controller;
  item.dataset.request = JSON.stringify(request);
  store.set(STORAGE.pending, JSON.stringify({ ...request, at: Date.now() }));
  setStreaming(true);
  try {
    let response;
    try {
      response = await fetch("/api/chat", {
        method: "POST",
        headers: apiHeaders({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify(request),
        signal: controller.signal,
      });
    } catch {
      if (controller.signal.aborted) return { aborted: true };
      return { refused: true, message: MESSAGES.network, retryable: true };
    }
    if (response.status === 401 && session.mode === "signin") {
      signIn();  // the session ended (signed out elsewhere, expired)
      return { aborted: true };
    }
    if (!response.ok) {
      store.remove(STORAGE.pending);
      return { refused: true, message: await responseError(response),
               retryable: response.status >= 500 };
    }
    await readReply(response, request, item, controller);
    return {};
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      setStreaming(false);
    }
  }
}

async function readReply(response, request, item, controller) {
  let text = "";
  try {
    for await (const { event, data } of readEvents(response)) {
      if (event === "token") {
        text += data?.text ?? "";
        showStreamedText(item, text);
      } else if (event === "done") {
        // The final reply is the whole answer (output safety may have changed the stream).
        if (data?.conversation_id && data.conversation_id !== state.conversationId
            && request.conversation_id === state.conversationId) {
          rememberConversation(data.conversation_id);
        }
        if (data?.message_id) item.dataset.messageId = data.message_id;
        setAssistantText(item, String(data?.reply ?? text));
        showCitations(item, data?.citations);
        setStatus(item, "done");
        store.remove(STORAGE.pending);
        follow();
        return;
      } else if (event === "error") {
        store.remove(STORAGE.pending);
        setStatus(item, "error", friendlyError(Number(data?.status), data?.error?.message));
        follow();
        return;
      }
    }
    setStatus(item, "error", MESSAGES.interrupted);
  } catch {
    if (controller.signal.aborted) return;
    setStatus(item, "error", MESSAGES.interrupted);
  }
  follow();
}

/** Shows the stored conversation; resumes a reply that was streaming when the page reloaded. */
async function loadConversation() {
  const id = state.conversationId;
  if (!id) return;
  let response;
  try {
    response = await fetch(`/api/conversations/${encodeURIComponent(id)}`,
      { headers: apiHeaders({ Accept: "application/json" }) });
  } catch {
    showError(MESSAGES.load);
    return;
  }
  if (response.status === 404) {
    resumePending(id, []);  // gives back the text of a first message that never arrived
    forgetConversation();
    return;
  }
  if (!response.ok) {
    showError(MESSAGES.load);
    return;
  }
  const { messages = [] } = await response.json();
  for (const message of messages) {
    if (message.role !== "user" && message.role !== "assistant") continue;
    addMessage(message.role, {
      text: message.text, messageId: message.message_id, createdAt: message.created_at,
    });
  }
  follow(true);
  resumePending(id, messages);
}

function resumePending(id, messages) {
  let pending = null;
  try { pending = JSON.parse(store.get(STORAGE.pending) || "null"); } catch { /* ignore */ }
  store.remove(STORAGE.pending);
  if (!pending || pending.conversation_id !== id) return;
  const last = messages[messages.length - 1];
  const { at, ...request } = pending;
  // The server names messages itself (our message_id is only a retry token), so the pending
  // message is recognised by its text.
  if (last?.role === "user" && last.text === request.text
      && Date.now() - at < RESUME_WITHIN_MS) {
    // Same message id: the server waits for the reply already on its way, it does not ask twice.
    const reply = addMessage("assistant", { status: "streaming" });
    streamReply(request, reply).then((outcome) => {
      if (outcome.refused) setStatus(reply, "error", outcome.message);
    });
  } else if (!messages.some((m) => m.role === "user" && m.text === request.text)
             && request.text) {
    // It never reached the server: give the text back; resending it keeps its id.
    restoreInput(request.text);
    state.retry = { text: request.text, messageId: request.message_id };
  }
}

function forgetConversation() {
  state.conversationId = null;
  store.remove(STORAGE.conversation);
  store.remove(STORAGE.pending);
}

async function startNewConversation() {
  const previous = state.conversationId;
  state.controller?.abort();
  state.controller = null;
  state.retry = null;
  forgetConversation();
  ui.messages.replaceChildren();
  hideError();
  updateWelcome();
  setStreaming(false);
  follow(true);
  ui.input.focus();
  if (previous) {
    // Free the old conversation's memory on the server; a failure here changes nothing for the UI.
    fetch(`/api/conversations/${encodeURIComponent(previous)}`,
      { method: "DELETE", headers: apiHeaders() })
      .catch(() => {});
  }
}

ui.newConversation.addEventListener("click", startNewConversation);

// -- start --------------------------------------------------------------------------------------

async function start() {
  autosize();
  updateComposer();
  ui.input.focus();
  if (!(await loadSession())) return;
  try {
    await loadConversation();
  } finally {
    state.loading = false;
    updateWelcome();
    updateComposer();
    document.body.dataset.ready = "true";  // a hook for tests: the stored conversation is shown
  }
}

start();

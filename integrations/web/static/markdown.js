// Minimal markdown to DOM nodes: paragraphs, lists, headings, **bold**, *italic*, `code`,
// ``` blocks and bare http(s) links. It never parses HTML: every piece of the model's text
// goes into the page through textContent or a text node, so a reply cannot inject markup.

const FENCE_OPEN = /^\s*```\s*([^\s`]*)[^`]*$/;
const FENCE_CLOSE = /^\s*```\s*$/;
const LIST_ITEM = /^\s*([-*+•]|\d{1,3}[.)])\s+(.*)$/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const INLINE = new RegExp(
  [
    "(`+)([^`]+?)\\1",                                    // 1,2: `code`
    "\\*\\*(?=\\S)([^*\\n]+?)\\*\\*",                     // 3: **bold**
    "__(?=\\S)([^_\\n]+?)__",                             // 4: __bold__
    "(?<![\\w*])\\*(?=[^*\\s])([^*\\n]*?[^*\\s])?\\*(?![\\w*])", // 5: *italic*
    "(https?:\\/\\/[^\\s<>\"'`]*[^\\s<>\"'`.,;:!?)\\]])", // 6: link
  ].join("|"),
  "g",
);

function element(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

/** Appends `text` to `parent` with inline formatting, as DOM nodes. */
function appendInline(parent, text) {
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    if (match.index > last) parent.append(text.slice(last, match.index));
    last = match.index + match[0].length;
    const [whole, , code, bold, bold2, italic, url] = match;
    if (code !== undefined) {
      const node = element("code", "inline-code");
      node.textContent = code;
      parent.append(node);
    } else if (bold !== undefined || bold2 !== undefined) {
      const node = element("strong");
      appendInline(node, bold ?? bold2);
      parent.append(node);
    } else if (url !== undefined) {
      const link = element("a");
      link.href = url;  // the pattern only admits http: and https: addresses
      link.textContent = url;
      link.target = "_blank";
      link.rel = "noopener noreferrer nofollow";
      parent.append(link);
    } else if (italic !== undefined) {
      const node = element("em");
      appendInline(node, italic);
      parent.append(node);
    } else {
      parent.append(whole);
    }
  }
  if (last < text.length) parent.append(text.slice(last));
}

function paragraph(lines) {
  const node = element("p");
  lines.forEach((line, index) => {
    if (index) node.append(element("br"));
    appendInline(node, line.trim());
  });
  return node;
}

function copyButton(getText) {
  const button = element("button", "copy-code");
  button.type = "button";
  button.textContent = "Copy";
  button.setAttribute("aria-label", "Copy the code");
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(getText());
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
  return button;
}

function codeBlock(code, language) {
  const wrapper = element("div", "code-block");
  const head = element("div", "code-head");
  const label = element("span", "code-language");
  label.textContent = language || "code";
  head.append(label);
  const pre = element("pre");
  const body = element("code");
  body.textContent = code;
  pre.append(body);
  if (navigator.clipboard) head.append(copyButton(() => body.textContent));
  wrapper.append(head, pre);
  return wrapper;
}

function list(items, ordered) {
  const node = element(ordered ? "ol" : "ul");
  for (const item of items) {
    const li = element("li");
    appendInline(li, item);
    node.append(li);
  }
  return node;
}

/** The block nodes for `text` (an unterminated ``` block, as while streaming, runs to the end). */
export function markdownNodes(text) {
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  const nodes = [];
  let pending = [];
  const flush = () => {
    if (pending.length) nodes.push(paragraph(pending));
    pending = [];
  };
  for (let i = 0; i < lines.length;) {
    const line = lines[i];
    const fence = line.match(FENCE_OPEN);
    if (fence) {
      flush();
      const code = [];
      for (i += 1; i < lines.length && !FENCE_CLOSE.test(lines[i]); i += 1) code.push(lines[i]);
      nodes.push(codeBlock(code.join("\n"), fence[1]));
      i += 1;
      continue;
    }
    if (!line.trim()) {
      flush();
      i += 1;
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      flush();
      const node = element("p", "heading");
      const strong = element("strong");
      appendInline(strong, heading[2]);
      node.append(strong);
      nodes.push(node);
      i += 1;
      continue;
    }
    const item = line.match(LIST_ITEM);
    if (item) {
      flush();
      const ordered = /\d/.test(item[1]);
      const items = [];
      while (i < lines.length) {
        const next = lines[i].match(LIST_ITEM);
        if (next && /\d/.test(next[1]) === ordered) {
          items.push(next[2]);
        } else if (items.length && /^\s+\S/.test(lines[i]) && !FENCE_OPEN.test(lines[i])) {
          items[items.length - 1] += ` ${lines[i].trim()}`;  // an indented continuation line
        } else {
          break;
        }
        i += 1;
      }
      nodes.push(list(items, ordered));
      continue;
    }
    pending.push(line);
    i += 1;
  }
  flush();
  return nodes;
}

/** Replaces the children of `container` with `text` rendered as markdown. */
export function renderMarkdown(container, text) {
  container.replaceChildren(...markdownNodes(text));
}

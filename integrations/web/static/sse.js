// Server-sent events read from a fetch() response body (EventSource cannot POST).

const BOUNDARY = /\r\n\r\n|\n\n|\r\r/;

/** One event block ("event: x\ndata: {...}") as {event, data}; data is parsed JSON when it can be. */
function parseBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split(/\r\n|\r|\n/)) {
    if (!line || line.startsWith(":")) continue;  // a comment or keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  const raw = data.join("\n");
  try {
    return { event, data: JSON.parse(raw) };
  } catch {
    return { event, data: raw };
  }
}

/** Yields each event of a text/event-stream response in order; cancels the body when left. */
export async function* readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      for (let match = buffer.match(BOUNDARY); match; match = buffer.match(BOUNDARY)) {
        const parsed = parseBlock(buffer.slice(0, match.index));
        buffer = buffer.slice(match.index + match[0].length);
        if (parsed) yield parsed;
      }
      if (done) break;
    }
    const tail = parseBlock(buffer);
    if (tail) yield tail;
  } finally {
    reader.cancel().catch(() => {});
  }
}

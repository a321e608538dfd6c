// What the console's modules share: element lookup, the broker's HTTP API
// (JSON in and out, the API key field sent along), WebSocket URLs of this
// broker, and the data-state + text convention of the status lines.

export const $ = (id) => document.getElementById(id);

/** A refused call, with the contract's error code. */
export class ApiFailure extends Error {
  constructor(status, body) {
    const code = body && body.error ? body.error : 'http_' + status;
    let text = status + ' ' + code + (body && body.detail ? ': ' + body.detail : '');
    if (code === 'unauthorized') {
      text += ' (this broker has API keys: fill in the API key field)';
    }
    super(text);
    this.code = code;
  }
}

/** Calls the broker; JSON in and out. The API key goes along when filled. */
export async function api(method, path, body, bearer) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  const key = $('api-key').value.trim();
  if (key) headers['x-api-key'] = key;
  if (bearer) headers.authorization = 'Bearer ' + bearer;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!response.ok) throw new ApiFailure(response.status, data);
  return data;
}

/** A ws:// or wss:// URL for a path (or URL) of this broker. */
export function socketUrl(pathOrUrl) {
  const url = new URL(pathOrUrl, window.location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url;
}

export function setState(element, state, text) {
  element.dataset.state = state;
  element.textContent = text;
}

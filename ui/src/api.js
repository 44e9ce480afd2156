// The public REST API with the key of this browser session (sessionStorage: gone when the tab
// closes). The page has no other access: what the API refuses, the page cannot do.

const KEY = 'plinth.key';

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.field = body && body.field;
  }
}

export function key() { return sessionStorage.getItem(KEY); }
export function setKey(k) { sessionStorage.setItem(KEY, k); }
export function forget() { sessionStorage.removeItem(KEY); }

// `path` is under /api/v1. Answers the parsed JSON (or text for non-JSON answers).
export async function api(path, { method = 'GET', body, as = 'json', token } = {}) {
  const headers = { authorization: `Bearer ${token || key() || ''}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(`/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, { message: `the server did not answer (${e.message}): is plinth serve still running?` });
  }
  if (!res.ok) {
    let err = null;
    try { err = (await res.json()).error; } catch (_) { /* not JSON */ }
    throw new ApiError(res.status, err);
  }
  if (as === 'text') return res.text();
  if (as === 'blob') return res.blob();
  return res.json();
}

// Every page of a paginated list, up to `max` items.
export async function all(path, max = 1000) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api(`${path}${sep}limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

export const enc = encodeURIComponent;

// The hub's REST API, as the console uses it: JSON in and out, problem+json turned into
// ApiError, uploads with progress, and prompt streams read as Server-Sent Events over fetch
// (EventSource cannot send the Authorization header, and tokens never go in URLs).

import { ApiError, failure } from './errors.js';
import { accessToken, authorizedFetch, refresh } from './session.js';

function withQuery(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

export function path(strings, ...values) {
  return strings.reduce(
    (out, part, i) => out + part + (i < values.length ? encodeURIComponent(values[i]) : ''),
    '',
  );
}

export async function request(method, url, { body, query, signal } = {}) {
  const init = { method, headers: { Accept: 'application/json' }, signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await authorizedFetch(withQuery(url, query), init);
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

export const get = (url, query, signal) => request('GET', url, { query, signal });
export const post = (url, body) => request('POST', url, { body });
export const put = (url, body) => request('PUT', url, { body });
export const del = (url, query) => request('DELETE', url, { query });

function sendUpload(url, form, token, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open('POST', url);
    xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.responseType = 'text';
    xhr.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener('load', () => resolve(xhr));
    xhr.addEventListener('error', () => reject(new TypeError('network error')));
    xhr.addEventListener('abort', () => reject(new ApiError(0, 'Upload cancelled')));
    xhr.send(form);
  });
  return { xhr, promise };
}

/**
 * Upload `file` (multipart, with optional `metadata`), reporting `onProgress(loaded, total)`.
 * Returns {promise, abort}; the promise resolves with the hub's answer or rejects with ApiError.
 */
export function upload(url, file, metadata, onProgress) {
  let current = null;
  let aborted = false;
  const form = new FormData();
  form.append('file', file, file.name);
  if (metadata !== undefined && metadata !== null) form.append('metadata', JSON.stringify(metadata));
  const attempt = async (retry) => {
    const sent = sendUpload(url, form, await accessToken(), onProgress);
    current = sent.xhr;
    if (aborted) sent.xhr.abort();
    const xhr = await sent.promise;
    if (xhr.status === 401 && retry) {
      await refresh();
      return attempt(false);
    }
    const response = new Response(xhr.responseText || null, {
      status: xhr.status,
      statusText: xhr.statusText,
      headers: { 'Content-Type': xhr.getResponseHeader('Content-Type') ?? 'application/json' },
    });
    if (!response.ok) throw await failure(response);
    return response.json();
  };
  return {
    promise: attempt(true),
    abort: () => {
      aborted = true;
      current?.abort();
    },
  };
}

function parseEvent(block) {
  let event = 'message';
  let id = null;
  const data = [];
  for (const line of block.split(/\r?\n/)) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id') id = value;
  }
  return data.length ? { event, id, data: JSON.parse(data.join('\n')) } : null;
}

/**
 * Read a prompt stream's Server-Sent Events from chunk `from` on: `onEvent({event, data})` for
 * each `chunk` and the final `end`. Used to fill in what the agent's socket could not replay.
 */
export async function readStream(streamId, { from = 0, signal, onEvent }) {
  const response = await authorizedFetch(withQuery(path`/api/streams/${streamId}/events`, { from }), {
    headers: { Accept: 'text/event-stream' },
    signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let boundary = buffer.search(/\r?\n\r?\n/);
    while (boundary >= 0) {
      const block = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary).replace(/^\r?\n\r?\n/, '');
      const parsed = parseEvent(block);
      if (parsed) onEvent(parsed);
      boundary = buffer.search(/\r?\n\r?\n/);
    }
  }
}

/** Fetch a file with the access token and hand it to the browser as a download. */
export async function download(fileId, filename) {
  const response = await authorizedFetch(path`/api/files/${fileId}`);
  if (!response.ok) throw await failure(response);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement('a');
  link.href = url;
  link.download = filename || 'download';
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

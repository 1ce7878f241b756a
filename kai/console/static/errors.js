// What went wrong, in words a person can act on: the hub's problem+json `detail` when it sent
// one, with the fields it named.

export class ApiError extends Error {
  constructor(status, detail, { title = null, errors = [], body = null } = {}) {
    super(detail);
    this.name = 'ApiError';
    this.status = status;
    this.detail = detail;
    this.title = title;
    this.errors = Array.isArray(errors) ? errors : [];
    this.body = body;
  }
}

/** An ApiError from a failed response, read from its problem+json body when there is one. */
export async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const detail =
    (body && (body.detail || body.title)) || response.statusText || `HTTP ${response.status}`;
  return new ApiError(response.status, String(detail), {
    title: body?.title ?? null,
    errors: body?.errors ?? [],
    body,
  });
}

/** One line for a person: the detail, the fields it names, and the status. */
export function describe(error) {
  if (error instanceof ApiError) {
    const fields = error.errors
      .map((e) => (e.field ? `${e.field}: ${e.message}` : e.message))
      .filter(Boolean);
    const status = error.status ? `${error.status} ` : '';
    const title = error.title && error.title !== error.detail ? `${error.title}: ` : '';
    return `${status}${title}${error.detail}${fields.length ? ` (${fields.join('; ')})` : ''}`;
  }
  if (error instanceof TypeError) return 'The hub did not answer. Check the connection and try again.';
  return error?.message ? String(error.message) : String(error);
}

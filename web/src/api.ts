/** One offending field of a problem+json answer. */
export interface FieldError {
  pointer: string
  message: string
  expected?: string
  received?: string
}

/** An API answer that was not a success, with the problem+json the server sent (docs/errors.md). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
    readonly errors: FieldError[] = [],
  ) {
    super(detail)
  }
}

/**
 * Sent on every request: the server accepts a cookie-authenticated change only with it (pipeline/ingress/auth.ts
 * CSRF_HEADER), since a page on another site cannot add a custom header without CORS, which Sluice never allows.
 */
const CSRF_HEADER = 'x-sluice-csrf'

let onUnauthorized: () => void = () => {}

/** What to do when the server says the session is gone (expired, signed out elsewhere, key revoked). */
export function whenUnauthorized(handler: () => void): void {
  onUnauthorized = handler
}

/** Calls the Sluice API as the signed-in browser; JSON in and out, errors as ApiError. */
export async function api<T>(method: string, path: string, body?: unknown, extraHeaders: Record<string, string> = {}): Promise<T> {
  const headers: Record<string, string> = { [CSRF_HEADER]: '1', accept: 'application/json', ...extraHeaders }
  let payload: BodyInit | undefined
  if (body instanceof Blob) {
    payload = body
    headers['content-type'] ??= body.type || 'application/octet-stream'
  } else if (body !== undefined) {
    payload = JSON.stringify(body)
    headers['content-type'] = 'application/json'
  }
  let res: Response
  try {
    res = await fetch(path, { method, headers, body: payload, credentials: 'same-origin' })
  } catch {
    throw new ApiError(0, 'NETWORK', 'The Sluice server cannot be reached. Is it running?')
  }
  // A refused sign-in is the sign-in form's to show; any other 401 means the session is gone.
  if (res.status === 401 && path !== '/session') onUnauthorized()
  if (!res.ok) {
    const problem = (await res.json().catch(() => undefined)) as { code?: string; detail?: string; errors?: FieldError[] } | undefined
    throw new ApiError(res.status, problem?.code ?? `HTTP_${res.status}`, problem?.detail ?? res.statusText, problem?.errors ?? [])
  }
  return (await res.json()) as T
}

/** Routes this server has, from its OpenAPI document: pages whose API is missing say so instead of failing. */
export class RouteIndex {
  readonly #routes: Set<string>

  constructor(routes: Iterable<string>) {
    this.#routes = new Set(routes)
  }

  static async load(): Promise<RouteIndex> {
    const doc = await api<{ paths: Record<string, Record<string, unknown>> }>('GET', '/openapi.json')
    const routes: string[] = []
    for (const [path, methods] of Object.entries(doc.paths)) for (const method of Object.keys(methods)) routes.push(`${method.toUpperCase()} ${path}`)
    return new RouteIndex(routes)
  }

  /** `has('GET /rules')`, `has('DELETE /keys/{id}')`: path parameters as OpenAPI writes them. */
  has(route: string): boolean {
    return this.#routes.has(route)
  }
}

/** Saves what a GET returns as a file (error reports): fetched here, since a plain link cannot choose the format by Accept. */
export async function download(path: string, accept: string, fileName: string): Promise<void> {
  const res = await fetch(path, { headers: { accept }, credentials: 'same-origin' })
  if (res.status === 401) onUnauthorized()
  if (!res.ok) throw new ApiError(res.status, `HTTP_${res.status}`, `the download failed: ${res.statusText}`)
  const url = URL.createObjectURL(await res.blob())
  const link = Object.assign(document.createElement('a'), { href: url, download: fileName })
  link.click()
  setTimeout(() => URL.revokeObjectURL(url), 10_000)
}

/**
 * Every error Sluice raises, with its stable code and HTTP status, in one table.
 * Codes never change meaning once released; test/errors.test.ts checks they are unique and documented.
 */
export const ERROR_CODES = {
  SLUICE_CONFIG_INVALID: { status: 500, title: 'Invalid configuration' },
  SLUICE_UNAUTHORIZED: { status: 401, title: 'Missing or invalid API key' },
  SLUICE_FORBIDDEN: { status: 403, title: 'API key lacks the required scope' },
  SLUICE_CSRF_REJECTED: { status: 403, title: 'Cookie-authenticated request not from the dashboard' },
  SLUICE_NOT_FOUND: { status: 404, title: 'Not found' },
  SLUICE_UNKNOWN_OBJECT: { status: 404, title: 'Unknown object type' },
  SLUICE_INVALID_JSON: { status: 400, title: 'Body is not valid JSON' },
  SLUICE_SCHEMA_MISMATCH: { status: 400, title: 'Record does not match the schema on file' },
  SLUICE_SCHEMA_INCOMPATIBLE: { status: 400, title: 'update_schema cannot apply this change; a manual schema update is needed' },
  SLUICE_INVALID_SCHEMA: { status: 400, title: 'Invalid schema document' },
  SLUICE_RESERVED_NAME: { status: 400, title: 'Reserved name' },
  SLUICE_SCHEMA_CONFLICT: { status: 409, title: 'Stored data cannot satisfy the new schema' },
  SLUICE_BAD_REQUEST: { status: 400, title: 'Invalid request' },
  SLUICE_INVALID_RULES: { status: 400, title: 'Invalid rule set' },
  SLUICE_IDEMPOTENCY_CONFLICT: { status: 409, title: 'Idempotency-Key already used for another payload' },
  SLUICE_KEY_NOT_FOUND: { status: 404, title: 'API key not found' },
  SLUICE_JOB_NOT_FOUND: { status: 404, title: 'Batch job not found' },
  SLUICE_JOB_FINISHED: { status: 409, title: 'The batch job has already finished' },
  SLUICE_DECISION_NOT_FOUND: { status: 404, title: 'No decision on that record (yet)' },
  SLUICE_PAYLOAD_TOO_LARGE: { status: 413, title: 'Body too large' },
  SLUICE_LINK_INVALID: { status: 403, title: 'The upload link is not valid' },
  SLUICE_LINK_EXPIRED: { status: 403, title: 'The upload link has expired' },
  SLUICE_LINK_REVOKED: { status: 403, title: 'The upload link has been revoked' },
  SLUICE_LINK_USED_UP: { status: 403, title: 'The upload link has been used up' },
  SLUICE_LINK_NOT_FOUND: { status: 404, title: 'Upload link not found' },
  SLUICE_SFTP_USER_NOT_FOUND: { status: 404, title: 'SFTP user not found' },
  SLUICE_SFTP_USER_EXISTS: { status: 409, title: 'An SFTP user of that name exists' },
  SLUICE_UNSUPPORTED_MEDIA_TYPE: { status: 415, title: 'Unsupported content type' },
  SLUICE_STREAM_UNAVAILABLE: { status: 503, title: 'JetStream unavailable; retry later' },
  SLUICE_QUERY_UNAVAILABLE: { status: 503, title: 'Analytics store unavailable; retry later' },
  SLUICE_NATS_SERVER_FAILED: { status: 500, title: 'Embedded nats-server failed to start' },
  SLUICE_INTERNAL: { status: 500, title: 'Internal error' },
} as const satisfies Record<string, { status: number; title: string }>

export type ErrorCode = keyof typeof ERROR_CODES

/** One offending field: a JSON pointer into the request, and what is wrong there. */
export interface FieldError {
  pointer: string
  message: string
  expected?: string
  received?: string
}

export class SluiceError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly errors?: FieldError[]
  /** Extra response headers (Retry-After on 503). */
  readonly headers?: Record<string, string>

  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; errors?: FieldError[]; headers?: Record<string, string> } = {}) {
    super(message, { cause: opts.cause })
    this.name = 'SluiceError'
    this.code = code
    this.status = ERROR_CODES[code].status
    this.errors = opts.errors
    this.headers = opts.headers
  }
}

export function isSluiceError(err: unknown): err is SluiceError {
  return err instanceof SluiceError
}

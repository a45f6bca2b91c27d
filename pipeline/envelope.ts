import { monotonicFactory } from 'ulidx'

/** What Sluice publishes for each accepted record: the record and where it came from. */
export interface Envelope {
  /** Sluice's own id of this record (a ULID: sortable by time). */
  record_id: string
  object: string
  /** Epoch milliseconds at which ingress accepted it. */
  received_at: number
  /** `api`, `batch`, `sftp`, ... */
  source: string
  /** The schema version the record was validated against. */
  schema_version: number
  record: Record<string, unknown>
}

export const newRecordId = monotonicFactory()

export function encodeEnvelope(env: Envelope): Uint8Array {
  return Buffer.from(JSON.stringify(env))
}

export function decodeEnvelope(data: Uint8Array): Envelope {
  const env = JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8')) as Envelope
  if (typeof env?.record_id !== 'string' || typeof env.object !== 'string' || typeof env.record !== 'object') {
    throw new Error('not a Sluice envelope')
  }
  return env
}

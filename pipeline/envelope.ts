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
  /** false for historical backfills: the rule stage records the outcome but raises no alert. Absent means true. */
  evaluate_rules?: boolean
  /** The batch job that carried the record, when it came in a batch. */
  job_id?: string
  record: Record<string, unknown>
}

/**
 * The partition of a record: FNV-1a of its account id (records of one account stay together), else of its own
 * id, modulo the partition count.
 */
export function partitionOf(record: Record<string, unknown>, idField: string, partitions: number): number {
  const key = String(record.account_id ?? record[idField] ?? '')
  let hash = 0x811c9dc5
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 0x01000193)
  return (hash >>> 0) % partitions
}

/**
 * Record ids are ULIDs. Their random part only has to make ids unique, not secret, and ulidx's default draws
 * each character from the crypto source, measured as a visible share of a request; Math.random serves.
 */
export const newRecordId = monotonicFactory(() => Math.random())

/** The envelope as JSON; `recordJson`, when the caller already has the record as JSON, is not made again. */
export function encodeEnvelope(env: Envelope, recordJson = JSON.stringify(env.record)): Uint8Array {
  const { record: _record, ...meta } = env
  return Buffer.from(`${JSON.stringify(meta).slice(0, -1)},"record":${recordJson}}`)
}

/** A record message's data as text (the envelope's JSON). */
export function envelopeText(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8')
}

export function decodeEnvelope(data: Uint8Array | string): Envelope {
  const env = JSON.parse(typeof data === 'string' ? data : envelopeText(data)) as Envelope
  if (typeof env?.record_id !== 'string' || typeof env.object !== 'string' || typeof env.record !== 'object') {
    throw new Error('not a Sluice envelope')
  }
  return env
}

import type { JsMsg } from '@nats-io/jetstream'
import type { MsgHdrs } from '@nats-io/transport-node'
import { monotonicFactory } from 'ulidx'
import { RECORDS_PER_MESSAGE } from '../storage/index.ts'
import { objectOfSubject } from './streams.ts'

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

/** The envelope as JSON text; `recordJson`, when the caller already has the record as JSON, is not made again. */
export function envelopeJson(env: Envelope, recordJson = JSON.stringify(env.record)): string {
  const { record_id, record: _record, ...meta } = env
  return envelopeJsonOf(envelopeMetaJson(meta), record_id, recordJson)
}

/** What envelopes share: every field but the record and its id. */
export type EnvelopeMeta = Omit<Envelope, 'record_id' | 'record'>

/** The shared fields as JSON members (no braces), made once for the envelopes of a batch. */
export function envelopeMetaJson(meta: EnvelopeMeta): string {
  return JSON.stringify(meta).slice(1, -1)
}

/** An envelope's JSON from its shared fields' JSON (envelopeMetaJson), its record id and the record's JSON. */
export function envelopeJsonOf(metaJson: string, recordId: string, recordJson: string): string {
  return `{"record_id":${JSON.stringify(recordId)},${metaJson},"record":${recordJson}}`
}

export function encodeEnvelope(env: Envelope, recordJson?: string): Uint8Array {
  return Buffer.from(envelopeJson(env, recordJson))
}

/** A record message's data as text (the envelope's JSON). */
function envelopeText(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8')
}

export function decodeEnvelope(data: Uint8Array | string): Envelope {
  const env = JSON.parse(typeof data === 'string' ? data : envelopeText(data)) as Envelope
  assertEnvelope(env)
  return env
}

function assertEnvelope(env: Envelope): void {
  if (typeof env?.record_id !== 'string' || typeof env.object !== 'string' || typeof env.record !== 'object') {
    throw new Error('not a Sluice envelope')
  }
}

/** Headers of a message holding many envelopes: what a consumer needs without parsing the records. */
export const ENVELOPE_BATCH_HEADERS = {
  /** How many envelopes the array holds. */
  count: 'Sluice-Records',
  /** The highest schema version among them. */
  schemaVersion: 'Sluice-Schema-Version',
  /** When ingress accepted them, epoch ms. */
  receivedAt: 'Sluice-Received-At',
} as const

const OPEN_ARRAY = Buffer.from('[')
const CLOSE_ARRAY = Buffer.from(']')

/** Whether a record message holds an array of envelopes rather than one. */
export function isEnvelopeBatch(data: Uint8Array): boolean {
  return data[0] === 0x5b // '['
}

/** The envelopes of a record message, either form; throws when it holds something else. */
export function decodeRecordMessage(data: Uint8Array): Envelope[] {
  if (!isEnvelopeBatch(data)) return [decodeEnvelope(data)]
  const envelopes = JSON.parse(envelopeText(data)) as Envelope[]
  if (!Array.isArray(envelopes) || envelopes.length > RECORDS_PER_MESSAGE) throw new Error('not a Sluice envelope batch')
  for (const env of envelopes) assertEnvelope(env)
  return envelopes
}

/** `"record":`, the member an envelope's JSON ends with (envelopeJsonOf). */
const RECORD_MEMBER = Buffer.from('"record":')

/**
 * An envelope's members but its record, reading only the text before the record (the sink needs no more, and
 * parsing every record cost the real-time sink a visible share of a request). A quote inside a JSON string is
 * escaped, so the first `"record":` is a member name; a message laid out otherwise is parsed whole.
 */
function envelopeFacts(data: Uint8Array): Omit<Envelope, 'record'> {
  const text = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  const at = text.indexOf(RECORD_MEMBER)
  if (at > 0 && text[at - 1] === 0x2c /* , */ && text[at + RECORD_MEMBER.length] === 0x7b /* { */) {
    try {
      const facts = JSON.parse(`${text.toString('utf8', 0, at - 1)}}`) as Omit<Envelope, 'record'>
      if (typeof facts.record_id === 'string' && typeof facts.object === 'string' && facts.schema_version >= 1 && facts.received_at > 0) return facts
    } catch {
      // Not an envelope written by envelopeJsonOf: read it whole.
    }
  }
  return decodeEnvelope(data)
}

/** What a store needs of a record message, either form, without parsing a batch's records (DuckDB reads them). */
export interface RecordMessage {
  object: string
  /** The highest schema version of its records. */
  schemaVersion: number
  receivedAt: number
  /** From a batch job: its records share the job's receipt time (receivedAt). */
  batch: boolean
  /** How many records it holds. */
  count: number
  /** Its envelopes as a JSON array, UTF-8 (a batch's are the message's own bytes). */
  envelopes: Uint8Array
}

/** How many records a record message holds, without parsing it: one, or what a batch's header says (0 without it). */
export function recordCountOf(m: { data: Uint8Array; headers?: MsgHdrs }): number {
  return isEnvelopeBatch(m.data) ? Number(m.headers?.get(ENVELOPE_BATCH_HEADERS.count)) || 0 : 1
}

/** Reads a record message's facts: a batch's from its headers and subject. Throws when it is neither form. */
export function readRecordMessage(m: Pick<JsMsg, 'data' | 'subject' | 'headers'>): RecordMessage {
  if (!isEnvelopeBatch(m.data)) {
    const env = envelopeFacts(m.data)
    return {
      object: env.object,
      schemaVersion: env.schema_version,
      receivedAt: env.received_at,
      batch: false,
      count: 1,
      envelopes: Buffer.concat([OPEN_ARRAY, m.data, CLOSE_ARRAY]),
    }
  }
  const header = (name: string) => Number(m.headers?.get(name))
  const count = recordCountOf(m)
  const schemaVersion = header(ENVELOPE_BATCH_HEADERS.schemaVersion)
  const receivedAt = header(ENVELOPE_BATCH_HEADERS.receivedAt)
  if (!(count >= 1 && count <= RECORDS_PER_MESSAGE && schemaVersion >= 1 && receivedAt > 0) || m.data[m.data.length - 1] !== CLOSE_ARRAY[0])
    throw new Error('a batch of envelopes without its headers')
  return { object: objectOfSubject(m.subject), schemaVersion, receivedAt, batch: true, count, envelopes: m.data }
}

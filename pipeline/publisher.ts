import { hash } from 'node:crypto'
import type { JetStreamManager } from '@nats-io/jetstream'
import { headers, type MsgHdrs } from '@nats-io/transport-node'
import { decodeEnvelope, ENVELOPE_BATCH_HEADERS, type Envelope, encodeEnvelope } from './envelope.ts'
import { SluiceError } from './errors.ts'
import type { SluiceNats } from './nats-connection.ts'
import { type StreamAck, StreamPublisher } from './stream-publisher.ts'
import { STREAMS, SUBJECTS } from './streams.ts'

/** JetStream's answer for one record: where it is, and whether it was a retry of one already stored. */
export interface PublishedRecord {
  record_id: string
  stream_seq: number
  duplicate: boolean
}

/**
 * The message id JetStream deduplicates on: the client's Idempotency-Key when it sent one, else a hash of the
 * object and the record's content, so an identical retry is caught and a changed record is not.
 */
export function dedupId(object: string, recordJson: string, idempotencyKey?: string): string {
  if (idempotencyKey) return `${object}:key:${idempotencyKey}`
  return `${object}:sha256:${hash('sha256', recordJson, 'base64url')}`
}

/** The record id of a stored single-record message, or undefined when it cannot be read. */
function recordIdOf(data: Uint8Array): string | undefined {
  try {
    return decodeEnvelope(data).record_id
  } catch {
    return undefined
  }
}

/** Publishes envelopes to the record stream and resolves only once JetStream has stored them. */
export class RecordPublisher {
  readonly #nats: SluiceNats
  readonly #stream: StreamPublisher
  readonly #jsm: JetStreamManager
  readonly #retryAfter: string

  constructor(nats: SluiceNats, jsm: JetStreamManager, opts: { timeoutMs: number; retryAfterSeconds: number }) {
    this.#nats = nats
    this.#stream = new StreamPublisher(nats.nc, { timeoutMs: opts.timeoutMs })
    this.#jsm = jsm
    this.#retryAfter = String(opts.retryAfterSeconds)
  }

  #unavailable(detail: string, cause?: unknown): SluiceError {
    return new SluiceError('SLUICE_STREAM_UNAVAILABLE', detail, { cause, headers: { 'Retry-After': this.#retryAfter } })
  }

  close(): void {
    this.#stream.close()
  }

  /** The largest message the NATS server takes, bytes. */
  maxPayload(): number {
    return this.#nats.nc.info?.max_payload ?? 1024 * 1024
  }

  /** `recordJson` is `env.record` as JSON: the caller made it for the message id already. */
  async publish(env: Envelope, recordJson: string, msgId: string, partition: number): Promise<PublishedRecord> {
    const ack = await this.#store(SUBJECTS.record(env.object, partition), encodeEnvelope(env, recordJson), msgId, headers(), 'the record was not stored')
    if (!ack.duplicate) return { record_id: env.record_id, stream_seq: ack.seq, duplicate: false }
    // A retry: answer with the id the first attempt was given, read from its envelope (retries are rare; a
    // header with the id on every message cost a visible share of a request).
    const original = await this.#jsm.streams.getMessage(STREAMS.records.name, { seq: ack.seq }).catch(() => null)
    return { record_id: (original && recordIdOf(original.data)) || env.record_id, stream_seq: ack.seq, duplicate: true }
  }

  /**
   * Publishes a batch job's envelopes (JSON texts) of one object and partition as one message, in the job lane,
   * resolving once JetStream stored it. `msgId` names the batch: sent again (a resumed job), it is stored once.
   */
  async publishBatch(
    object: string,
    partition: number,
    envelopes: readonly string[],
    msgId: string,
    meta: { schemaVersion: number; receivedAt: number },
  ): Promise<StreamAck> {
    const h = headers()
    h.set(ENVELOPE_BATCH_HEADERS.count, String(envelopes.length))
    h.set(ENVELOPE_BATCH_HEADERS.schemaVersion, String(meta.schemaVersion))
    h.set(ENVELOPE_BATCH_HEADERS.receivedAt, String(meta.receivedAt))
    return this.#store(SUBJECTS.jobRecords(object, partition), Buffer.from(`[${envelopes.join(',')}]`), msgId, h, 'the records were not stored')
  }

  /** Stores a message under its id (`unstored` says what a refusal lost), resolving once JetStream has it. */
  async #store(subject: string, data: Uint8Array, msgId: string, h: MsgHdrs, unstored: string): Promise<StreamAck> {
    // While disconnected nats.js would buffer the publish and send it after a reconnect, storing records
    // whose sender was already told 503: refuse up front instead.
    if (!this.#nats.connected()) throw this.#unavailable(`not connected to NATS; ${unstored}`)
    h.set('Nats-Msg-Id', msgId)
    try {
      return await this.#stream.publish(subject, data, h)
    } catch (cause) {
      throw this.#unavailable(`JetStream did not store the record: ${(cause as Error).message}`, cause)
    }
  }
}

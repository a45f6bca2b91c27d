import type { ConsumerMessages, JetStreamClient, JsMsg } from '@nats-io/jetstream'
import { type AnalyticsStore, type EnvelopeRow, recordSeq, type SchemaRegistry, type SchemaVersion } from '../../storage/index.ts'
import { readRecordMessage } from '../envelope.ts'
import type { Logger } from '../logger.ts'
import type { Metrics } from '../metrics.ts'
import { CONSUMERS } from '../streams.ts'
import { writeUntilStored } from './write-retry.ts'

/** One object's records among the pending messages. */
interface PendingGroup {
  rows: EnvelopeRow[]
  records: number
  receivedAt: number[]
  version: number
}

export interface AnalyticsSinkOptions {
  js: JetStreamClient
  store: AnalyticsStore
  registry: SchemaRegistry
  metrics: Metrics
  log: Logger
  batchSize: number
  flushIntervalMs: number
}

/** Messages the sink asks JetStream for at a time. */
const SINK_PULL_MESSAGES = 256

/**
 * Consumes the record stream and appends to DuckDB in micro-batches (size or time, whichever first).
 * A batch is acked through its last message only after it is written; a failed write is retried until it
 * succeeds, and the store skips sequences it already holds, so redelivery never duplicates a row.
 */
export class AnalyticsSink {
  readonly #opts: AnalyticsSinkOptions
  #messages?: ConsumerMessages
  #loop?: Promise<void>
  /**
   * What the messages taken since the last write hold, read as they arrive: only the last message is kept (a
   * batch is acked through it), so the rest die young instead of being copied by every scavenge until the write.
   */
  #pending = new Map<string, PendingGroup>()
  #last?: JsMsg
  /** Records the pending messages hold: a batch job's message holds many. */
  #pendingRecords = 0
  #timer?: NodeJS.Timeout
  readonly #stopped = new AbortController()
  #flushing: Promise<void> = Promise.resolve()
  /** Schema version each object's table was last brought up to. */
  readonly #tableVersions = new Map<string, number>()

  constructor(opts: AnalyticsSinkOptions) {
    this.#opts = opts
  }

  async start(): Promise<void> {
    for (const object of this.#opts.registry.objects()) await this.#ensureTable(object, 0)
    const consumer = await this.#opts.js.consumers.get(CONSUMERS.analyticsSink.stream, CONSUMERS.analyticsSink.durable)
    // Messages, not bytes: pulls by bytes stalled for tens of seconds against nats-server 2.9 (a message that
    // does not fit what is left of a pull ends it with a 409 that nats.js waits out). A batch job's message is
    // at most 32 KB, so this holds at most 8 MB.
    this.#messages = await consumer.consume({ max_messages: SINK_PULL_MESSAGES })
    this.#loop = this.#consume(this.#messages)
  }

  async #consume(messages: ConsumerMessages): Promise<void> {
    for await (const m of messages) {
      if (!this.#take(m)) continue
      if (this.#pendingRecords >= this.#opts.batchSize) await this.#flush()
      else this.#timer ??= setTimeout(() => void this.#flush(), this.#opts.flushIntervalMs)
    }
  }

  /** Stops taking messages and writes what it holds. */
  async stop(): Promise<void> {
    this.#stopped.abort()
    await this.#messages?.close()
    await this.#loop
    await this.#flush()
  }

  /** A new schema version: bring the table to it now, so queries show new columns before any record has them. */
  schemaChanged(version: SchemaVersion): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#ensureTable(version.object, version.version))
    return this.#flushing
  }

  #flush(): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#writeBatch())
    return this.#flushing
  }

  async #ensureTable(object: string, version: number): Promise<void> {
    const known = this.#tableVersions.get(object)
    if (known !== undefined && known >= version) return
    // The envelope names a version newer than the table: another ingress process changed the schema.
    const current = this.#opts.registry.refresh(object)
    if (!current || current.version < version) throw new Error(`schema ${object} v${version} is not in the registry`)
    await this.#opts.store.ensureTable(current.schema)
    this.#tableVersions.set(object, current.version)
  }

  /** Reads a message into the pending groups; false for poison, which is terminated. */
  #take(m: JsMsg): boolean {
    let read: ReturnType<typeof readRecordMessage>
    try {
      read = readRecordMessage(m)
    } catch (err) {
      // Poison: redelivery cannot fix it. Terminate, and say so where an operator looks.
      this.#opts.log.error({ err, seq: m.seq, subject: m.subject }, 'analytics sink: undecodable message terminated')
      this.#opts.metrics.sinkPoison.inc()
      m.term('undecodable envelope')
      return false
    }
    let group = this.#pending.get(read.object)
    if (!group) this.#pending.set(read.object, (group = { rows: [], records: 0, receivedAt: [], version: 0 }))
    this.#last = m
    group.version = Math.max(group.version, read.schemaVersion)
    group.rows.push({ seq: recordSeq(m.seq), envelopes: read.envelopes })
    group.records += read.count
    this.#pendingRecords += read.count
    // Freshness is the real-time path's: a batch job's records all carry the job's receipt, and would fill the
    // histogram with the job's length (and cost an observation each, a million for a large job).
    if (!read.batch) group.receivedAt.push(read.receivedAt)
    return true
  }

  async #writeBatch(): Promise<void> {
    clearTimeout(this.#timer)
    this.#timer = undefined
    const byObject = this.#pending
    const last = this.#last
    if (!last) return
    this.#pending = new Map()
    this.#last = undefined
    this.#pendingRecords = 0
    const { store, metrics, log } = this.#opts
    const started = performance.now()
    const written = await writeUntilStored(
      async () => {
        for (const [object, group] of byObject) {
          await this.#ensureTable(object, group.version)
          await store.append(object, group.rows)
        }
      },
      { log, what: 'analytics sink', stopped: this.#stopped.signal },
    )
    if (!written) return
    last.ack()
    const now = Date.now()
    for (const [object, group] of byObject) {
      for (const receivedAt of group.receivedAt) metrics.freshness.observe((now - receivedAt) / 1000)
      metrics.sinkRecords.inc({ object }, group.records)
    }
    metrics.sinkBatchLatency.observe((performance.now() - started) / 1000)
  }
}

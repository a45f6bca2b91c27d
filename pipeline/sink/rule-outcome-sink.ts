import type { ConsumerMessages, JetStreamClient, JsMsg } from '@nats-io/jetstream'
import type { MsgHdrs } from '@nats-io/transport-node'
import type { DecisionAsStored, DecisionBatch, RuleCounterRow, RuleOutcomeStore } from '../../storage/index.ts'
import type { Logger } from '../logger.ts'
import { CONSUMERS, DECISION_BATCH_HEADERS, MAX_BATCH_DECISIONS } from '../streams.ts'
import { writeUntilStored } from './write-retry.ts'

export interface RuleOutcomeSinkOptions {
  js: JetStreamClient
  store: RuleOutcomeStore
  log: Logger
  /** Most decisions written in one transaction. */
  batchSize: number
  /** At most one write this often, unless a batch is full: a transaction per decision would cost more than the decision. */
  flushIntervalMs: number
}

/**
 * Consumes SLUICE_DECISIONS (each message a batch of the rule stage's decisions) and stores decisions, hits
 * and per-rule counters in DuckDB for the dashboard. A write holds batchSize decisions, or what arrived within
 * flushIntervalMs of the first. It is acked through its last message
 * once written; a failed write is retried until it succeeds, and the store skips records it already holds a
 * decision on, so redelivery never counts a decision twice.
 */
export class RuleOutcomeSink {
  readonly #opts: RuleOutcomeSinkOptions
  readonly #stopped = new AbortController()
  #messages?: ConsumerMessages
  #loop?: Promise<void>
  #batches: DecisionBatch[] = []
  #decisionCount = 0
  /** The last message whose decisions are in #batches: acking it acks the write (ack policy all). */
  #last?: JsMsg
  #timer?: NodeJS.Timeout
  #writing: Promise<void> = Promise.resolve()

  constructor(opts: RuleOutcomeSinkOptions) {
    this.#opts = opts
  }

  async start(): Promise<void> {
    const consumer = await this.#opts.js.consumers.get(CONSUMERS.ruleOutcomeSink.stream, CONSUMERS.ruleOutcomeSink.durable)
    // Two writes' worth: the next is in hand when a write ends. A message holds up to MAX_BATCH_DECISIONS.
    this.#messages = await consumer.consume({ max_messages: Math.ceil((2 * this.#opts.batchSize) / MAX_BATCH_DECISIONS) })
    this.#loop = this.#consume(this.#messages)
  }

  /** Stops taking messages and writes what it holds. */
  async stop(): Promise<void> {
    this.#stopped.abort()
    await this.#messages?.close()
    await this.#loop
    await this.#flush()
  }

  // Whether more messages are buffered is not something to wait on (nats.js's pending count can stay above
  // zero after the last one): a write happens when batchSize decisions are in, or flushIntervalMs after the first.
  async #consume(messages: ConsumerMessages): Promise<void> {
    for await (const msg of messages) {
      try {
        const batch = readDecisionBatch(msg)
        this.#batches.push(batch)
        this.#decisionCount += batch.decisions.length
        this.#last = msg
      } catch (err) {
        this.#opts.log.error({ err, seq: msg.seq, subject: msg.subject }, 'rule outcome sink: undecodable decision batch terminated')
        msg.term('undecodable decision batch')
        continue
      }
      if (this.#decisionCount >= this.#opts.batchSize) await this.#flush()
      else this.#timer ??= setTimeout(() => void this.#flush(), this.#opts.flushIntervalMs)
    }
  }

  #flush(): Promise<void> {
    this.#writing = this.#writing.then(() => this.#write())
    return this.#writing
  }

  async #write(): Promise<void> {
    clearTimeout(this.#timer)
    this.#timer = undefined
    const batches = this.#batches
    const last = this.#last
    this.#batches = []
    this.#decisionCount = 0
    this.#last = undefined
    if (!last) return
    const { store, log } = this.#opts
    if (await writeUntilStored(() => store.append(batches), { log, what: 'rule outcome sink', stopped: this.#stopped.signal })) last.ack()
  }
}

/** A SLUICE_DECISIONS message read: its decisions, and a batch job's counts from their header. Throws when it is no such message. */
export function readDecisionBatch(msg: { json<T>(): T; headers?: MsgHdrs }): DecisionBatch {
  const decisions = msg.json<DecisionAsStored[]>()
  if (!Array.isArray(decisions)) throw new Error('a decision batch is a JSON array of decisions')
  const counters = msg.headers?.get(DECISION_BATCH_HEADERS.counters)
  return { decisions, ...(counters && { counters: JSON.parse(counters) as RuleCounterRow[] }) }
}

import { setTimeout as sleep } from 'node:timers/promises'
import type { ConsumerMessages, JetStreamClient, JsMsg } from '@nats-io/jetstream'
import type { Decision, RuleOutcomeStore } from '../../storage/index.ts'
import type { Logger } from '../logger.ts'
import { CONSUMERS } from '../streams.ts'
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
 * and per-rule counters in DuckDB for the dashboard. A write holds what has arrived when the sink has caught
 * up and the last write is flushIntervalMs old, or batchSize decisions. It is acked through its last message
 * once written; a failed write is retried until it succeeds, and the store skips records it already holds a
 * decision on, so redelivery never counts a decision twice.
 */
export class RuleOutcomeSink {
  readonly #opts: RuleOutcomeSinkOptions
  readonly #stopped = new AbortController()
  #messages?: ConsumerMessages
  #loop?: Promise<void>
  #lastWrite = 0

  constructor(opts: RuleOutcomeSinkOptions) {
    this.#opts = opts
  }

  async start(): Promise<void> {
    const consumer = await this.#opts.js.consumers.get(CONSUMERS.ruleOutcomeSink.stream, CONSUMERS.ruleOutcomeSink.durable)
    this.#messages = await consumer.consume({ max_messages: 64 })
    this.#loop = this.#consume(this.#messages)
  }

  async stop(): Promise<void> {
    this.#stopped.abort()
    await this.#messages?.close()
    await this.#loop
  }

  async #consume(messages: ConsumerMessages): Promise<void> {
    let decisions: Decision[] = []
    let last: JsMsg | undefined
    for await (const msg of messages) {
      try {
        decisions.push(...msg.json<Decision[]>())
        last = msg
      } catch (err) {
        this.#opts.log.error({ err, seq: msg.seq, subject: msg.subject }, 'rule outcome sink: undecodable decision batch terminated')
        msg.term('undecodable decision batch')
      }
      if (decisions.length < this.#opts.batchSize && messages.getPending() > 0) continue
      const wait = this.#lastWrite + this.#opts.flushIntervalMs - Date.now()
      if (decisions.length < this.#opts.batchSize && wait > 0) await sleep(wait)
      await this.#write(decisions, last)
      decisions = []
      last = undefined
    }
    await this.#write(decisions, last)
  }

  async #write(decisions: Decision[], last: JsMsg | undefined): Promise<void> {
    if (!last) return
    this.#lastWrite = Date.now()
    const { store, log } = this.#opts
    if (await writeUntilStored(() => store.append(decisions), { log, what: 'rule outcome sink', stopped: this.#stopped.signal })) last.ack()
  }
}

import { setTimeout as sleep } from 'node:timers/promises'
import type { ConsumerMessages, JetStreamClient, JsMsg } from '@nats-io/jetstream'
import type { Decision, RuleOutcomeStore } from '../../storage/index.ts'
import type { Logger } from '../logger.ts'
import { CONSUMERS } from '../streams.ts'

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
 * Consumes SLUICE_DECISIONS and stores decisions, hits and per-rule counters in DuckDB for the dashboard. A
 * batch is what has arrived when the sink has caught up and the last write is flushIntervalMs old, or
 * batchSize decisions. Acks after the write; a failed write is nak'd, and the store skips what it already
 * holds, so redelivery never counts a decision twice.
 */
export class RuleOutcomeSink {
  readonly #opts: RuleOutcomeSinkOptions
  #messages?: ConsumerMessages
  #loop?: Promise<void>
  #lastWrite = 0

  constructor(opts: RuleOutcomeSinkOptions) {
    this.#opts = opts
  }

  async start(): Promise<void> {
    const consumer = await this.#opts.js.consumers.get(CONSUMERS.ruleOutcomeSink.stream, CONSUMERS.ruleOutcomeSink.durable)
    this.#messages = await consumer.consume({ max_messages: this.#opts.batchSize * 2 })
    this.#loop = this.#consume(this.#messages)
  }

  async stop(): Promise<void> {
    await this.#messages?.close()
    await this.#loop
  }

  async #consume(messages: ConsumerMessages): Promise<void> {
    let batch: JsMsg[] = []
    for await (const msg of messages) {
      batch.push(msg)
      if (batch.length < this.#opts.batchSize && messages.getPending() > 0) continue
      const wait = this.#lastWrite + this.#opts.flushIntervalMs - Date.now()
      if (batch.length < this.#opts.batchSize && wait > 0) await sleep(wait)
      await this.#write(batch)
      batch = []
    }
    await this.#write(batch)
  }

  async #write(batch: JsMsg[]): Promise<void> {
    if (batch.length === 0) return
    this.#lastWrite = Date.now()
    const decisions: { seq: number; decision: Decision }[] = []
    const valid: JsMsg[] = []
    for (const msg of batch) {
      try {
        decisions.push({ seq: msg.seq, decision: msg.json<Decision>() })
        valid.push(msg)
      } catch (err) {
        this.#opts.log.error({ err, seq: msg.seq, subject: msg.subject }, 'rule outcome sink: undecodable decision terminated')
        msg.term('undecodable decision')
      }
    }
    try {
      await this.#opts.store.append(decisions)
    } catch (err) {
      this.#opts.log.error({ err, count: valid.length }, 'rule outcome sink: batch write failed; will be redelivered')
      for (const msg of valid) msg.nak(1000)
      return
    }
    for (const msg of valid) msg.ack()
  }
}

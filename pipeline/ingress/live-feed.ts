import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import type { ObjectStats } from '../../storage/index.ts'
import { decodeRecordMessage, recordCountOf } from '../envelope.ts'
import type { Logger } from '../logger.ts'
import { objectOfSubject, STREAMS, SUBJECTS } from '../streams.ts'

/** One second of what went through the pipeline, counted from every message (never sampled). */
export interface LiveTick {
  /** Epoch ms at the end of the second. */
  at: number
  /** Records accepted per object. */
  records: Record<string, number>
  /** Live alerts raised. */
  alerts: number
  /** Records per object that were counted but not forwarded as `record` events (rate limit). */
  not_forwarded: Record<string, number>
}

/** A record as the dashboard shows it the moment JetStream has it (before the sink has stored it). */
export interface LiveRecord {
  object: string
  record_id: string
  received_at: string
  source: string
  schema_version: number
  job_id: string | null
  data: Record<string, unknown>
}

export type LiveEvent =
  | { type: 'tick'; tick: LiveTick }
  | { type: 'stats'; objects: ObjectStats[] }
  | { type: 'stats_error'; message: string }
  | { type: 'record'; record: LiveRecord }
  | { type: 'alert'; alert: Record<string, unknown> }
  | { type: 'schema'; object: string; version: number }

export interface LiveFeedOptions {
  nc: NatsConnection
  /** Totals and freshness per object, from whichever process owns the analytics store. */
  stats: () => Promise<ObjectStats[]>
  log: Logger
  /** Seconds of ticks kept for a newly opened dashboard's chart. Default 900. */
  historySeconds?: number
  /** Records forwarded per object and second; the rest are only counted. Default 20. */
  recordsPerSecond?: number
  /** Alerts forwarded per second. Default 50. */
  alertsPerSecond?: number
  /** How long the subscriptions stay up after the last listener left, so a reload keeps the chart. Default 300 000 ms. */
  idleMs?: number
}

/**
 * What the dashboard's `GET /events` streams: per-second counts per object, sampled new records, alerts, schema
 * changes, and the analytics totals. It subscribes with core NATS to the record and alert subjects (every
 * ingress process sees every record, whichever process accepted it), but only while a dashboard is open: an
 * unwatched Sluice pays nothing for it. Records are rate-limited per object so a browser is never flooded; the
 * counts in each tick are exact.
 */
export class LiveFeed {
  readonly #opts: Required<Omit<LiveFeedOptions, 'nc' | 'stats' | 'log'>> & Pick<LiveFeedOptions, 'nc' | 'stats' | 'log'>
  readonly #listeners = new Set<(event: LiveEvent) => void>()
  #subscriptions: Subscription[] = []
  #ticker: NodeJS.Timeout | undefined
  #idleTimer: NodeJS.Timeout | undefined
  #history: LiveTick[] = []
  #current: LiveTick = emptyTick()
  #alertsForwarded = 0
  #statsInFlight = false

  constructor(opts: LiveFeedOptions) {
    this.#opts = { historySeconds: 900, recordsPerSecond: 20, alertsPerSecond: 50, idleMs: 300_000, ...opts }
  }

  /** The last seconds' ticks, oldest first. */
  history(): LiveTick[] {
    return [...this.#history]
  }

  /** Calls `listener` with every event from now on; returns the function that stops it. */
  listen(listener: (event: LiveEvent) => void): () => void {
    clearTimeout(this.#idleTimer)
    this.#listeners.add(listener)
    if (!this.#ticker) this.#start()
    return () => {
      this.#listeners.delete(listener)
      if (this.#listeners.size === 0) this.#idleTimer = setTimeout(() => this.stop(), this.#opts.idleMs).unref()
    }
  }

  stop(): void {
    clearTimeout(this.#idleTimer)
    clearInterval(this.#ticker)
    this.#ticker = undefined
    for (const sub of this.#subscriptions) sub.unsubscribe()
    this.#subscriptions = []
    this.#history = []
    this.#current = emptyTick()
  }

  #emit(event: LiveEvent): void {
    for (const listener of this.#listeners) listener(event)
  }

  #start(): void {
    const { nc, log } = this.#opts
    this.#subscriptions = [
      nc.subscribe(STREAMS.records.subjects[0], {
        callback: (err, msg) => {
          if (err) return
          // The object is in the subject and a batch's count in its headers, so counting needs no parsing.
          const object = objectOfSubject(msg.subject)
          const count = recordCountOf(msg)
          const before = this.#current.records[object] ?? 0
          this.#current.records[object] = before + count
          const room = this.#opts.recordsPerSecond - (before - (this.#current.not_forwarded[object] ?? 0))
          const forwarding = Math.max(0, Math.min(count, room))
          this.#current.not_forwarded[object] = (this.#current.not_forwarded[object] ?? 0) + count - forwarding
          if (forwarding === 0) return
          try {
            for (const env of decodeRecordMessage(msg.data).slice(0, forwarding)) {
              this.#emit({
                type: 'record',
                record: {
                  object: env.object,
                  record_id: env.record_id,
                  received_at: new Date(env.received_at).toISOString(),
                  source: env.source,
                  schema_version: env.schema_version,
                  job_id: env.job_id ?? null,
                  data: env.record,
                },
              })
            }
          } catch (cause) {
            log.debug({ err: cause, subject: msg.subject }, 'live feed skipped a message that is not an envelope')
          }
        },
      }),
      nc.subscribe(STREAMS.alerts.subjects[0], {
        callback: (err, msg) => {
          if (err) return
          this.#current.alerts++
          if (++this.#alertsForwarded > this.#opts.alertsPerSecond) return
          try {
            this.#emit({ type: 'alert', alert: msg.json() })
          } catch (cause) {
            log.debug({ err: cause, subject: msg.subject }, 'live feed skipped an alert that is not JSON')
          }
        },
      }),
      nc.subscribe(SUBJECTS.schemaChanged('*'), {
        callback: (err, msg) => {
          if (err) return
          try {
            const { object, version } = msg.json<{ object: string; version: number }>()
            this.#emit({ type: 'schema', object, version })
          } catch (cause) {
            log.debug({ err: cause, subject: msg.subject }, 'live feed skipped a schema event that is not JSON')
          }
        },
      }),
    ]
    this.#ticker = setInterval(() => this.#tick(), 1000).unref()
  }

  #tick(): void {
    const tick = { ...this.#current, at: Date.now() }
    this.#current = emptyTick()
    this.#alertsForwarded = 0
    this.#history.push(tick)
    if (this.#history.length > this.#opts.historySeconds) this.#history.shift()
    this.#emit({ type: 'tick', tick })
    // One stats query a second for all open dashboards, never two at once when the store is slow.
    if (this.#statsInFlight) return
    this.#statsInFlight = true
    this.#opts
      .stats()
      .then(
        (objects) => this.#emit({ type: 'stats', objects }),
        (err: Error) => this.#emit({ type: 'stats_error', message: err.message }),
      )
      .finally(() => (this.#statsInFlight = false))
  }
}

function emptyTick(): LiveTick {
  return { at: 0, records: {}, alerts: 0, not_forwarded: {} }
}

import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises'
import { AckPolicy, type Consumer, type ConsumerMessages, DeliverPolicy, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream'
import { headers, type MsgHdrs, type NatsConnection, nanos, type Subscription } from '@nats-io/transport-node'
import { Counter, Histogram, type Registry } from 'prom-client'
import type { SluiceConfig } from '../pipeline/config.ts'
import type { Logger } from '../pipeline/logger.ts'
import { StreamPublisher } from '../pipeline/stream-publisher.ts'
import { DECISION_BATCH_HEADERS, MAX_BATCH_DECISIONS, RECORD_LANES, type RecordLane, RULE_CONSUMERS, STREAMS, SUBJECTS } from '../pipeline/streams.ts'
import { ensureConsumer } from '../pipeline/topology.ts'
import { CounterTally, type Decision, type RuleStore, type SchemaRegistry } from '../storage/index.ts'
import { type CompiledRuleSet, compileStoredRuleSet } from './rule-set.ts'
import { alertsOf, RuleState } from './rule-state.ts'
import { rebuildState, stageRecordsOf } from './stream-reader.ts'

export interface RuleStageOptions {
  nc: NatsConnection
  js: JetStreamClient
  jsm: JetStreamManager
  registry: SchemaRegistry
  rules: RuleStore
  /** The process's Prometheus registry; the stage adds its metrics to it. */
  metrics: Registry
  log: Logger
  config: SluiceConfig['rules']
}

const HOUR_MS = 3_600_000
const MINUTE_MS = 60_000
/** A failing expression is logged at most this often per rule version; every failure is counted. */
const ERROR_LOG_INTERVAL_MS = 60_000
const FIRST_RESTART_DELAY_MS = 500
const MAX_RESTART_DELAY_MS = 30_000

function ruleStageMetrics(registry: Registry) {
  return {
    records: new Counter({
      name: 'sluice_rule_records_total',
      help: 'Records the rule stage decided on, by object and decision.',
      labelNames: ['object', 'decision'] as const,
      registers: [registry],
    }),
    evaluations: new Counter({
      name: 'sluice_rule_evaluations_total',
      help: 'Rule evaluations, by rule and outcome (hit, shadow_hit, miss, error).',
      labelNames: ['rule_id', 'outcome'] as const,
      registers: [registry],
    }),
    latency: new Histogram({
      name: 'sluice_rule_decision_seconds',
      help: 'Time from receipt by ingress to the decision and its alerts stored in JetStream.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5],
      registers: [registry],
    }),
    poison: new Counter({
      name: 'sluice_rule_poison_messages_total',
      help: 'Record messages the rule stage could not decode and terminated.',
      registers: [registry],
    }),
    restarts: new Counter({
      name: 'sluice_rule_stage_restarts_total',
      help: 'Times the rule stage started over from the last acked record after failing to publish an outcome.',
      registers: [registry],
    }),
  }
}
type RuleStageMetrics = ReturnType<typeof ruleStageMetrics>

/**
 * The rule stage of one worker: for each partition of the record stream it owns, a durable pull consumer
 * whose records it evaluates in stream order against the live rule set, publishing each decision (and an
 * alert per live hit) and acking a record only once its outcomes are stored, in order. On start it rebuilds
 * its state (lookups, windows) from the stream up to what each partition's consumer has acked, so a restart
 * changes no result. A failed publish stops the worker, which starts over from the last acked records.
 */
export class RuleStage {
  readonly #opts: RuleStageOptions
  readonly #metrics: RuleStageMetrics
  #ruleSet!: CompiledRuleSet
  #runners: PartitionRunner[] = []
  #subscription?: Subscription
  #stopping = false
  /** Aborts a restart's wait when the stage stops. */
  readonly #stopped = new AbortController()
  #failuresInARow = 0
  /** Bumped on every (re)start, so a failure reported by an earlier run's runner is ignored. */
  #generation = 0
  /** start, stop, reloads and restarts take turns. */
  #turn: Promise<void> = Promise.resolve()
  readonly #errorsLoggedAt = new Map<string, number>()

  /** Decisions and alerts go out on the same hot path as records (see pipeline/stream-publisher.ts for why). */
  readonly #outcomes: StreamPublisher

  constructor(opts: RuleStageOptions) {
    this.#opts = opts
    this.#metrics = ruleStageMetrics(opts.metrics)
    this.#outcomes = new StreamPublisher(opts.nc, { timeoutMs: 5000 })
  }

  async start(): Promise<void> {
    this.#ruleSet = compileStoredRuleSet(this.#opts.rules.current())
    await this.#run()
    this.#subscription = this.#opts.nc.subscribe(SUBJECTS.rulesChanged, { callback: () => void this.#inTurn(() => this.#reload()) })
  }

  async stop(): Promise<void> {
    this.#stopping = true
    this.#stopped.abort()
    this.#subscription?.unsubscribe()
    await this.#inTurn(() => this.#halt())
    // The acks just sent must reach the server before the connection closes, or the next start redoes them.
    await this.#opts.nc.flush().catch(() => {})
    this.#outcomes.close()
  }

  #inTurn(task: () => Promise<void>): Promise<void> {
    this.#turn = this.#turn.then(task).catch((err) => this.#opts.log.error({ err }, 'rule stage: a reload or restart failed'))
    return this.#turn
  }

  async #run(): Promise<void> {
    const { config, log } = this.#opts
    const generation = ++this.#generation
    const state = new RuleState(this.#ruleSet.allFeatures(), {
      activityWindowMs: config.activityWindowHours * HOUR_MS,
      lateMs: config.lateArrivalMinutes * MINUTE_MS,
    })
    const consumers: { partition: number; lane: RecordLane; consumer: Consumer }[] = []
    const lastSeq = new Map<string, number>()
    for (const partition of config.partitions) {
      for (const lane of RECORD_LANES) {
        const prepared = await this.#prepareConsumer(partition, lane)
        consumers.push({ partition, lane, consumer: prepared.consumer })
        lastSeq.set(RULE_CONSUMERS.durable(partition, lane), prepared.lastSeq)
      }
    }
    const started = performance.now()
    const absorbed = await rebuildState(this.#opts.js, this.#opts.jsm, {
      registry: this.#opts.registry,
      state,
      lastSeq,
      lateMs: config.lateArrivalMinutes * MINUTE_MS,
    })
    log.info(
      { partitions: config.partitions, records: absorbed, ms: Math.round(performance.now() - started) },
      'rule stage: state rebuilt from the record stream',
    )
    this.#runners = consumers.map(
      ({ partition, lane, consumer }) =>
        new PartitionRunner(consumer, {
          evaluate: (msg) => this.#evaluate(state, msg),
          publish: (batch) => this.#publishBatch(partition, batch),
          onFailure: (err) => this.#failed(generation, partition, err),
          maxInFlight: config.maxInFlight,
          yieldEachMessage: lane === 'job',
        }),
    )
    for (const runner of this.#runners) await runner.start()
  }

  async #halt(): Promise<void> {
    await Promise.all(this.#runners.map((r) => r.stop()))
    this.#runners = []
  }

  /**
   * Makes the durable consumer of the partition's lane deliver, in stream order, the records after the last one
   * acked. Records an earlier run took but did not ack would come back only after the ack wait, behind newer
   * ones; windows need stream order, so such a consumer is made anew right after its last acked record.
   */
  async #prepareConsumer(partition: number, lane: RecordLane): Promise<{ consumer: Consumer; lastSeq: number }> {
    const { jsm, js, config } = this.#opts
    const stream = STREAMS.records.name
    const durable = RULE_CONSUMERS.durable(partition, lane)
    const info = await ensureConsumer(
      jsm,
      stream,
      {
        durable_name: durable,
        filter_subject: RULE_CONSUMERS.filter(partition, lane),
        // Records are finished in stream order, so acking the last of a batch acks the batch.
        ack_policy: AckPolicy.All,
        deliver_policy: DeliverPolicy.All,
        ack_wait: nanos(config.ackWaitSeconds * 1000),
        max_ack_pending: config.maxInFlight,
      },
      { restartUnacked: true },
    )
    return { consumer: await js.consumers.get(stream, durable), lastSeq: info.ack_floor.stream_seq }
  }

  /** Evaluates a message's records and publishes their alerts; the decisions go out with their batch (#publishBatch). */
  #evaluate(state: RuleState, msg: JsMsg): Evaluated[] | 'poison' {
    const { registry, log } = this.#opts
    const items = stageRecordsOf(msg, registry)
    if (items.length === 0) {
      log.error({ seq: msg.seq, subject: msg.subject }, 'rule stage: undecodable message terminated')
      this.#metrics.poison.inc()
      return 'poison'
    }
    return items.map((item) => {
      const [decision] = state.evaluate([this.#ruleSet], item)
      const alerts = alertsOf(decision).map((alert) => this.#publish(SUBJECTS.alert(alert.object, alert.rule_id), JSON.stringify(alert), alert.alert_id))
      return { decision, json: decisionJson(decision), alerts }
    })
  }

  /**
   * Stores a batch's decisions as one message (its id names the partition and record sequences, so a batch
   * evaluated again adds no second copy) and, once JetStream has it, announces each real-time record's decision
   * on core NATS. A batch job's records are history: no one waits on their decisions one by one, a backfill of
   * millions would flood live subscribers, and their time since receipt says nothing of the stage's latency.
   */
  #publishBatch(partition: number, batch: readonly Evaluated[]): Promise<void> {
    const first = batch[0].decision.record_seq
    const last = batch[batch.length - 1].decision.record_seq
    const h = outcomeHeaders(`${partition}:${first}-${last}`)
    // Per-rule counts: what a batch job's message carries, and what the metrics are counted from.
    const ofJob = ofBatchJob(batch[0].decision)
    const tally = new CounterTally()
    for (const { decision } of batch) tally.addDecision(decision)
    if (ofJob) h.set(DECISION_BATCH_HEADERS.counters, JSON.stringify(tally.rows()))
    const stored = this.#outcomes.publish(SUBJECTS.decisionBatch(partition), Buffer.from(`[${batch.map((e) => e.json).join(',')}]`), h)
    // Only what is needed once the batch is stored is kept until then: a batch job's decisions, held whole, lived
    // through garbage collections and were most of what this thread promoted to the old generation.
    const count = this.#counter(batch, tally)
    const announcements = ofJob
      ? []
      : batch.map(({ decision, json }) => ({ subject: SUBJECTS.decision(decision.object, decision.record_id), json, receivedAt: decision.received_at }))
    return Promise.all([stored, ...batch.flatMap((e) => e.alerts)]).then(() => {
      this.#failuresInARow = 0
      const now = Date.now()
      for (const { subject, json, receivedAt } of announcements) {
        this.#opts.nc.publish(subject, json)
        this.#metrics.latency.observe((now - Date.parse(receivedAt)) / 1000)
      }
      count()
    })
  }

  /** Publishes an outcome with its id as the JetStream message id, so a re-evaluated record adds no second copy. */
  #publish(subject: string, json: string, id: string): Promise<unknown> {
    return this.#outcomes.publish(subject, Buffer.from(json), outcomeHeaders(id))
  }

  /** Counts a batch's decisions now (its evaluations are in `tally`); the returned call adds them to the metrics, one update per label set. */
  #counter(batch: readonly Evaluated[], tally: CounterTally): () => void {
    const records = new Map<string, { object: string; decision: string; n: number }>()
    const now = Date.now()
    for (const { decision } of batch) {
      const recordKey = `${decision.object}\u0000${decision.decision}`
      const counted = records.get(recordKey)
      if (counted) counted.n++
      else records.set(recordKey, { object: decision.object, decision: decision.decision, n: 1 })
      for (const failure of decision.errors) {
        const key = `${failure.rule_id}@${failure.rule_version}`
        if (now - (this.#errorsLoggedAt.get(key) ?? 0) < ERROR_LOG_INTERVAL_MS) continue
        this.#errorsLoggedAt.set(key, now)
        this.#opts.log.warn(
          { ...failure, record_id: decision.record_id },
          'rule expression failed; the outcome is an error for this rule (logged once a minute per rule)',
        )
      }
    }
    return () => {
      for (const { object, decision, n } of records.values()) this.#metrics.records.inc({ object, decision }, n)
      for (const row of tally.rows()) {
        const outcomes = { hit: row.hits, shadow_hit: row.shadow_hits, error: row.errors, miss: row.evaluations - row.hits - row.shadow_hits - row.errors }
        for (const [outcome, n] of Object.entries(outcomes)) if (n > 0) this.#metrics.evaluations.inc({ rule_id: row.rule_id, outcome }, n)
      }
    }
  }

  /** A newer rule set on file: swap it in, or, when it reads other features, rebuild the windows they need first. */
  async #reload(): Promise<void> {
    const stored = this.#opts.rules.current()
    if (this.#stopping || stored.version === this.#ruleSet.version) return
    const next = compileStoredRuleSet(stored)
    const sameFeatures = JSON.stringify(next.allFeatures()) === JSON.stringify(this.#ruleSet.allFeatures())
    if (!sameFeatures) await this.#halt()
    this.#ruleSet = next
    if (!sameFeatures) await this.#run()
    this.#opts.log.info({ version: next.version, rebuilt: !sameFeatures }, 'rule stage: rule set loaded')
  }

  #failed(generation: number, partition: number, err: unknown): void {
    if (generation !== this.#generation || this.#stopping) return
    this.#generation++
    this.#metrics.restarts.inc()
    this.#opts.log.error({ err, partition }, 'rule stage: could not publish an outcome; starting over from the last acked records')
    void this.#inTurn(async () => {
      await this.#halt()
      while (!this.#stopping) {
        // Failing again and again (JetStream away) waits longer each time; an outcome stored resets it.
        const delay = Math.min(FIRST_RESTART_DELAY_MS * 2 ** this.#failuresInARow++, MAX_RESTART_DELAY_MS)
        await sleep(delay, undefined, { signal: this.#stopped.signal }).catch(() => {})
        if (this.#stopping) return
        try {
          await this.#run()
          return
        } catch (restartErr) {
          this.#opts.log.error({ err: restartErr }, 'rule stage: restart failed; trying again')
          await this.#halt()
        }
      }
    })
  }
}

function outcomeHeaders(id: string): MsgHdrs {
  const h = headers()
  h.set('Nats-Msg-Id', id)
  return h
}

/** A batch job's record: history, whose decisions no one waits on one by one. A message holds records of one job or of none. */
const ofBatchJob = (decision: Decision) => decision.job_id !== undefined

/**
 * A decision as SLUICE_DECISIONS stores it. A batch job's leaves out its evaluations, whose counts its batch
 * carries: they were most of its bytes, and made storing a million-record job's decisions cost more than
 * deciding them (docs/performance.md).
 */
function decisionJson(decision: Decision): string {
  if (!ofBatchJob(decision)) return JSON.stringify(decision)
  const { evaluations: _counted, ...stored } = decision
  return JSON.stringify(stored)
}

/** One record's outcome before it is stored: its decision (and that as JSON), and its alerts being published. */
interface Evaluated {
  decision: Decision
  json: string
  alerts: Promise<unknown>[]
}

interface RunnerDeps {
  /** Evaluates a message's records and starts publishing their alerts; `poison` for a message that holds none. */
  evaluate: (msg: JsMsg) => Evaluated[] | 'poison'
  /** Stores a batch's decisions; resolves once they and the batch's alerts are stored. */
  publish: (batch: readonly Evaluated[]) => Promise<void>
  onFailure: (err: unknown) => void
  /** Records evaluated and not yet stored, at most; the runner waits before taking more. */
  maxInFlight: number
  /**
   * Lets the event loop run between messages: a batch job's runners, whose messages are already at hand, would
   * otherwise evaluate them all before a real-time record that arrived meanwhile is even read off the socket.
   */
  yieldEachMessage: boolean
}

/**
 * Messages a partition's consumer asks JetStream for at a time. Sixteen partitions of a batch job's messages
 * (at most 32 KB each) then hold at most 16 MB. With the sink's pulls and a state rebuild's, what one process
 * asks for stays well within what NATS lets a connection have pending (64 MB; past it the server drops the
 * connection as a slow consumer, which a rebuild under a batch job did when it pulled 2,000 messages).
 */
const RULE_PULL_MESSAGES = 32

interface OpenBatch {
  evaluated: Evaluated[]
  messages: JsMsg[]
}

/**
 * One partition's consumer: messages are evaluated one after another in stream order, and the decisions made
 * together (one event-loop turn, at most MAX_BATCH_DECISIONS) are stored as one batch without waiting. A batch
 * is acked through the last message it finished (the consumer acks all before it) once it and every earlier
 * batch are stored. After a failure nothing more is acked: every later message is nak'd.
 */
class PartitionRunner {
  readonly #consumer: Consumer
  readonly #deps: RunnerDeps
  #messages?: ConsumerMessages
  #loop?: Promise<void>
  #settled: Promise<void> = Promise.resolve()
  #open?: OpenBatch
  #failed = false
  /** Decisions evaluated and not yet stored. */
  #unsettled = 0

  constructor(consumer: Consumer, deps: RunnerDeps) {
    this.#consumer = consumer
    this.#deps = deps
  }

  async start(): Promise<void> {
    this.#messages = await this.#consumer.consume({ max_messages: RULE_PULL_MESSAGES })
    this.#loop = this.#consume(this.#messages)
  }

  async #consume(messages: ConsumerMessages): Promise<void> {
    for await (const msg of messages) {
      if (this.#deps.yieldEachMessage) await nextTurn()
      if (this.#failed) {
        msg.nak()
        continue
      }
      if (this.#unsettled >= this.#deps.maxInFlight) {
        this.#close()
        await this.#settled
      }
      let evaluated: Evaluated[] | 'poison'
      try {
        evaluated = this.#deps.evaluate(msg)
      } catch (err) {
        this.#fail(err, [msg])
        continue
      }
      if (evaluated === 'poison') {
        msg.term('undecodable envelope')
        continue
      }
      this.#unsettled += evaluated.length
      if (ofBatchJob(evaluated[0].decision)) {
        this.#closeJobMessage(msg, evaluated)
        continue
      }
      for (const [i, e] of evaluated.entries()) {
        if (!this.#open) {
          this.#open = { evaluated: [], messages: [] }
          setImmediate(() => this.#close())
        }
        this.#open.evaluated.push(e)
        // A message is finished with the batch that holds its last record's decision: that batch acks it.
        if (i === evaluated.length - 1) this.#open.messages.push(msg)
        if (this.#open.evaluated.length >= MAX_BATCH_DECISIONS) this.#close()
      }
    }
    this.#close()
  }

  /**
   * A batch job's message: its decisions go out in batches of their own, MAX_BATCH_DECISIONS of its records
   * each, so that evaluating the message again makes the same batches, stored (with their counts) once.
   */
  #closeJobMessage(msg: JsMsg, evaluated: Evaluated[]): void {
    this.#close()
    for (let from = 0; from < evaluated.length; from += MAX_BATCH_DECISIONS) {
      const to = from + MAX_BATCH_DECISIONS
      this.#open = { evaluated: evaluated.slice(from, to), messages: to >= evaluated.length ? [msg] : [] }
      this.#close()
    }
  }

  /** Sends the open batch on its way; it is acked after every earlier batch. */
  #close(): void {
    const batch = this.#open
    if (!batch || batch.evaluated.length === 0) return
    this.#open = undefined
    const stored = this.#deps.publish(batch.evaluated)
    // The evaluations are not kept until the batch is stored (see #publishBatch): only their count and messages.
    const { messages } = batch
    const records = batch.evaluated.length
    this.#settled = Promise.all([this.#settled, stored]).then(
      () => {
        this.#unsettled -= records
        if (messages.length === 0) return
        if (this.#failed) for (const msg of messages) msg.nak()
        else messages[messages.length - 1].ack()
      },
      (err) => this.#fail(err, messages),
    )
  }

  #fail(err: unknown, messages: readonly JsMsg[]): void {
    for (const msg of messages) msg.nak()
    if (this.#failed) return
    this.#failed = true
    this.#deps.onFailure(err)
  }

  /** Stops taking messages and waits until what it took is acked (or nak'd). */
  async stop(): Promise<void> {
    await this.#messages?.close()
    await this.#loop
    this.#close()
    await this.#settled
  }
}

import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream'
import { type RecordMessage, readRecordMessage } from '../pipeline/envelope.ts'
import { readDecisionBatch } from '../pipeline/sink/rule-outcome-sink.ts'
import { EVERY_RULE_CONSUMER, STREAMS, SUBJECTS } from '../pipeline/streams.ts'
import {
  type AnalyticsStore,
  type Decision,
  type DecisionBatch,
  type DecisionName,
  type EnvelopeRow,
  type RuleOutcomeStore,
  recordSeq,
  type SchemaRegistry,
} from '../storage/index.ts'
import type { CompiledRuleSet } from './rule-set.ts'
import { alertsOf, RuleState, type StateOptions } from './rule-state.ts'
import { readStream, rebuildState, type StreamPosition, stageRecordsOf } from './stream-reader.ts'

/** How one rule did over a replay. */
export interface RuleTally {
  rule_id: string
  object: string
  hits: number
  shadow_hits: number
  errors: number
}

/** One rule set's results over a replay. */
export interface ReplayResult {
  rule_set_version: number
  decisions: Record<DecisionName, number>
  rules: RuleTally[]
}

/** A rule whose live hits differ between the replayed rule set and the live one. */
export interface RuleDifference {
  rule_id: string
  object: string
  replayed_hits: number
  live_hits: number
  /** Records the replayed set's rule hit and the live set's did not, and the other way round. */
  only_replayed: number
  only_live: number
}

export interface ReplayReport {
  replay_id: string
  /** Records evaluated (of `object`, when given); records before `from` only warmed the state. */
  records: number
  first_seq: number | null
  last_seq: number | null
  replayed: ReplayResult
  live: ReplayResult
  differences: RuleDifference[]
  /** Records whose decision differs between the two sets. */
  changed_decisions: number
  /** Alerts published under `replay.alerts.>` (with `publish`). */
  published: number
}

export interface ReplayOptions {
  js: JetStreamClient
  jsm: JetStreamManager
  registry: SchemaRegistry
  /** The first record evaluated: a stream sequence or an arrival time. */
  from: { seq: number } | { time: number }
  /** The last record evaluated (default: the newest when the replay starts). */
  to?: { seq: number } | { time: number }
  /** Evaluate only records of this object; the others still feed lookups and windows. */
  object?: string
  replayed: CompiledRuleSet
  live: CompiledRuleSet
  state: StateOptions
  replayId: string
  /** Publish the replayed set's alerts under `replay.alerts.<object>.<rule_id>`; live alerts are never touched. */
  publish?: boolean
}

class Tally {
  readonly decisions: Record<DecisionName, number> = { approve: 0, review: 0, block: 0 }
  readonly #rules = new Map<string, RuleTally>()

  constructor(readonly ruleSetVersion: number) {}

  add(d: Decision): void {
    this.decisions[d.decision]++
    for (const e of d.evaluations) {
      let t = this.#rules.get(e.rule_id)
      if (!t) this.#rules.set(e.rule_id, (t = { rule_id: e.rule_id, object: d.object, hits: 0, shadow_hits: 0, errors: 0 }))
      if (e.outcome === 'hit') t.hits++
      else if (e.outcome === 'shadow_hit') t.shadow_hits++
      else if (e.outcome === 'error') t.errors++
    }
  }

  result(): ReplayResult {
    return {
      rule_set_version: this.ruleSetVersion,
      decisions: this.decisions,
      rules: [...this.#rules.values()].sort((a, b) => a.rule_id.localeCompare(b.rule_id)),
    }
  }
}

/** The first stream sequence at or after `from` (undefined when the stream holds nothing there). */
async function firstSeqFrom(js: JetStreamClient, from: StreamPosition): Promise<number | undefined> {
  let first: number | undefined
  await readStream(js, {
    filter: STREAMS.records.subjects[0],
    from,
    onMessage: (msg) => {
      first = msg.seq
      return 'stop'
    },
  })
  return first
}

/**
 * Backtests a rule set over history: rebuilds the state as it was just before `from` (as the live stage
 * would after a restart there), then evaluates each record from `from` to `to` with both the replayed and the
 * live rule set, and reports hits per rule, decisions, and where the two differ. Nothing is acked, no decision
 * is published, and live alerts are never raised.
 */
export async function replayRules(opts: ReplayOptions): Promise<ReplayReport> {
  const report: ReplayReport = {
    replay_id: opts.replayId,
    records: 0,
    first_seq: null,
    last_seq: null,
    replayed: new Tally(opts.replayed.version).result(),
    live: new Tally(opts.live.version).result(),
    differences: [],
    changed_decisions: 0,
    published: 0,
  }
  const fromSeq = await firstSeqFrom(opts.js, opts.from)
  if (fromSeq === undefined) return report
  const state = new RuleState([...opts.replayed.allFeatures(), ...opts.live.allFeatures()], opts.state)
  const before = new Map(EVERY_RULE_CONSUMER.map((durable) => [durable, fromSeq - 1]))
  await rebuildState(opts.js, opts.jsm, { registry: opts.registry, state, lastSeq: before, lateMs: opts.state.lateMs })
  const replayed = new Tally(opts.replayed.version)
  const live = new Tally(opts.live.version)
  const differences = new Map<string, RuleDifference>()
  const publishing: Promise<unknown>[] = []
  await readStream(opts.js, {
    filter: STREAMS.records.subjects[0],
    from: { seq: fromSeq },
    untilSeq: opts.to && 'seq' in opts.to ? opts.to.seq : undefined,
    onMessage: (msg) => {
      if (opts.to && 'time' in opts.to && msg.info.timestampNanos / 1_000_000 > opts.to.time) return 'stop'
      for (const item of stageRecordsOf(msg, opts.registry)) {
        if (opts.object && item.env.object !== opts.object) {
          state.absorb(item)
          continue
        }
        const [mine, theirs] = state.evaluate([opts.replayed, opts.live], item)
        report.records++
        report.first_seq ??= msg.seq
        report.last_seq = msg.seq
        replayed.add(mine)
        live.add(theirs)
        if (mine.decision !== theirs.decision) report.changed_decisions++
        compareHits(mine, theirs, differences)
        if (opts.publish) {
          for (const alert of alertsOf(mine, opts.replayId)) {
            publishing.push(
              opts.js.publish(SUBJECTS.replayAlert(alert.object, alert.rule_id), JSON.stringify(alert), { msgID: `${opts.replayId}:${alert.alert_id}` }),
            )
          }
        }
      }
    },
  })
  await Promise.all(publishing)
  return {
    ...report,
    replayed: replayed.result(),
    live: live.result(),
    differences: [...differences.values()].filter((d) => d.only_live + d.only_replayed > 0).sort((a, b) => a.rule_id.localeCompare(b.rule_id)),
    published: publishing.length,
  }
}

function compareHits(mine: Decision, theirs: Decision, differences: Map<string, RuleDifference>): void {
  const mineHits = new Set(mine.fired.map((h) => h.rule_id))
  const theirHits = new Set(theirs.fired.map((h) => h.rule_id))
  const entry = (ruleId: string) => {
    let d = differences.get(ruleId)
    if (!d) differences.set(ruleId, (d = { rule_id: ruleId, object: mine.object, replayed_hits: 0, live_hits: 0, only_replayed: 0, only_live: 0 }))
    return d
  }
  for (const id of mineHits) {
    entry(id).replayed_hits++
    if (!theirHits.has(id)) entry(id).only_replayed++
  }
  for (const id of theirHits) {
    entry(id).live_hits++
    if (!mineHits.has(id)) entry(id).only_live++
  }
}

/**
 * Writes everything the streams hold into fresh analytics stores: every record of SLUICE_RECORDS (tables
 * brought through each schema version in turn, so columns of removed fields come back too) and every decision
 * of SLUICE_DECISIONS. Returns how many of each were written.
 */
export async function rebuildAnalytics(
  js: JetStreamClient,
  opts: { registry: SchemaRegistry; analytics: AnalyticsStore; outcomes: RuleOutcomeStore; batchSize: number },
): Promise<{ records: number; decisions: number }> {
  for (const object of opts.registry.objects()) for (const version of opts.registry.versions(object)) await opts.analytics.ensureTable(version.schema)
  let records = 0
  let pending = new Map<string, EnvelopeRow[]>()
  let held = 0
  const flushRecords = async () => {
    for (const [object, rows] of pending) records += await opts.analytics.append(object, rows)
    pending = new Map()
    held = 0
  }
  await readStream(js, {
    filter: STREAMS.records.subjects[0],
    from: 'first',
    onMessage: async (msg) => {
      let read: RecordMessage
      try {
        read = readRecordMessage(msg)
      } catch {
        return
      }
      if (!opts.analytics.hasTable(read.object)) return
      let rows = pending.get(read.object)
      if (!rows) pending.set(read.object, (rows = []))
      rows.push({ seq: recordSeq(msg.seq), envelopes: read.envelopes })
      held += read.count
      if (held >= opts.batchSize) await flushRecords()
    },
  })
  await flushRecords()
  let decisions = 0
  let batches: DecisionBatch[] = []
  let batchDecisions = 0
  await readStream(js, {
    stream: STREAMS.decisions.name,
    filter: STREAMS.decisions.subjects[0],
    from: 'first',
    onMessage: async (msg) => {
      const batch = readDecisionBatch(msg)
      batches.push(batch)
      batchDecisions += batch.decisions.length
      if (batchDecisions < opts.batchSize) return
      decisions += await opts.outcomes.append(batches)
      batches = []
      batchDecisions = 0
    },
  })
  decisions += await opts.outcomes.append(batches)
  return { records, decisions }
}

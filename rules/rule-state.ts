import type { Envelope } from '../pipeline/envelope.ts'
import type { Alert, Decision, SchemaRegistry } from '../storage/index.ts'
import { evaluateRules } from './engine.ts'
import type { ExpressionContext } from './expressions.ts'
import { type FeatureDefinition, FeatureWindows } from './features.ts'
import { ACCOUNT_KEY, ACCOUNT_OBJECT, AccountLookups } from './lookups.ts'
import type { CompiledRuleSet } from './rule-set.ts'

/** How far back lookups and windows reach, and how late a record may arrive and still find them complete. */
export interface StateOptions {
  activityWindowMs: number
  lateMs: number
}

/** A record as the rule stage handles it: the envelope, its record sequence (recordSeq), and its own time (epoch ms). */
export interface StageRecord {
  env: Envelope
  seq: number
  time: number
}

/** The record's own time (its schema's time_field), or when Sluice received it if it has none. */
export function recordTime(env: Envelope, registry: SchemaRegistry): number {
  const field = registry.current(env.object)?.schema.time_field
  const value = field ? env.record[field] : undefined
  const time = typeof value === 'string' ? Date.parse(value) : Number.NaN
  return Number.isNaN(time) ? env.received_at : time
}

/**
 * Everything a rule worker remembers about the records of the partitions it owns: account lookups and
 * velocity windows. Every record of one account lands in one partition, so whatever is keyed by account is
 * complete in the worker that owns its partition (docs/rules.md, Partitioning).
 */
export class RuleState {
  readonly #lookups: AccountLookups
  readonly #windows: FeatureWindows

  constructor(features: readonly FeatureDefinition[], opts: StateOptions) {
    this.#lookups = new AccountLookups(opts.activityWindowMs, opts.lateMs)
    this.#windows = new FeatureWindows(features, opts.lateMs)
  }

  /** How far back in record time a rebuild must read `object`: Infinity for accounts (the latest one counts, however old). */
  spanOf(object: string): number {
    if (object === ACCOUNT_OBJECT) return Number.POSITIVE_INFINITY
    return Math.max(this.#windows.spanOf(object), this.#lookups.spanOf(object))
  }

  /** Takes in a record without evaluating it (a rebuild from the stream). */
  absorb({ env, seq, time }: StageRecord): void {
    this.#windows.add(env.object, env.record, time, seq)
    this.#lookups.add(env.object, env.record, time, seq)
  }

  /**
   * Takes in a record and returns what each rule set's expressions see (a backtest compares two sets).
   * Windows take the record first (a window includes its own record), lookups after (they describe what came
   * before it). The contexts are only valid until the next record: activity entries are reused.
   */
  admit(ruleSets: readonly CompiledRuleSet[], { env, seq, time }: StageRecord): ExpressionContext[] {
    const { object, record } = env
    this.#windows.add(object, record, time, seq)
    const accountId = record[ACCOUNT_KEY]
    const account = this.#lookups.account(accountId)
    const activity = this.#lookups.activity(accountId, time)
    const contexts = ruleSets.map((ruleSet) => ({
      record,
      account,
      activity,
      features: this.#windows.compute(ruleSet.featuresFor(object), record, object, time, seq),
    }))
    this.#lookups.add(object, record, time, seq)
    return contexts
  }

  /** Takes in a record and evaluates each rule set on it. */
  evaluate(ruleSets: readonly CompiledRuleSet[], item: StageRecord, now = Date.now()): Decision[] {
    const { env, seq, time } = item
    const accountId = env.record[ACCOUNT_KEY]
    return this.admit(ruleSets, item).map(
      (context, i): Decision => ({
        record_id: env.record_id,
        record_seq: seq,
        object: env.object,
        account_id: typeof accountId === 'string' ? accountId : null,
        ...evaluateRules(ruleSets[i], env.object, context),
        evaluate_rules: env.evaluate_rules !== false,
        ...(env.job_id && { job_id: env.job_id }),
        record_time: new Date(time).toISOString(),
        received_at: new Date(env.received_at).toISOString(),
        evaluated_at: new Date(now).toISOString(),
      }),
    )
  }
}

/** The alerts a decision raises: one per live hit, none for a historical backfill. */
export function alertsOf(decision: Decision, replayId?: string): Alert[] {
  if (!decision.evaluate_rules) return []
  return decision.fired.map((hit) => ({
    alert_id: `${decision.record_id}:${hit.rule_id}`,
    record_id: decision.record_id,
    record_seq: decision.record_seq,
    object: decision.object,
    account_id: decision.account_id,
    rule_id: hit.rule_id,
    rule_version: hit.rule_version,
    rule_name: hit.name,
    score: hit.score,
    severity: hit.severity,
    tags: hit.tags,
    decision: decision.decision,
    total_score: decision.score,
    features: hit.features,
    record_time: decision.record_time,
    evaluated_at: decision.evaluated_at,
    rule_set_version: decision.rule_set_version,
    ...(replayId && { replay_id: replayId }),
  }))
}

/** A record given without an envelope (fixtures, `sluice rules test`). */
export interface PlainRecord {
  object: string
  record: Record<string, unknown>
}

/**
 * Evaluates records one after another as the stage would, without NATS: each record's decision, with the
 * state built from the records before it. What `sluice rules test` and the rule fixture cases run.
 */
export function evaluateRecords(ruleSet: CompiledRuleSet, registry: SchemaRegistry, records: readonly PlainRecord[], opts: StateOptions): Decision[] {
  const state = new RuleState(ruleSet.allFeatures(), opts)
  const now = Date.now()
  return records.map(({ object, record }, i) => {
    const env: Envelope = {
      record_id: `record-${i + 1}`,
      object,
      received_at: now,
      source: 'test',
      schema_version: registry.current(object)?.version ?? 0,
      record,
    }
    const [decision] = state.evaluate([ruleSet], { env, seq: i + 1, time: recordTime(env, registry) }, now)
    return decision
  })
}

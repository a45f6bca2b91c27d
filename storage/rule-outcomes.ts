import { setImmediate as nextTurn } from 'node:timers/promises'
import { type DuckDBAppender, type DuckDBConnection, DuckDBTimestampValue, LIST, VARCHAR } from '@duckdb/node-api'
import type { AnalyticsStore } from './analytics.ts'

export type DecisionName = 'approve' | 'review' | 'block'

/** A rule that matched a record, with the feature values its expression read. */
export interface RuleHit {
  rule_id: string
  rule_version: number
  name: string
  /** `shadow` hits add no score and raise no alert. */
  mode: 'live' | 'shadow'
  score: number
  severity: string
  tags: string[]
  /** The velocity features the rule's expression reads, with their values for this record. */
  features: Record<string, number>
}

/** A rule whose expression failed at run time on this record: an outcome, not a crash. */
export interface RuleFailure {
  rule_id: string
  rule_version: number
  message: string
}

/** What one rule did with one record, and how long its expression took. */
export interface RuleEvaluation {
  rule_id: string
  rule_version: number
  outcome: 'hit' | 'shadow_hit' | 'miss' | 'error'
  micros: number
}

/** The rule stage's answer for one record, published on `sluice.decisions.<object>.<record_id>` (docs/rules.md). */
export interface Decision {
  record_id: string
  /** The record's sequence in SLUICE_RECORDS. */
  record_seq: number
  object: string
  account_id: string | null
  decision: DecisionName
  score: number
  /** Tags of every live rule that matched. */
  tags: string[]
  /** Live rules that matched, in evaluation order. */
  fired: RuleHit[]
  shadow_hits: RuleHit[]
  errors: RuleFailure[]
  /** The `stop` rule that ended evaluation, if one did. */
  stopped_by: string | null
  /** Every rule run on the record, with its outcome and time (not in the stored copy of a batch job's decision: DecisionBatch). */
  evaluations: RuleEvaluation[]
  rule_set_version: number
  /** false for a historical backfill: the outcome is recorded, no alert is raised. */
  evaluate_rules: boolean
  /** The batch job that carried the record, if one did: how a job's progress counts the records decided. */
  job_id?: string
  /** The record's own time (its schema's time_field), ISO 8601. */
  record_time: string
  received_at: string
  evaluated_at: string
}

/** One live rule hit, published on `alerts.<object>.<rule_id>` (docs/rules.md has the schema). */
export interface Alert {
  /** `<record_id>:<rule_id>`: also the JetStream message id, so a re-evaluation never alerts twice. */
  alert_id: string
  record_id: string
  record_seq: number
  object: string
  account_id: string | null
  rule_id: string
  rule_version: number
  rule_name: string
  score: number
  severity: string
  tags: string[]
  /** The record's decision, and the total score it came from. */
  decision: DecisionName
  total_score: number
  features: Record<string, number>
  record_time: string
  evaluated_at: string
  rule_set_version: number
  /** Set on alerts a `sluice replay --publish` raised, which go to `replay.alerts.>` instead. */
  replay_id?: string
}

/** Per-rule counters over a period: what the dashboard shows beside each rule. */
export interface RuleCounters {
  rule_id: string
  evaluations: number
  hits: number
  shadow_hits: number
  errors: number
  /** Mean and largest time of one evaluation of the rule's expression, microseconds. */
  mean_micros: number | null
  max_micros: number | null
}

export interface RuleStats {
  since: string
  decisions: Record<DecisionName, number>
  rules: RuleCounters[]
}

export interface AlertQuery {
  object?: string
  rule_id?: string
  /** Only the hits on this record. */
  record_id?: string
  /** `live` (default) or `shadow` hits. */
  mode?: 'live' | 'shadow'
  limit: number
  /** Only alerts stored before this cursor. */
  before?: number
}

export interface StoredAlert extends Omit<Alert, 'alert_id' | 'decision' | 'total_score' | 'rule_set_version' | 'rule_name' | 'replay_id'> {
  mode: 'live' | 'shadow'
  decision: DecisionName
}

export interface AlertPage {
  alerts: StoredAlert[]
  next_cursor?: string
}

/** The rule stage's decision on one record as the analytics store keeps it (`GET /decisions/:record_id`). */
export interface StoredDecision extends Omit<Decision, 'fired' | 'shadow_hits' | 'errors' | 'evaluations'> {
  /** Ids of the live rules that matched, in evaluation order. */
  fired: string[]
  /** Ids of the shadow rules that matched: no score, no alert. */
  shadow_hits: string[]
  /** From the record's receipt to its decision, milliseconds. */
  latency_ms: number
}

const TABLES = [
  `CREATE TABLE IF NOT EXISTS rule_decisions (
     _seq BIGINT NOT NULL, record_id VARCHAR NOT NULL, record_seq BIGINT NOT NULL, object VARCHAR NOT NULL, account_id VARCHAR,
     decision VARCHAR NOT NULL, score DOUBLE NOT NULL, tags VARCHAR[] NOT NULL, fired VARCHAR[] NOT NULL, stopped_by VARCHAR,
     rule_set_version INTEGER NOT NULL, evaluate_rules BOOLEAN NOT NULL,
     record_time TIMESTAMP NOT NULL, received_at TIMESTAMP NOT NULL, evaluated_at TIMESTAMP NOT NULL, job_id VARCHAR)`,
  // Added after the first release: a file made before has no such column yet.
  'ALTER TABLE rule_decisions ADD COLUMN IF NOT EXISTS job_id VARCHAR',
  // Most decisions have no tags and no hits: the appender writes the default for those, where a list value costs
  // a native type and value made per row (for files made before, the defaults are set here). A cast, not `[]`:
  // DuckDB cannot replay an ALTER to a list literal from its WAL, and the file would not open after a crash.
  "ALTER TABLE rule_decisions ALTER COLUMN tags SET DEFAULT CAST('[]' AS VARCHAR[])",
  "ALTER TABLE rule_decisions ALTER COLUMN fired SET DEFAULT CAST('[]' AS VARCHAR[])",
  `CREATE TABLE IF NOT EXISTS rule_alerts (
     _seq BIGINT NOT NULL, record_id VARCHAR NOT NULL, record_seq BIGINT NOT NULL, object VARCHAR NOT NULL, account_id VARCHAR,
     rule_id VARCHAR NOT NULL, rule_version INTEGER NOT NULL, mode VARCHAR NOT NULL, score DOUBLE NOT NULL, severity VARCHAR NOT NULL,
     tags VARCHAR[] NOT NULL, decision VARCHAR NOT NULL, features VARCHAR NOT NULL, record_time TIMESTAMP NOT NULL, evaluated_at TIMESTAMP NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS rule_counters (
     minute TIMESTAMP NOT NULL, rule_id VARCHAR NOT NULL, rule_version INTEGER NOT NULL,
     evaluations BIGINT NOT NULL, hits BIGINT NOT NULL, shadow_hits BIGINT NOT NULL, errors BIGINT NOT NULL,
     micros_total DOUBLE NOT NULL, micros_max DOUBLE NOT NULL,
     PRIMARY KEY (minute, rule_id, rule_version))`,
]

const STRING_LIST = LIST(VARCHAR)
/** Items appended between turns of the event loop (#append): about 2.5 ms of appender calls. */
const APPEND_ITEMS_PER_TURN = 500
const tsValue = (iso: string) => new DuckDBTimestampValue(BigInt(Date.parse(iso)) * 1000n)
const MINUTE_MS = 60_000

/** One rule version's counts over one minute: a row of rule_counters. */
export interface RuleCounterRow {
  /** The minute's start, epoch ms. */
  minute: number
  rule_id: string
  rule_version: number
  evaluations: number
  hits: number
  shadow_hits: number
  errors: number
  micros_total: number
  micros_max: number
}

/**
 * Adds up evaluations per minute and rule version, the grain rule_counters keeps. Rows are found through maps
 * by minute and rule id rather than a key string made per evaluation (eleven a decision).
 */
export class CounterTally {
  readonly #rows: RuleCounterRow[] = []
  readonly #byMinute = new Map<number, Map<string, RuleCounterRow[]>>()
  #evaluatedAt?: string
  #minute = 0

  addDecision(d: DecisionAsStored): void {
    if (!d.evaluations) return
    // Decisions made together share their time: parse it once.
    if (d.evaluated_at !== this.#evaluatedAt) {
      this.#evaluatedAt = d.evaluated_at
      this.#minute = Math.floor(Date.parse(d.evaluated_at) / MINUTE_MS) * MINUTE_MS
    }
    for (const e of d.evaluations) {
      const row = this.#row(this.#minute, e.rule_id, e.rule_version)
      row.evaluations++
      if (e.outcome === 'hit') row.hits++
      else if (e.outcome === 'shadow_hit') row.shadow_hits++
      else if (e.outcome === 'error') row.errors++
      row.micros_total += e.micros
      row.micros_max = Math.max(row.micros_max, e.micros)
    }
  }

  addRow(r: RuleCounterRow): void {
    const row = this.#row(r.minute, r.rule_id, r.rule_version)
    row.evaluations += r.evaluations
    row.hits += r.hits
    row.shadow_hits += r.shadow_hits
    row.errors += r.errors
    row.micros_total += r.micros_total
    row.micros_max = Math.max(row.micros_max, r.micros_max)
  }

  rows(): RuleCounterRow[] {
    return this.#rows
  }

  #row(minute: number, ruleId: string, ruleVersion: number): RuleCounterRow {
    let byRule = this.#byMinute.get(minute)
    if (!byRule) this.#byMinute.set(minute, (byRule = new Map()))
    let versions = byRule.get(ruleId)
    if (!versions) byRule.set(ruleId, (versions = []))
    let row = versions.find((r) => r.rule_version === ruleVersion)
    if (!row) {
      row = { minute, rule_id: ruleId, rule_version: ruleVersion, evaluations: 0, hits: 0, shadow_hits: 0, errors: 0, micros_total: 0, micros_max: 0 }
      versions.push(row)
      this.#rows.push(row)
    }
    return row
  }
}

/** A decision as SLUICE_DECISIONS holds it: a batch job's leaves out its evaluations. */
export type DecisionAsStored = Omit<Decision, 'evaluations'> & Partial<Pick<Decision, 'evaluations'>>

/** The decisions of one SLUICE_DECISIONS message. */
export interface DecisionBatch {
  decisions: DecisionAsStored[]
  /**
   * The counts of a batch whose decisions carry no `evaluations` (a batch job's). Such a batch always holds the
   * same records (docs/rules.md), so it is either new as a whole or stored before, and its counts go in once.
   */
  counters?: RuleCounterRow[]
}

/** A VARCHAR[] value; an empty one as the column's default (`[]`). */
function appendStrings(appender: DuckDBAppender, values: string[]): void {
  if (values.length === 0) appender.appendDefault()
  else appender.appendList(values, STRING_LIST)
}

function appendNullable(appender: DuckDBAppender, value: string | null): void {
  if (value === null) appender.appendNull()
  else appender.appendVarchar(value)
}

/** The columns both rule_decisions and rule_alerts start with: which decision, on which record. */
function appendRecordColumns(appender: DuckDBAppender, seq: number, d: DecisionAsStored): void {
  appender.appendBigInt(BigInt(seq))
  appender.appendVarchar(d.record_id)
  appender.appendBigInt(BigInt(d.record_seq))
  appender.appendVarchar(d.object)
  appendNullable(appender, d.account_id)
}

/** The record columns appendRecordColumns wrote, read back from a row of either table. */
function recordColumnsOf(row: Record<string, unknown>): Pick<Decision, 'record_id' | 'record_seq' | 'object' | 'account_id'> {
  return {
    record_id: row.record_id as string,
    record_seq: Number(row.record_seq),
    object: row.object as string,
    account_id: row.account_id as string | null,
  }
}

/**
 * Decisions, alerts (live and shadow hits) and per-rule counters in the analytics DuckDB file, for the
 * dashboard. It has its own connections to the file the sink role owns: one writes, one answers queries, so a
 * query never lands inside a write's transaction. Appending skips records it already holds a decision on
 * (also twice in one batch), and writes each batch in one transaction, so a redelivered or re-evaluated
 * batch neither duplicates a row nor counts twice.
 */
export class RuleOutcomeStore {
  readonly #write: DuckDBConnection
  readonly #read: DuckDBConnection

  private constructor(write: DuckDBConnection, read: DuckDBConnection) {
    this.#write = write
    this.#read = read
  }

  static async open(analytics: AnalyticsStore): Promise<RuleOutcomeStore> {
    const write = await analytics.connect()
    for (const sql of TABLES) await write.run(sql)
    return new RuleOutcomeStore(write, await analytics.connect())
  }

  /**
   * Stores the decisions of some decision batches; returns how many were new. A record has one decision, so its sequence in
   * SLUICE_RECORDS is the rows' `_seq`: what recognises a decision stored before and orders them.
   */
  async append(batches: readonly DecisionBatch[]): Promise<number> {
    const seqs = batches.flatMap((b) => b.decisions.map((d) => d.record_seq))
    if (seqs.length === 0) return 0
    // Only these records' decisions: partitions progress apart, so the range of a batch job's write held some
    // fifteen times as many decisions stored before (3 million rows read back for a 200,000-record job).
    const seen = await this.#write.runAndReadAll(
      'SELECT _seq FROM rule_decisions WHERE _seq BETWEEN ? AND ? AND _seq IN (SELECT unnest(CAST(? AS BIGINT[])))',
      [Math.min(...seqs), Math.max(...seqs), `[${seqs.join(',')}]`],
    )
    const stored = new Set((seen.getColumnsJS()[0] ?? []).map(Number))
    const fresh: { seq: number; decision: DecisionAsStored }[] = []
    const tally = new CounterTally()
    for (const batch of batches) {
      let batchIsNew = true
      for (const decision of batch.decisions) {
        // A record evaluated again (after a rule stage restart) can come twice in one write: keep the first.
        if (stored.has(decision.record_seq)) {
          batchIsNew = false
          continue
        }
        stored.add(decision.record_seq)
        fresh.push({ seq: decision.record_seq, decision })
        tally.addDecision(decision)
      }
      if (batchIsNew) for (const row of batch.counters ?? []) tally.addRow(row)
    }
    if (fresh.length === 0) return 0
    await this.#write.run('BEGIN TRANSACTION')
    try {
      await this.#appendDecisions(fresh)
      await this.#appendAlerts(fresh)
      await this.#addCounters(tally.rows())
      await this.#write.run('COMMIT')
    } catch (err) {
      await this.#write.run('ROLLBACK')
      throw err
    }
    return fresh.length
  }

  /**
   * Appends the rows of `items` through a fresh appender (one opened before a schema change would fail). Each
   * value is a call on the event loop, so the rows go in slices with a turn of the event loop between them: a
   * batch job's write of 8,000 decisions held it for some 40 ms at once, with real-time requests waiting.
   */
  async #append<T>(table: string, items: readonly T[], writeItem: (appender: DuckDBAppender, item: T) => void): Promise<void> {
    const appender = await this.#write.createAppender(table)
    try {
      for (let i = 0; i < items.length; i++) {
        if (i > 0 && i % APPEND_ITEMS_PER_TURN === 0) await nextTurn()
        writeItem(appender, items[i])
      }
      appender.flushSync()
    } finally {
      appender.closeSync()
    }
  }

  #appendDecisions(batch: { seq: number; decision: DecisionAsStored }[]): Promise<void> {
    return this.#append('rule_decisions', batch, (appender, { seq, decision: d }) => {
      appendRecordColumns(appender, seq, d)
      appender.appendVarchar(d.decision)
      appender.appendDouble(d.score)
      appendStrings(appender, d.tags)
      appendStrings(
        appender,
        d.fired.map((h) => h.rule_id),
      )
      appendNullable(appender, d.stopped_by)
      appender.appendInteger(d.rule_set_version)
      appender.appendBoolean(d.evaluate_rules)
      appender.appendTimestamp(tsValue(d.record_time))
      appender.appendTimestamp(tsValue(d.received_at))
      appender.appendTimestamp(tsValue(d.evaluated_at))
      appendNullable(appender, d.job_id ?? null)
      appender.endRow()
    })
  }

  #appendAlerts(batch: { seq: number; decision: DecisionAsStored }[]): Promise<void> {
    return this.#append('rule_alerts', batch, (appender, { seq, decision: d }) => {
      for (const hit of [...d.fired, ...d.shadow_hits]) {
        appendRecordColumns(appender, seq, d)
        appender.appendVarchar(hit.rule_id)
        appender.appendInteger(hit.rule_version)
        appender.appendVarchar(hit.mode)
        appender.appendDouble(hit.score)
        appender.appendVarchar(hit.severity)
        appender.appendList(hit.tags, STRING_LIST)
        appender.appendVarchar(d.decision)
        appender.appendVarchar(JSON.stringify(hit.features))
        appender.appendTimestamp(tsValue(d.record_time))
        appender.appendTimestamp(tsValue(d.evaluated_at))
        appender.endRow()
      }
    })
  }

  async #addCounters(rows: RuleCounterRow[]): Promise<void> {
    if (rows.length === 0) return
    const params = rows.flatMap((r) => [
      new DuckDBTimestampValue(BigInt(r.minute) * 1000n),
      r.rule_id,
      r.rule_version,
      r.evaluations,
      r.hits,
      r.shadow_hits,
      r.errors,
      r.micros_total,
      r.micros_max,
    ])
    await this.#write.run(
      `INSERT INTO rule_counters VALUES ${rows.map(() => '(?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}
       ON CONFLICT (minute, rule_id, rule_version) DO UPDATE SET
         evaluations = rule_counters.evaluations + excluded.evaluations, hits = rule_counters.hits + excluded.hits,
         shadow_hits = rule_counters.shadow_hits + excluded.shadow_hits, errors = rule_counters.errors + excluded.errors,
         micros_total = rule_counters.micros_total + excluded.micros_total, micros_max = greatest(rule_counters.micros_max, excluded.micros_max)`,
      params,
    )
  }

  /** How many records of a batch job have a decision: the job's evaluated count. */
  async jobEvaluatedCount(jobId: string): Promise<number> {
    const res = await this.#read.runAndReadAll('SELECT count(*) AS n FROM rule_decisions WHERE job_id = ?', [jobId])
    return Number(res.getRowObjectsJS()[0].n)
  }

  /** Decision counts and per-rule counters since `sinceMs` (epoch ms). */
  async stats(sinceMs: number): Promise<RuleStats> {
    const since = new DuckDBTimestampValue(BigInt(Math.floor(sinceMs / MINUTE_MS) * MINUTE_MS) * 1000n)
    const decisions: Record<DecisionName, number> = { approve: 0, review: 0, block: 0 }
    const counts = await this.#read.runAndReadAll('SELECT decision, count(*) AS n FROM rule_decisions WHERE evaluated_at >= ? GROUP BY decision', [since])
    for (const row of counts.getRowObjectsJS()) decisions[row.decision as DecisionName] = Number(row.n)
    const rules = await this.#read.runAndReadAll(
      `SELECT rule_id, sum(evaluations) AS evaluations, sum(hits) AS hits, sum(shadow_hits) AS shadow_hits, sum(errors) AS errors,
              sum(micros_total) / nullif(sum(evaluations), 0) AS mean_micros, max(micros_max) AS max_micros
       FROM rule_counters WHERE minute >= ? GROUP BY rule_id ORDER BY rule_id`,
      [since],
    )
    return {
      since: new Date(sinceMs).toISOString(),
      decisions,
      rules: rules.getRowObjectsJS().map((row) => ({
        rule_id: row.rule_id as string,
        evaluations: Number(row.evaluations),
        hits: Number(row.hits),
        shadow_hits: Number(row.shadow_hits),
        errors: Number(row.errors),
        mean_micros: row.mean_micros === null ? null : Number(row.mean_micros),
        max_micros: row.max_micros === null ? null : Number(row.max_micros),
      })),
    }
  }

  /** Stored hits, newest first. */
  async alerts(q: AlertQuery): Promise<AlertPage> {
    const where = ['mode = ?']
    const params: (string | number)[] = [q.mode ?? 'live']
    for (const [column, value] of [
      ['object', q.object],
      ['rule_id', q.rule_id],
      ['record_id', q.record_id],
    ] as const) {
      if (value === undefined) continue
      where.push(`${column} = ?`)
      params.push(value)
    }
    if (q.before !== undefined) {
      where.push('_seq < ?')
      params.push(q.before)
    }
    const res = await this.#read.runAndReadAll(
      `SELECT * FROM rule_alerts WHERE ${where.join(' AND ')} ORDER BY _seq DESC, rule_id LIMIT ${q.limit + 1}`,
      params,
    )
    const rows = res.getRowObjectsJS()
    let page = rows.slice(0, q.limit)
    const more = rows.length > q.limit
    if (more) {
      // Pages end between decisions, so the cursor (a decision's sequence) never splits one decision's hits.
      const boundary = Number(rows[q.limit]._seq)
      const complete = page.filter((row) => Number(row._seq) !== boundary)
      if (complete.length > 0) page = complete
    }
    return {
      alerts: page.map(
        (row): StoredAlert => ({
          ...recordColumnsOf(row),
          rule_id: row.rule_id as string,
          rule_version: row.rule_version as number,
          mode: row.mode as StoredAlert['mode'],
          score: row.score as number,
          severity: row.severity as string,
          tags: row.tags as string[],
          decision: row.decision as DecisionName,
          features: JSON.parse(row.features as string),
          record_time: (row.record_time as Date).toISOString(),
          evaluated_at: (row.evaluated_at as Date).toISOString(),
        }),
      ),
      ...(more && { next_cursor: String(Number(page[page.length - 1]._seq)) }),
    }
  }

  /** The decision on a record, with its shadow hits; null when there is none (yet). */
  async decision(recordId: string): Promise<StoredDecision | null> {
    const res = await this.#read.runAndReadAll(
      `SELECT d.*,
              (SELECT coalesce(list(a.rule_id ORDER BY a.rowid), []) FROM rule_alerts a WHERE a._seq = d._seq AND a.record_id = d.record_id AND a.mode = 'shadow') AS shadow_hits
       FROM rule_decisions d WHERE d.record_id = ? ORDER BY d._seq DESC LIMIT 1`,
      [recordId],
    )
    const [row] = res.getRowObjectsJS()
    if (!row) return null
    const receivedAt = row.received_at as Date
    const evaluatedAt = row.evaluated_at as Date
    return {
      ...recordColumnsOf(row),
      decision: row.decision as DecisionName,
      score: row.score as number,
      tags: row.tags as string[],
      fired: row.fired as string[],
      shadow_hits: row.shadow_hits as string[],
      stopped_by: row.stopped_by as string | null,
      rule_set_version: row.rule_set_version as number,
      evaluate_rules: row.evaluate_rules as boolean,
      record_time: (row.record_time as Date).toISOString(),
      received_at: receivedAt.toISOString(),
      evaluated_at: evaluatedAt.toISOString(),
      latency_ms: evaluatedAt.getTime() - receivedAt.getTime(),
    }
  }

  close(): void {
    this.#write.closeSync()
    this.#read.closeSync()
  }
}

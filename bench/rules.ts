import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { connect } from '@nats-io/transport-node'
import { Engine, type RuleProperties, type TopLevelCondition } from 'json-rules-engine'
import { generate } from '../fixtures/generator.ts'
import { DEFAULT_SCHEMAS_DIR, EMBEDDED_NATS_URL_FILE } from '../pipeline/index.ts'
import {
  checkRuleSet,
  DEFAULT_RULES_FILE,
  decide,
  type ExpressionContext,
  evaluateRules,
  RuleState,
  readRuleSetFile,
  recordTime,
  type StageRecord,
} from '../rules/index.ts'
import { type DecisionName, openStateDb, SchemaRegistry } from '../storage/index.ts'
import { percentile } from './freshness.ts'
import type { BenchResult, Figure, Target } from './report.ts'
import { type BenchSluice, withSluiceServe } from './server-process.ts'

/** Generated history the rule sets run over: about 40,000 records with every fraud pattern. */
const DATA = { seed: 42, accounts: 500, days: 14, fraudShare: 0.05 } as const
const ROUNDS = 3
/** Single records sent to a running Sluice, one at a time, for the latency figures. */
const LATENCY = { alerts: 300, syncDecisions: 1000, timeoutMs: 10_000 } as const

export const RULES_TARGETS = {
  ratioToJsonRulesEngine: { op: '>=', value: 10 },
  syncDecisionP99Ms: { op: '<', value: 20 },
  /** A busy account must not make the stage slower per record: its windows slide, they are not re-read. */
  hotAccountRatio: { op: '>=', value: 0.5 },
} as const satisfies Record<string, Target>

const DAY_MS = 86_400_000
const progress = (message: string) => process.stderr.write(`rules: ${message}\n`)

function latencySummary(samples: number[]) {
  const sorted = [...samples].sort((a, b) => a - b)
  return { samples: sorted.length, p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted.at(-1) ?? null }
}

/** The best of a few rounds, in records per second: the least disturbed by the rest of the machine. */
async function bestRate(count: number, round: () => unknown): Promise<number> {
  let best = 0
  for (let i = 0; i < ROUNDS; i++) {
    const started = performance.now()
    await round()
    best = Math.max(best, count / ((performance.now() - started) / 1000))
  }
  return best
}

// --- json-rules-engine, running the default rule set ---------------------------------------------------------
// One engine per object, each rule a priority (higher first) so they run in the default set's order, scores
// added from the success events, a stop rule stopping the engine. Paths resolve with a plain property walk:
// its default (JSONPath) is several times slower, and the bench should beat the baseline at its best.

const CURRENCY_SCALE: Record<string, number> = { JPY: 150, MXN: 17, BRL: 5 }
const present = (value: unknown) => value !== undefined && value !== null
const fact = (name: string, path: string) => ({ fact: name, path: `$.${path}` })
const recent = (event: string, minutes: number) => ({ ...fact('activity', `${event}.minutes_ago`), operator: 'lessThanInclusive', value: minutes })

const JRE_RULES: Record<string, { id: string; score: number; mode: 'live' | 'shadow'; stop?: boolean; conditions: TopLevelCondition }[]> = {
  transaction: [
    {
      id: 'account-closed-or-frozen',
      score: 100,
      mode: 'live',
      conditions: { all: [{ ...fact('account', 'status'), operator: 'in', value: ['closed', 'frozen'] }] },
    },
    { id: 'money-in', score: 0, mode: 'live', stop: true, conditions: { all: [{ ...fact('record', 'direction'), operator: 'equal', value: 'credit' }] } },
    {
      id: 'large-amount',
      score: 30,
      mode: 'live',
      conditions: { all: [{ ...fact('record', 'amount'), operator: 'largeForCurrency', value: fact('record', 'currency') }] },
    },
    {
      id: 'amount-far-above-average',
      score: 50,
      mode: 'live',
      conditions: {
        all: [
          { ...fact('features', 'tx_count_30d'), operator: 'greaterThanInclusive', value: 5 },
          { ...fact('record', 'amount'), operator: 'aboveTenTimes', value: fact('features', 'avg_amount_30d') },
        ],
      },
    },
    {
      id: 'velocity-burst',
      score: 50,
      mode: 'live',
      conditions: { all: [{ ...fact('features', 'tx_count_10m'), operator: 'greaterThanInclusive', value: 8 }] },
    },
    {
      id: 'many-countries-or-devices',
      score: 40,
      mode: 'live',
      conditions: {
        any: [
          { ...fact('features', 'countries_1h'), operator: 'greaterThanInclusive', value: 2 },
          { ...fact('features', 'devices_24h'), operator: 'greaterThanInclusive', value: 3 },
        ],
      },
    },
    {
      id: 'country-mismatch',
      score: 25,
      mode: 'live',
      conditions: {
        all: [
          { ...fact('account', 'country'), operator: 'present', value: true },
          { ...fact('record', 'country'), operator: 'notEqual', value: fact('account', 'country') },
        ],
      },
    },
    {
      id: 'new-device-high-amount',
      score: 40,
      mode: 'live',
      conditions: {
        all: [
          { ...fact('record', 'device_id'), operator: 'present', value: true },
          { ...fact('activity', 'device_added.device_id'), operator: 'equal', value: fact('record', 'device_id') },
          recent('device_added', 1440),
          { ...fact('record', 'amount'), operator: 'greaterThanInclusive', value: 500 },
        ],
      },
    },
    {
      id: 'transfer-after-credential-change',
      score: 60,
      mode: 'live',
      conditions: {
        all: [
          { ...fact('record', 'type'), operator: 'equal', value: 'transfer' },
          { ...fact('record', 'amount'), operator: 'greaterThanInclusive', value: 1000 },
          { any: [recent('password_change', 60), recent('email_change', 60)] },
        ],
      },
    },
    {
      id: 'night-time-large-payment',
      score: 20,
      mode: 'shadow',
      conditions: {
        all: [
          { ...fact('record', 'amount'), operator: 'greaterThanInclusive', value: 2000 },
          { ...fact('record', 'created_at'), operator: 'utcHourBefore', value: 5 },
        ],
      },
    },
  ],
  activity: [
    {
      id: 'login-from-new-country',
      score: 40,
      mode: 'live',
      conditions: {
        all: [
          { ...fact('record', 'event_type'), operator: 'equal', value: 'login' },
          { ...fact('record', 'country'), operator: 'present', value: true },
          { ...fact('activity', 'login.country'), operator: 'present', value: true },
          { ...fact('record', 'country'), operator: 'notEqual', value: fact('activity', 'login.country') },
        ],
      },
    },
  ],
}

function jsonRulesEngines(): Map<string, Engine> {
  const engines = new Map<string, Engine>()
  for (const [object, rules] of Object.entries(JRE_RULES)) {
    const engine = new Engine([], {
      allowUndefinedFacts: true,
      pathResolver: (value: object, path: string) =>
        path
          .slice(2)
          .split('.')
          .reduce<any>((v, key) => v?.[key], value),
    })
    engine.addOperator('present', (value) => present(value))
    engine.addOperator<number, string>('largeForCurrency', (amount, currency) => amount >= 10000 * (CURRENCY_SCALE[currency] ?? 1))
    engine.addOperator<number, number | undefined>('aboveTenTimes', (amount, average) => average !== undefined && amount > 10 * average)
    engine.addOperator<string, number>('utcHourBefore', (time, hour) => new Date(time).getUTCHours() < hour)
    rules.forEach((rule, i) => {
      const properties: RuleProperties = { name: rule.id, priority: 1000 - i, conditions: rule.conditions, event: { type: rule.id, params: rule } }
      engine.addRule(properties)
    })
    engine.on('success', (event) => {
      if (event.params?.stop) engine.stop()
    })
    engines.set(object, engine)
  }
  return engines
}

/** The decision json-rules-engine reaches on one record. */
async function jreDecision(
  engines: Map<string, Engine>,
  object: string,
  context: ExpressionContext,
  thresholds: (object: string) => { review: number; block: number },
): Promise<DecisionName> {
  const engine = engines.get(object)
  if (!engine) return 'approve'
  const { events } = await engine.run({ ...context })
  const score = events.reduce((sum, e) => sum + (e.params?.mode === 'live' ? (e.params.score as number) : 0), 0)
  return decide(score, thresholds(object))
}

interface ThroughputFigures {
  records: number
  stage_records_per_second: number
  /** The same records, all on one account: windows and lookups with thousands of records each. */
  hot_account_stage_records_per_second: number
  sluice_engine_records_per_second: number
  json_rules_engine_records_per_second: number
  /** Records on which the two engines decided differently: 0 when the rule sets are equivalent. */
  decisions_differing: number
}

/** Rule throughput in this process: the stage's whole path, and the engines alone on the same contexts. */
async function measureThroughput(): Promise<ThroughputFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-rules-'))
  try {
    const registry = new SchemaRegistry(openStateDb(join(dir, 'state.db')))
    registry.loadDefaults(DEFAULT_SCHEMAS_DIR)
    const { ruleSet } = checkRuleSet(readRuleSetFile(DEFAULT_RULES_FILE), { registry, retentionDays: 30 })
    const state = { activityWindowMs: 30 * DAY_MS, lateMs: 3_600_000 }
    const now = Date.now()
    const items: StageRecord[] = [...generate(DATA)].map(({ object, record }, i) => {
      const env = { record_id: `r${i}`, object, received_at: now, source: 'bench', schema_version: 1, record }
      return { env, seq: i + 1, time: recordTime(env, registry) }
    })
    progress(`${items.length} generated records; the stage's path (windows, lookups, rules, decision), ${ROUNDS} rounds`)
    const stagePath = (records: readonly StageRecord[]) => () => {
      const rules = new RuleState(ruleSet.allFeatures(), state)
      for (const item of records) rules.evaluate([ruleSet], item, now)
    }
    const stage = await bestRate(items.length, stagePath(items))
    // The same records as if one account sent them all: every window holds thousands of records.
    progress(`the stage's path with every record on one account, ${ROUNDS} rounds`)
    const hot = items.map((item) => ({ ...item, env: { ...item.env, record: { ...item.env.record, account_id: 'acc-hot' } } }))
    const hotStage = await bestRate(hot.length, stagePath(hot))
    // What expressions see, built once and copied (activity entries are reused between records), for both engines.
    const builder = new RuleState(ruleSet.allFeatures(), state)
    const contexts = items.map((item) => structuredClone(builder.admit([ruleSet], item)[0]))
    progress('the engines alone on the same contexts: Sluice (CEL)')
    const sluice = await bestRate(items.length, () => {
      for (let i = 0; i < items.length; i++) evaluateRules(ruleSet, items[i].env.object, contexts[i])
    })
    progress('the engines alone on the same contexts: json-rules-engine')
    const engines = jsonRulesEngines()
    const thresholds = (object: string) => ruleSet.thresholdsFor(object)
    const jre = await bestRate(items.length, async () => {
      for (let i = 0; i < items.length; i++) await jreDecision(engines, items[i].env.object, contexts[i], thresholds)
    })
    let differing = 0
    for (let i = 0; i < items.length; i++) {
      const mine = evaluateRules(ruleSet, items[i].env.object, contexts[i]).decision
      if (mine !== (await jreDecision(engines, items[i].env.object, contexts[i], thresholds))) differing++
    }
    return {
      records: items.length,
      stage_records_per_second: stage,
      hot_account_stage_records_per_second: hotStage,
      sluice_engine_records_per_second: sluice,
      json_rules_engine_records_per_second: jre,
      decisions_differing: differing,
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

interface LatencyFigures {
  alert_ms: number[]
  /** The same POSTs without decision=sync: what the wait for the rule stage adds to. */
  async_ms: number[]
  sync_ms: number[]
  sync_pending: number
  problems: string[]
}

/** POST to alert received by a NATS subscriber, and POST ?decision=sync round trips, against `sluice serve`. */
async function measureLatency(): Promise<LatencyFigures> {
  const adminKey = `bench_admin_${randomBytes(16).toString('hex')}`
  progress('starting sluice serve')
  const { result, problems } = await withSluiceServe(adminKey, (sluice) => measureLatencyOf(sluice))
  result.problems.push(...problems)
  return result
}

async function measureLatencyOf(sluice: BenchSluice): Promise<LatencyFigures> {
  const figures: LatencyFigures = { alert_ms: [], async_ms: [], sync_ms: [], sync_pending: 0, problems: [] }
  const nc = await connect({ servers: readFileSync(join(sluice.dataDir, EMBEDDED_NATS_URL_FILE), 'utf8') })
  try {
    const post = async (object: string, record: unknown, query = '') => {
      const res = await fetch(`${sluice.url}/${object}${query}`, {
        method: 'POST',
        headers: { ...sluice.headers, 'content-type': 'application/json' },
        body: JSON.stringify(record),
      })
      const body = (await res.json()) as { record_id: string; decision?: { status: string } }
      if (res.status !== 202) throw new Error(`POST /${object} answered ${res.status}: ${JSON.stringify(body)}`)
      return body
    }
    const records = [...generate({ seed: 7, accounts: 200, days: 30 })]
    const account = records.find((r) => r.object === 'account')?.record as Record<string, unknown>
    const transactions = records.filter((r) => r.object === 'transaction').map((r) => r.record)
    const alerted = new Map<string, number>()
    nc.subscribe('alerts.transaction.account-closed-or-frozen', {
      callback: (_err, msg) => void alerted.set(msg.json<{ record_id: string }>().record_id, performance.now()),
    })
    await nc.flush()
    await post('account', { ...account, account_id: 'acc-bench-frozen', status: 'frozen' }, '?decision=sync')
    progress(`alert latency: ${LATENCY.alerts} transactions on a frozen account, one at a time`)
    for (let i = 0; i < LATENCY.alerts; i++) {
      const started = performance.now()
      const { record_id: recordId } = await post('transaction', { ...transactions[i], transaction_id: `frozen-${i}`, account_id: 'acc-bench-frozen' })
      while (!alerted.has(recordId) && performance.now() - started < LATENCY.timeoutMs) await sleep(0.2)
      const at = alerted.get(recordId)
      if (at === undefined) {
        figures.problems.push(`no alert for record ${recordId} within ${LATENCY.timeoutMs} ms`)
        break
      }
      figures.alert_ms.push(at - started)
    }
    progress(`sync decisions: ${LATENCY.syncDecisions} POST ?decision=sync, one at a time, each after the same POST without`)
    for (let i = 0; i < LATENCY.syncDecisions; i++) {
      const record = transactions[LATENCY.alerts + i]
      let started = performance.now()
      await post('transaction', { ...record, transaction_id: `async-${i}` })
      figures.async_ms.push(performance.now() - started)
      started = performance.now()
      const { decision } = await post('transaction', { ...record, transaction_id: `sync-${i}` }, '?decision=sync')
      figures.sync_ms.push(performance.now() - started)
      if (decision?.status !== 'decided') figures.sync_pending++
    }
  } finally {
    await nc.close()
  }
  return figures
}

/**
 * The rule stage: throughput of the default rule set in one process against json-rules-engine running the
 * same rules on the same records; alert latency (POST to a NATS subscriber) and sync decision latency.
 */
export async function runRulesBench(): Promise<BenchResult> {
  const throughput = await measureThroughput()
  const latency = await measureLatency()
  const alerts = latencySummary(latency.alert_ms)
  const sync = latencySummary(latency.sync_ms)
  const plain = latencySummary(latency.async_ms)
  const ratio = throughput.sluice_engine_records_per_second / throughput.json_rules_engine_records_per_second
  const figures: Figure[] = [
    { label: 'stage path in one process (windows, lookups, rules)', value: throughput.stage_records_per_second, unit: 'records/s' },
    { label: 'the same, every record on one account', value: throughput.hot_account_stage_records_per_second, unit: 'records/s' },
    {
      label: 'ratio one account / spread over 500',
      value: throughput.hot_account_stage_records_per_second / throughput.stage_records_per_second,
      unit: '',
      decimals: 2,
      target: RULES_TARGETS.hotAccountRatio,
    },
    { label: 'Sluice rules alone (CEL), default set', value: throughput.sluice_engine_records_per_second, unit: 'records/s' },
    { label: 'json-rules-engine, same rules and contexts', value: throughput.json_rules_engine_records_per_second, unit: 'records/s' },
    { label: 'ratio Sluice / json-rules-engine', value: ratio, unit: '', decimals: 1, target: RULES_TARGETS.ratioToJsonRulesEngine },
    { label: 'alert latency (POST to subscriber) p50', value: alerts.p50, unit: 'ms', decimals: 1 },
    { label: 'alert latency (POST to subscriber) p99', value: alerts.p99, unit: 'ms', decimals: 1 },
    { label: 'sync decision (POST ?decision=sync) p50', value: sync.p50, unit: 'ms', decimals: 1 },
    { label: 'sync decision (POST ?decision=sync) p99', value: sync.p99, unit: 'ms', decimals: 1, target: RULES_TARGETS.syncDecisionP99Ms },
    { label: 'sync answers still pending', value: latency.sync_pending, unit: '' },
    { label: 'the same POST without decision=sync p50', value: plain.p50, unit: 'ms', decimals: 1 },
    { label: 'the same POST without decision=sync p99', value: plain.p99, unit: 'ms', decimals: 1 },
  ]
  const problems = [...latency.problems]
  if (throughput.decisions_differing > 0)
    problems.push(`the two engines decided ${throughput.decisions_differing} records differently: the rule sets are not equivalent`)
  return {
    name: 'rules',
    figures,
    details: {
      data: DATA,
      rounds: ROUNDS,
      throughput,
      alert_latency_ms: alerts,
      async_post_ms: plain,
      sync_decision_ms: { ...sync, pending: latency.sync_pending },
    },
    problems,
  }
}

import { readFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import t, { type Test } from 'tap'
import { type GeneratedRecord, generate } from '../fixtures/generator.ts'
import { DEFAULT_SCHEMAS_DIR, encodeEnvelope, MAX_BATCH_DECISIONS, partitionOf, RECORD_PARTITIONS, STREAMS, SUBJECTS } from '../pipeline/index.ts'
import { DEFAULT_RULES_FILE, evaluateRecords, readRuleSetFile, validateRuleSet } from '../rules/index.ts'
import { type Alert, type Decision, openStateDb, SchemaRegistry } from '../storage/index.ts'
import { finished, uploadGeneratedCsv } from './helpers/jobs.ts'
import { eventually, startTestNats, startTestSluice, type TestSluice, tempDir } from './helpers/sluice.ts'

const { bases } = JSON.parse(readFileSync(new URL('../fixtures/cases/rules.json', import.meta.url), 'utf8')) as {
  bases: Record<string, Record<string, unknown>>
}
const DEFAULT_RULES = readRuleSetFile(DEFAULT_RULES_FILE) as { thresholds: unknown; rules: Record<string, unknown>[] }

/** Messages on `subject` from now on, collected as they come. */
async function collect<T>(nc: NatsConnection, subject: string): Promise<T[]> {
  const seen: T[] = []
  nc.subscribe(subject, {
    callback: (_err, msg) => {
      seen.push(msg.json<T>())
    },
  })
  await nc.flush()
  return seen
}

async function post(s: TestSluice, object: string, record: Record<string, unknown>, query = '') {
  const res = await s.request('POST', `/${object}${query}`, record)
  return { status: res.status, body: (await res.json()) as { record_id: string; decision?: Record<string, unknown> } }
}

t.test('rule stage in a running Sluice', async (t) => {
  const nats = await startTestNats(t)
  const s = await startTestSluice(t, { natsUrl: nats.url, config: { rules: { syncTimeoutMs: 3000 } } })
  const nc = await connect({ servers: nats.url })
  t.teardown(() => nc.close())
  const frozen = { ...bases.account, account_id: 'acc-frozen', status: 'frozen' }
  t.equal((await post(s, 'account', frozen)).status, 202)

  t.test('a hit is published as an alert any NATS client can subscribe to', async (t) => {
    const alerts = await collect<Alert>(nc, 'alerts.transaction.>')
    const { body } = await post(s, 'transaction', { ...bases.transaction, transaction_id: 'tx-alert', account_id: 'acc-frozen' })
    const alert = await eventually(async () => alerts.find((a) => a.record_id === body.record_id))
    t.match(alert, {
      alert_id: `${body.record_id}:account-closed-or-frozen`,
      object: 'transaction',
      account_id: 'acc-frozen',
      rule_id: 'account-closed-or-frozen',
      rule_version: 1,
      rule_name: String,
      score: 100,
      severity: 'critical',
      tags: ['account-status'],
      decision: 'block',
      total_score: 100,
      features: {},
      record_time: '2026-01-05T10:00:00.000Z',
      evaluated_at: String,
      rule_set_version: 1,
    })
  })

  t.test('POST ?decision=sync answers with the decision, score and fired rules', async (t) => {
    const { status, body } = await post(s, 'transaction', { ...bases.transaction, transaction_id: 'tx-sync', account_id: 'acc-frozen' }, '?decision=sync')
    t.equal(status, 202)
    t.match(body.decision, {
      status: 'decided',
      decision: 'block',
      score: 100,
      fired: [{ rule_id: 'account-closed-or-frozen', score: 100 }],
      rule_set_version: 1,
    })
    const plain = await post(s, 'transaction', { ...bases.transaction, transaction_id: 'tx-sync-ok' }, '?decision=sync')
    t.match(plain.body.decision, { status: 'decided', decision: 'approve', score: 0, fired: [] })
    t.notOk((await post(s, 'transaction', { ...bases.transaction, transaction_id: 'tx-async' })).body.decision, 'no decision without decision=sync')
  })

  t.test('POST /rules/test answers the decision a rule set would make on one record, storing nothing', async (t) => {
    const test = async (body: Record<string, unknown>) => {
      const res = await s.request('POST', '/rules/test', body)
      return { status: res.status, body: (await res.json()) as Record<string, unknown> }
    }
    const history = [{ object: 'account', record: frozen }]
    const hit = await test({ record: { ...bases.transaction, account_id: 'acc-frozen' }, object: 'transaction', history })
    t.equal(hit.status, 200)
    t.match(hit.body, { decision: 'block', score: 100, fired: [{ rule_id: 'account-closed-or-frozen', score: 100 }], errors: [] })
    t.match(
      (hit.body.evaluations as { rule_id: string }[]).find((e) => e.rule_id === 'account-closed-or-frozen'),
      { outcome: 'hit' },
      'every rule has its outcome',
    )
    const miss = await test({ record: bases.transaction })
    t.match(miss, { status: 200, body: { decision: 'approve', score: 0, fired: [] } }, 'object defaults to transaction, rules to the live set')
    t.ok((miss.body.evaluations as { outcome: string }[]).every((e) => e.outcome === 'miss'))
    const rules = { ...DEFAULT_RULES, rules: [{ id: 'x', name: 'x', object: 'transaction', order: 1, when: 'record.amount >' }] }
    const bad = await test({ rules, record: bases.transaction })
    t.equal(bad.status, 400)
    t.match(bad.body, { code: 'SLUICE_INVALID_RULES', errors: [{ pointer: '/rules/0/when', message: /^line 1, column 16: / }] })
  })

  t.test('PUT /rules refuses an invalid rule set with the position of the error, and a valid one takes effect', async (t) => {
    const bad = await s.request('PUT', '/rules', { rules: [{ id: 'x', name: 'x', object: 'transaction', order: 1, when: 'record.amount >' }] })
    t.equal(bad.status, 400)
    t.match(await bad.json(), { code: 'SLUICE_INVALID_RULES', errors: [{ pointer: '/rules/0/when', message: /^line 1, column 16: / }] })
    const flaky = { id: 'vip-flag', name: 'VIP flag', object: 'transaction', order: 5, when: 'record.metadata.vip == true', score: 1 }
    const odd = { id: 'odd-amount', name: 'Odd amount', object: 'transaction', order: 6, when: 'record.amount == 77.7', score: 60, tags: ['odd'] }
    const res = await s.request('PUT', '/rules', { ...DEFAULT_RULES, rules: [...DEFAULT_RULES.rules, flaky, odd] })
    t.equal(res.status, 200)
    t.match(await res.json(), {
      version: 2,
      changes: [
        { rule_id: 'vip-flag', change: 'added', version: 1 },
        { rule_id: 'odd-amount', change: 'added', version: 1 },
      ],
    })
    const current = await (await s.request('GET', '/rules')).json()
    t.match(current, { version: 2, rules: [{ version: Number, updated_at: String, updated_by: String }] })
    const putBack = (await (await s.request('PUT', '/rules', current)).json()) as { version: number; changes: unknown[] }
    t.same([putBack.version, putBack.changes], [2, []], 'what GET /rules answers may be PUT back unchanged')
    const decided = await eventually(async () => {
      const { body } = await post(s, 'transaction', { ...bases.transaction, transaction_id: `tx-odd-${Date.now()}`, amount: 77.7 }, '?decision=sync')
      return (body.decision as { fired: { rule_id: string }[] }).fired.length > 0 ? body.decision : undefined
    })
    t.match(decided, { decision: 'review', score: 60, tags: ['odd'], rule_set_version: 2, fired: [{ rule_id: 'odd-amount', rule_version: 1 }] })
  })

  t.test('an expression failing at run time is an error outcome: counted, and the record is still decided', async (t) => {
    const decisions = await collect<Decision>(nc, 'sluice.decisions.transaction.>')
    const { body } = await post(s, 'transaction', { ...bases.transaction, transaction_id: 'tx-null-metadata', metadata: null }, '?decision=sync')
    t.match(body.decision, { status: 'decided', decision: 'approve' })
    const decision = await eventually(async () => decisions.find((d) => d.record_id === body.record_id))
    t.match(decision.errors, [{ rule_id: 'vip-flag', rule_version: 1, message: String }])
    t.ok(decision.evaluations.some((e) => e.rule_id === 'vip-flag' && e.outcome === 'error'))
    const stats = await eventually(async () => {
      const body = (await (await s.request('GET', '/rules/stats')).json()) as { rules: { rule_id: string; errors: number }[] }
      return body.rules.find((r) => r.rule_id === 'vip-flag' && r.errors > 0)
    })
    t.ok(stats.errors >= 1, 'GET /rules/stats counts the error')
    const metrics = (await (await s.request('GET', '/metrics')).text()).split('\n').filter((l) => l.startsWith('sluice_rule_evaluations_total{'))
    const counted = (rule: string, outcome: string) =>
      metrics.filter((l) => l.includes(`rule_id="${rule}"`) && l.includes(`outcome="${outcome}"`)).reduce((n, l) => n + Number(l.split(' ').pop()), 0)
    t.ok(counted('vip-flag', 'error') >= 1, '/metrics counts the error by rule and outcome')
    t.ok(counted('velocity-burst', 'miss') >= 1, 'and the misses, apart')
  })

  t.test('a backfilled record (evaluate_rules: false) is decided but raises no alert', async (t) => {
    const alerts = await collect<Alert>(nc, 'alerts.>')
    const decisions = await collect<Decision>(nc, 'sluice.decisions.>')
    const record = { ...bases.transaction, transaction_id: 'tx-backfill', account_id: 'acc-frozen' }
    const env = { record_id: 'backfill-1', object: 'transaction', received_at: Date.now(), source: 'batch', schema_version: 1, evaluate_rules: false, record }
    await jetstream(nc).publish(SUBJECTS.record('transaction', partitionOf(record, 'transaction_id', RECORD_PARTITIONS)), encodeEnvelope(env))
    const decision = await eventually(async () => decisions.find((d) => d.record_id === 'backfill-1'))
    t.match(decision, { decision: 'block', evaluate_rules: false, fired: [{ rule_id: 'account-closed-or-frozen' }] })
    // An alert would have been published before the decision that raised it was acked; give it a moment anyway.
    await new Promise((r) => setTimeout(r, 300))
    t.same(
      alerts.filter((a) => a.record_id === 'backfill-1'),
      [],
      'no alert',
    )
  })

  t.test('decisions, hits and per-rule counters are stored for the dashboard', async (t) => {
    const page = await eventually(async () => {
      const body = (await (await s.request('GET', '/alerts?rule=account-closed-or-frozen&limit=10')).json()) as { alerts: Record<string, unknown>[] }
      return body.alerts.length >= 3 ? body : undefined
    })
    t.match(page.alerts[0], { rule_id: 'account-closed-or-frozen', mode: 'live', decision: 'block', account_id: 'acc-frozen', object: 'transaction' })
    const recordId = page.alerts[1].record_id as string
    const one = (await (await s.request('GET', `/alerts?record_id=${encodeURIComponent(recordId)}`)).json()) as { alerts: { record_id: string }[] }
    t.ok(one.alerts.length >= 1 && one.alerts.every((a) => a.record_id === recordId), "record_id keeps only that record's hits")
    const stats = (await (await s.request('GET', '/rules/stats?since_minutes=60')).json()) as {
      decisions: Record<string, number>
      rules: { rule_id: string; evaluations: number; hits: number; mean_micros: number }[]
    }
    t.ok(stats.decisions.block >= 3 && stats.decisions.approve >= 1, JSON.stringify(stats.decisions))
    t.match(
      stats.rules.find((r) => r.rule_id === 'account-closed-or-frozen'),
      { evaluations: Number, hits: Number, mean_micros: Number },
    )
    const shadow = (await (await s.request('GET', '/alerts?mode=shadow')).json()) as { alerts: unknown[] }
    t.same(shadow.alerts, [], 'no shadow hit among these records')
  })

  t.test("an outcome JetStream does not store is nak'd, and the record is evaluated again once it does", async (t) => {
    const jsm = await jetstreamManager(nc)
    const { config } = await jsm.streams.info(STREAMS.alerts.name)
    await jsm.streams.delete(STREAMS.alerts.name)
    const { body } = await post(s, 'transaction', { ...bases.transaction, transaction_id: 'tx-retried', account_id: 'acc-frozen' })
    // The failed publish shows when JetStream's publish times out (5 s); then the stage starts over.
    await eventually(async () => {
      const metrics = await (await s.request('GET', '/metrics')).text()
      return /^sluice_rule_stage_restarts_total [1-9]/m.test(metrics) ? true : undefined
    }, 15_000)
    await jsm.streams.add(config)
    const stored = await eventually(async () => {
      const msg = await jsm.streams
        .getMessage(STREAMS.alerts.name, { last_by_subj: SUBJECTS.alert('transaction', 'account-closed-or-frozen') })
        .catch(() => null)
      return msg?.json<Alert>().record_id === body.record_id ? msg.json<Alert>() : undefined
    }, 15_000)
    t.match(stored, { rule_id: 'account-closed-or-frozen', decision: 'block' }, 'the alert is stored after all')
  })
})

/** A small population with many fraud patterns, so that windows and lookups matter. */
const patternRecords = (seed: number): GeneratedRecord[] => [...generate({ seed, accounts: 12, days: 3, fraudShare: 0.35 })]

/** POSTs records one after another; their record ids, in order. */
async function postAll(s: TestSluice, records: readonly GeneratedRecord[]): Promise<string[]> {
  const ids: string[] = []
  for (const { object, record } of records) {
    const { status, body } = await post(s, object, record)
    if (status !== 202) throw new Error(`POST /${object} answered ${status}: ${JSON.stringify(body)}`)
    ids.push(body.record_id)
  }
  return ids
}

/** Every decision in SLUICE_DECISIONS, once it holds at least `count` of them. */
async function storedDecisions(natsUrl: string, count: number, t: Test): Promise<Decision[]> {
  const nc = await connect({ servers: natsUrl })
  t.teardown(() => nc.close())
  return eventually(
    async () => {
      const consumer = await jetstream(nc).consumers.get(STREAMS.decisions.name, { deliver_policy: DeliverPolicy.All })
      const { num_pending: pending } = await consumer.info(true)
      if (pending === 0) return undefined
      const decisions: Decision[] = []
      for await (const msg of await consumer.consume()) {
        decisions.push(...msg.json<Decision[]>())
        if (msg.info.pending === 0) break
      }
      return decisions.length >= count ? decisions : undefined
    },
    15_000,
    200,
  )
}

/**
 * Checks that each record (`ids[i]` is `records[i]`'s record id) has the decision one uninterrupted evaluation of
 * them all makes: the same decision, score, fired rules with their feature values, and shadow hits.
 */
function expectUninterruptedDecisions(t: Test, records: readonly GeneratedRecord[], ids: readonly string[], decided: ReadonlyMap<string, Decision>): void {
  const registry = new SchemaRegistry(openStateDb(`${tempDir(t)}/state.db`))
  registry.loadDefaults(DEFAULT_SCHEMAS_DIR)
  const checked = validateRuleSet(DEFAULT_RULES, (object) => registry.current(object)?.schema, 30 * 86_400_000)
  if (!checked.ok) return void t.fail('default rules invalid')
  const expected = evaluateRecords(checked.ruleSet, registry, records, { activityWindowMs: 720 * 3_600_000, lateMs: 3_600_000 })
  let differing = 0
  expected.forEach((want, i) => {
    const got = decided.get(ids[i])
    if (!got || JSON.stringify(decisionSummary(got)) !== JSON.stringify(decisionSummary(want))) {
      differing++
      if (differing <= 3) t.same(got && decisionSummary(got), decisionSummary(want), `record ${i} (${records[i].object}) decided as in one uninterrupted run`)
    }
  })
  t.equal(differing, 0, `all ${records.length} decisions equal those of an uninterrupted run`)
  const half = Math.floor(records.length / 2)
  t.ok(
    expected.some((d, i) => i >= half && d.fired.length > 0),
    'the second half has hits, some of which depend on records of the first',
  )
}

const decisionSummary = (d: Decision) => ({
  decision: d.decision,
  score: d.score,
  fired: d.fired.map((h) => [h.rule_id, h.features]),
  shadow: d.shadow_hits.map((h) => h.rule_id),
})

t.test('after a restart the stage rebuilds its windows and lookups from the stream: no decision changes', async (t) => {
  const nats = await startTestNats(t)
  const dataDir = tempDir(t)
  const records = patternRecords(5)
  const half = Math.floor(records.length / 2)
  const first = await startTestSluice(t, { natsUrl: nats.url, dataDir })
  const ids = await postAll(first, records.slice(0, half))
  await first.stop()
  const second = await startTestSluice(t, { natsUrl: nats.url, dataDir })
  ids.push(...(await postAll(second, records.slice(half))))

  const stored = await storedDecisions(nats.url, records.length, t)
  const live = new Map(stored.map((d) => [d.record_id, d]))
  t.equal(stored.length, records.length, 'one decision per record in SLUICE_DECISIONS')
  t.equal(live.size, records.length, 'none twice')
  expectUninterruptedDecisions(t, records, ids, live)
})

t.test("a real-time record is decided ahead of a batch job's records stored before it: the job's lane has consumers of its own", async (t) => {
  const nats = await startTestNats(t)
  const dataDir = tempDir(t)
  // The job is stored while no rule stage runs, so that its records wait in JetStream when the stage starts.
  const first = await startTestSluice(t, { natsUrl: nats.url, dataDir, config: { roles: ['ingress', 'sink', 'batch'] } })
  const { jobId, records: jobRecords } = await uploadGeneratedCsv(t, first, 32_000)
  t.equal((await finished(first, jobId, 60_000)).state, 'completed', 'the job is stored')
  const live = { ...bases.transaction, transaction_id: 'live-after-the-job' }
  const { body } = await post(first, 'transaction', live)
  await first.stop()
  await startTestSluice(t, { natsUrl: nats.url, dataDir })

  const decisions = await storedDecisions(nats.url, jobRecords + 1, t)
  const liveDecision = decisions.find((d) => d.record_id === body.record_id) as Decision
  const partition = partitionOf(live, 'transaction_id', RECORD_PARTITIONS)
  const jobsInPartition = decisions.filter(
    (d) => d.job_id === jobId && partitionOf({ account_id: d.account_id }, 'transaction_id', RECORD_PARTITIONS) === partition,
  )
  const decidedAfter = jobsInPartition.filter((d) => Date.parse(d.evaluated_at) > Date.parse(liveDecision.evaluated_at)).length
  t.ok(jobsInPartition.length > 1000, `${jobsInPartition.length} of the job's records are in the real-time record's partition`)
  t.ok(decidedAfter > jobsInPartition.length / 2, `decided before ${decidedAfter} of them, though stored after them all`)
})

/** Ends the rule stage's worker thread at once, as a crash would, through the inspector: Sluice has no hook for it. */
async function crashRuleThread(t: Test): Promise<void> {
  const session = new Session()
  session.connect()
  t.teardown(() => session.disconnect())
  const ruleThreads: string[] = []
  session.on('NodeWorker.attachedToWorker', ({ params }) => {
    if (params.workerInfo.title.endsWith('sluice-rules')) ruleThreads.push(params.sessionId)
  })
  await session.post('NodeWorker.enable', { waitForDebuggerOnStart: false })
  t.equal(ruleThreads.length, 1, 'the rule stage runs on a worker thread of its own')
  const message = JSON.stringify({ id: 1, method: 'Runtime.evaluate', params: { expression: 'process.exit(1)' } })
  for (const sessionId of ruleThreads) await session.post('NodeWorker.sendMessageToWorker', { sessionId, message })
}

t.test("a rule thread that dies in the middle of a batch job resumes the job's lane from its acks: each record decided, stored once", async (t) => {
  const nats = await startTestNats(t)
  const s = await startTestSluice(t, { natsUrl: nats.url })
  const { jobId, records: total } = await uploadGeneratedCsv(t, s, 20_000)
  const nc = await connect({ servers: nats.url })
  t.teardown(() => nc.close())
  const jsm = await jetstreamManager(nc)
  // Dies once the first of the job's decisions are stored, while the rest wait in its lane.
  await eventually(async () => ((await jsm.streams.info(STREAMS.decisions.name)).state.messages > 0 ? true : undefined), 30_000, 10)
  await crashRuleThread(t)
  const storedAtCrash = (await jsm.streams.info(STREAMS.decisions.name)).state.messages
  t.ok(storedAtCrash < total / MAX_BATCH_DECISIONS, `it died with ${storedAtCrash} of the job's decision batches stored`)
  const status = await finished(s, jobId, 60_000)
  t.equal(status.state, 'completed', 'the job completes')
  t.equal(status.counts.evaluated, total, 'the job completes with every record decided')
  const decided = new Set((await storedDecisions(nats.url, total, t)).filter((d) => d.job_id === jobId).map((d) => d.record_id))
  t.equal(decided.size, total, 'each record of the job has its decision in SLUICE_DECISIONS')
})

t.test('a rule thread that dies is started again and resumes from its acks: every record decided, as in one run, stored once', async (t) => {
  const nats = await startTestNats(t)
  const s = await startTestSluice(t, { natsUrl: nats.url })
  const records = patternRecords(9)
  const half = Math.floor(records.length / 2)
  const ids = await postAll(s, records.slice(0, half))
  // Dies while it evaluates the first half; ingress goes on taking records meanwhile.
  await crashRuleThread(t)
  ids.push(...(await postAll(s, records.slice(half))))

  // A record evaluated before the crash but not yet acked is evaluated again: its decision may be in the stream twice, the same.
  const stored = await storedDecisions(nats.url, records.length, t)
  const decided = new Map<string, Decision>()
  let changed = 0
  for (const d of stored) {
    const before = decided.get(d.record_id)
    if (before && JSON.stringify(decisionSummary(before)) !== JSON.stringify(decisionSummary(d))) changed++
    decided.set(d.record_id, d)
  }
  t.equal(decided.size, records.length, 'every record decided')
  t.equal(changed, 0, 'a record decided again is decided the same')
  expectUninterruptedDecisions(t, records, ids, decided)

  const totals = await eventually(async () => {
    const res = await s.request('GET', '/rules/stats?since_minutes=60')
    const { decisions } = (await res.json()) as { decisions: Record<string, number> }
    const total = decisions.approve + decisions.review + decisions.block
    return total >= records.length ? total : undefined
  }, 10_000)
  t.equal(totals, records.length, 'each decision stored once for the dashboard')
  const metrics = await s.request('GET', '/metrics')
  t.equal(metrics.status, 200)
  t.match(await metrics.text(), /^sluice_rule_records_total\{.*\} [1-9]/m, '/metrics reads the restarted thread, which evaluated records')
})

import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { DuckDBInstance } from '@duckdb/node-api'
import t, { type Test } from 'tap'
import { envelopeJson } from '../pipeline/index.ts'
import {
  AnalyticsStore,
  type Decision,
  type DecisionAsStored,
  type EnvelopeRow,
  type ObjectSchemaDoc,
  RECORDS_PER_MESSAGE,
  type RuleCounterRow,
  RuleOutcomeStore,
  recordSeq,
} from '../storage/index.ts'
import { tempDir } from './helpers/sluice.ts'

const schema = JSON.parse(readFileSync(new URL('../fixtures/schemas/activity.json', import.meta.url), 'utf8')) as ObjectSchemaDoc

function envelope(n: number): string {
  return envelopeJson({
    record_id: `r-${n}`,
    object: 'activity',
    received_at: Date.now(),
    source: 'api',
    schema_version: 1,
    record: { activity_id: `a-${n}`, account_id: 'acc-1', event_type: 'login', occurred_at: '2026-01-01T00:00:00Z' },
  })
}

/** The message at stream sequence `streamSeq`, holding records numbered from `first` on. */
function message(streamSeq: number, first: number, count = 1): EnvelopeRow {
  return { seq: recordSeq(streamSeq), envelopes: Buffer.from(`[${Array.from({ length: count }, (_, i) => envelope(first + i)).join(',')}]`) }
}

t.test('a message delivered twice, in one batch or across batches, is stored once', async (t) => {
  const store = await AnalyticsStore.open(join(tempDir(t), 'a.duckdb'))
  t.teardown(() => store.close())
  await store.ensureTable(schema)
  t.equal(await store.append('activity', [message(1, 1), message(2, 2), message(1, 1)]), 2, 'a redelivery inside the batch is dropped')
  t.equal(await store.append('activity', [message(2, 2), message(3, 3)]), 1, 'a sequence already stored is dropped')
  const page = await store.queryRecords({ object: 'activity', limit: 10, view: 'history' })
  t.same(
    page.records.map((r) => r.seq),
    [recordSeq(3), recordSeq(2), recordSeq(1)],
  )
})

t.test("text reads back as sent, and bytes that are not UTF-8 (another publisher's) are stored with a replacement character", async (t) => {
  const store = await AnalyticsStore.open(join(tempDir(t), 'a.duckdb'))
  t.teardown(() => store.close())
  await store.ensureTable(schema)
  const withAccount = (n: number, account: string) => Buffer.from(envelope(n).replace('"account_id":"acc-1"', `"account_id":${JSON.stringify(account)}`))
  const broken = withAccount(2, 'acc-XY')
  const at = broken.indexOf('XY')
  broken[at] = 0xff // a byte that starts no UTF-8 sequence
  const row = (streamSeq: number, env: Buffer): EnvelopeRow => ({
    seq: recordSeq(streamSeq),
    envelopes: Buffer.concat([Buffer.from('['), env, Buffer.from(']')]),
  })
  t.equal(await store.append('activity', [row(1, withAccount(1, 'Zürich ☕ "q" \\ 😀')), row(2, broken)]), 2, 'both are stored')
  const accounts = async (n: number) =>
    (await store.queryRecords({ object: 'activity', limit: 10, view: 'history', filters: { record_id: `r-${n}` } })).records[0].data.account_id
  t.equal(await accounts(1), 'Zürich ☕ "q" \\ 😀')
  t.equal(await accounts(2), 'acc-\ufffdY')
})

t.test('a value that does not convert to its column (sent under an older schema version) is stored as null, with the rest of its batch', async (t) => {
  const parameterWrites: Error[] = []
  const store = await AnalyticsStore.open(join(tempDir(t), 'a.duckdb'), { onParameterWrite: (err) => parameterWrites.push(err) })
  t.teardown(() => store.close())
  await store.ensureTable(schema)
  const withSuccess = (n: number, success: string) => Buffer.from(`[${envelope(n).replace('"account_id"', `"success":${success},"account_id"`)}]`)
  const rows: EnvelopeRow[] = [
    { seq: recordSeq(1), envelopes: withSuccess(1, 'true') },
    { seq: recordSeq(2), envelopes: withSuccess(2, '"not a boolean"') },
    { seq: recordSeq(3), envelopes: withSuccess(3, 'false') },
  ]
  t.equal(await store.append('activity', rows), 3, 'all three are stored')
  t.equal(parameterWrites.length, 1, 'the write was made again from a parameter, and said so')
  t.match(parameterWrites[0].message, /not a boolean/, 'naming the value DuckDB could not convert')
  const page = await store.queryRecords({ object: 'activity', limit: 10, view: 'history' })
  t.same(
    page.records.map((r) => [r.record_id, r.data.success]),
    [
      ['r-3', false],
      ['r-2', null],
      ['r-1', true],
    ],
  )
})

t.test("a batch job's message stores each of its records, numbered by place, once", async (t) => {
  const store = await AnalyticsStore.open(join(tempDir(t), 'a.duckdb'))
  t.teardown(() => store.close())
  await store.ensureTable(schema)
  t.equal(await store.append('activity', [message(1, 1), message(2, 2, 5)]), 6)
  t.equal(await store.append('activity', [message(2, 2, 5), message(3, 7, 2)]), 2, 'the redelivered message adds nothing')
  const records: { seq: number; record_id: string }[] = []
  let cursor: number | undefined
  for (;;) {
    const page = await store.queryRecords({ object: 'activity', limit: 3, view: 'history', before: cursor })
    records.push(...page.records)
    if (!page.next_cursor) break
    cursor = Number(page.next_cursor)
  }
  t.same(
    records.map((r) => [r.seq, r.record_id]),
    [[recordSeq(3, 1), 'r-8'], [recordSeq(3, 0), 'r-7'], ...[4, 3, 2, 1, 0].map((p) => [recordSeq(2, p), `r-${2 + p}`]), [recordSeq(1), 'r-1']],
    'pages of three walk every record, newest first, none twice',
  )
})

t.test("freshness in the stats is the real-time records': a batch job's records, received with their job, are left out", async (t) => {
  const store = await AnalyticsStore.open(join(tempDir(t), 'a.duckdb'))
  t.teardown(() => store.close())
  await store.ensureTable(schema)
  const record = { activity_id: 'a-1', account_id: 'acc-1', event_type: 'login', occurred_at: '2026-01-01T00:00:00Z' }
  const now = Date.now()
  const live = envelopeJson({ record_id: 'live', object: 'activity', received_at: now - 200, source: 'api', schema_version: 1, record })
  const ofJob = Array.from({ length: 5 }, (_, i) =>
    envelopeJson({ record_id: `job-${i}`, object: 'activity', received_at: now - 30_000, source: 'batch', schema_version: 1, job_id: 'job_1', record }),
  )
  await store.append('activity', [
    { seq: recordSeq(1), envelopes: Buffer.from(`[${live}]`) },
    { seq: recordSeq(2), envelopes: Buffer.from(`[${ofJob.join(',')}]`) },
  ])
  const [stats] = await store.stats(['activity'])
  t.equal(stats.total, 6, 'every record counts in the total')
  t.ok(
    stats.freshness_ms !== null && stats.freshness_ms >= 200 && stats.freshness_ms < 5000,
    `freshness ${stats.freshness_ms} ms: the live record's, not the job's 30 s`,
  )
})

t.test('the current view pages newest first, right when the newest rows are late old versions and updates', async (t) => {
  const store = await AnalyticsStore.open(join(tempDir(t), 'a.duckdb'))
  t.teardown(() => store.close())
  await store.ensureTable(schema)
  const day = 86_400_000
  const start = Date.parse('2026-01-01T00:00:00Z')
  // Appended in this order: originals, then versions older than them that arrive late (not current), then
  // newer versions of a thousand ids (current). The newest rows are thus no guide to what is current.
  // The late old versions and the updates name another account, so a filter must look at current versions only.
  const versions = [
    ...Array.from({ length: 3000 }, (_, i) => ({ id: i, at: start + i * 1000, account: 'acc-1' })),
    ...Array.from({ length: 1500 }, (_, i) => ({ id: i, at: start - day, account: 'acc-2' })),
    ...Array.from({ length: 1100 }, (_, i) => ({ id: 1000 + i, at: start + day + i * 1000, account: 'acc-2' })),
  ]
  const rows: EnvelopeRow[] = versions.map((v, n) => ({
    seq: recordSeq(n + 1),
    envelopes: Buffer.from(
      `[${envelopeJson({
        record_id: `v-${n}`,
        object: 'activity',
        received_at: Date.now(),
        source: 'api',
        schema_version: 1,
        record: { activity_id: `a-${v.id}`, account_id: v.account, event_type: 'login', occurred_at: new Date(v.at).toISOString() },
      })}]`,
    ),
  }))
  for (let i = 0; i < rows.length; i += 1000) await store.append('activity', rows.slice(i, i + 1000))
  // What each id's current version is: the newest by its own time, then by arrival.
  const current = new Map<number, number>()
  versions.forEach((v, n) => {
    const kept = current.get(v.id)
    if (kept === undefined || versions[kept].at <= v.at) current.set(v.id, n)
  })
  const newestFirst = (ns: number[]) => ns.sort((a, b) => b - a).map((n) => `v-${n}`)
  const allPages = async (filters?: Record<string, string>) => {
    const seen: string[] = []
    let cursor: number | undefined
    for (;;) {
      const page = await store.queryRecords({ object: 'activity', limit: 100, view: 'current', before: cursor, filters })
      seen.push(...page.records.map((r) => r.record_id))
      if (!page.next_cursor) return seen
      cursor = Number(page.next_cursor)
    }
  }
  const seen = await allPages()
  t.equal(seen.length, 3000, 'one row per id')
  t.same(seen, newestFirst([...current.values()]), 'every current version, newest first, across pages')
  for (const account of ['acc-1', 'acc-2']) {
    const expected = newestFirst([...current.values()].filter((n) => versions[n].account === account))
    t.same(await allPages({ account_id: account }), expected, `filtered on ${account}: only current versions on it (${expected.length})`)
  }
  const stale = 3000 // the first late old version: never current
  t.same(await allPages({ record_id: `v-${stale}` }), [], 'a version that is not current is not in the current view')
  t.same(
    (await store.queryRecords({ object: 'activity', limit: 10, view: 'history', filters: { record_id: `v-${stale}` } })).records.length,
    1,
    'but it is in history',
  )
  t.same(await allPages({ record_id: 'v-2500' }), ['v-2500'], 'a current version found by its record id')
})

t.test('a file written before records shared messages is renumbered once, old rows before new', async (t) => {
  const path = join(tempDir(t), 'old.duckdb')
  const first = await AnalyticsStore.open(path)
  await first.ensureTable(schema)
  await first.append('activity', [message(1, 1), message(2, 2)])
  first.close()
  // Make it as the previous release left it: rows numbered by stream sequence, and no marker.
  const raw = await DuckDBInstance.create(path)
  const conn = await raw.connect()
  await conn.run(`UPDATE records_activity SET _seq = _seq // ${RECORDS_PER_MESSAGE}`)
  await conn.run('DROP TABLE sluice_store_meta')
  conn.closeSync()
  raw.closeSync()

  for (const round of [1, 2]) {
    const store = await AnalyticsStore.open(path)
    await store.ensureTable(schema)
    if (round === 1) t.equal(await store.append('activity', [message(3, 3), message(2, 2)]), 1, 'a redelivered old message is still recognised')
    const page = await store.queryRecords({ object: 'activity', limit: 10, view: 'history' })
    t.same(
      page.records.map((r) => [r.seq, r.record_id]),
      [
        [recordSeq(3), 'r-3'],
        [recordSeq(2), 'r-2'],
        [recordSeq(1), 'r-1'],
      ],
      `opened ${round === 1 ? 'first' : 'again'}: renumbered exactly once`,
    )
    store.close()
  }
})

/** A decision store on a fresh DuckDB file, closed when the test ends. */
async function openOutcomes(t: Test, path: string): Promise<RuleOutcomeStore> {
  const analytics = await AnalyticsStore.open(path)
  const outcomes = await RuleOutcomeStore.open(analytics)
  t.teardown(() => {
    outcomes.close()
    analytics.close()
  })
  return outcomes
}

/** An approval of record `seq` as a batch job's record is stored: no evaluations. */
function storedDecision(seq: number, over: Partial<DecisionAsStored> = {}): DecisionAsStored {
  return {
    record_id: `r-${seq}`,
    record_seq: seq,
    object: 'transaction',
    account_id: 'acc-1',
    decision: 'approve',
    score: 0,
    tags: [],
    fired: [],
    shadow_hits: [],
    errors: [],
    stopped_by: null,
    rule_set_version: 7,
    evaluate_rules: true,
    record_time: '2026-01-01T10:00:00.123Z',
    received_at: '2026-11-24T08:00:00.000Z',
    evaluated_at: '2026-11-24T08:00:00.250Z',
    ...over,
  }
}

t.test('decisions: each one, its hits and the per-rule counters stored once', async (t) => {
  const outcomes = await openOutcomes(t, join(tempDir(t), 'd.duckdb'))
  const hit = (rule_id: string, mode: 'live' | 'shadow', features: Record<string, number>) => ({
    rule_id,
    rule_version: 2,
    name: rule_id,
    mode,
    score: mode === 'live' ? 50 : 0,
    severity: 'high',
    tags: ['velocity'],
    features,
  })
  const decision = (seq: number, over: Partial<Decision> = {}): Decision => ({
    ...storedDecision(seq, { account_id: seq === 3 ? null : 'acc-1' }),
    evaluations: [
      { rule_id: 'burst', rule_version: 2, outcome: 'miss', micros: 3 },
      { rule_id: 'new-device', rule_version: 1, outcome: 'miss', micros: 5 },
    ],
    ...over,
  })
  const flagged = decision(2, {
    decision: 'review',
    score: 50,
    tags: ['velocity'],
    fired: [hit('burst', 'live', { tx_10m: 6 })],
    shadow_hits: [hit('new-device', 'shadow', { devices_1d: 3.5 })],
    evaluations: [
      { rule_id: 'burst', rule_version: 2, outcome: 'hit', micros: 9 },
      { rule_id: 'new-device', rule_version: 1, outcome: 'shadow_hit', micros: 4 },
    ],
    job_id: 'job_1',
  })
  t.equal(
    await outcomes.append([{ decisions: [decision(1), flagged] }, { decisions: [decision(3), decision(1)] }]),
    3,
    'a decision twice in one write is stored once',
  )
  t.equal(await outcomes.append([{ decisions: [flagged, decision(4)] }]), 1, 'one stored before is not stored again')
  t.equal(await outcomes.append([]), 0)

  t.match(await outcomes.decision('r-2'), {
    record_seq: 2,
    account_id: 'acc-1',
    decision: 'review',
    score: 50,
    tags: ['velocity'],
    fired: ['burst'],
    shadow_hits: ['new-device'],
    stopped_by: null,
    rule_set_version: 7,
    record_time: '2026-01-01T10:00:00.123Z',
    received_at: '2026-11-24T08:00:00.000Z',
    latency_ms: 250,
  })
  t.match(await outcomes.decision('r-3'), { account_id: null, fired: [], shadow_hits: [] })
  t.equal(await outcomes.jobEvaluatedCount('job_1'), 1)
  const live = await outcomes.alerts({ limit: 10 })
  t.same(
    live.alerts.map((a) => [a.record_id, a.rule_id, a.mode, a.features]),
    [['r-2', 'burst', 'live', { tx_10m: 6 }]],
  )
  const shadow = await outcomes.alerts({ limit: 10, mode: 'shadow' })
  t.same(
    shadow.alerts.map((a) => [a.rule_id, a.features]),
    [['new-device', { devices_1d: 3.5 }]],
  )
  const stats = await outcomes.stats(Date.parse('2026-11-24T07:00:00Z'))
  t.same(stats.decisions, { approve: 3, review: 1, block: 0 })
  t.same(
    stats.rules.map((r) => [r.rule_id, r.evaluations, r.hits, r.shadow_hits, r.errors, r.mean_micros, r.max_micros]),
    [
      ['burst', 4, 1, 0, 0, 4.5, 9],
      ['new-device', 4, 0, 1, 0, 4.75, 5],
    ],
    'counters count each stored decision once',
  )
})

t.test("a batch job's decisions come without evaluations: their batch's counts are stored once with them", async (t) => {
  const outcomes = await openOutcomes(t, join(tempDir(t), 'j.duckdb'))
  const minute = Date.parse('2026-11-24T08:00:00Z')
  const decision = (seq: number) => storedDecision(seq, { evaluate_rules: false, job_id: 'job_hist', evaluated_at: '2026-11-24T08:00:01.000Z' })
  const counters = (n: number): RuleCounterRow[] => [
    { minute, rule_id: 'burst', rule_version: 1, evaluations: n, hits: 0, shadow_hits: 0, errors: 0, micros_total: 2 * n, micros_max: 4 },
  ]
  const first = { decisions: [decision(1024), decision(1025)], counters: counters(2) }
  const second = { decisions: [decision(2048)], counters: counters(1) }
  t.equal(await outcomes.append([first, second, first]), 3, 'a batch delivered twice in one write is stored once')
  t.equal(await outcomes.append([second]), 0, 'and once across writes')
  t.equal(await outcomes.jobEvaluatedCount('job_hist'), 3)
  const stats = await outcomes.stats(minute)
  t.same(
    stats.rules.map((r) => [r.rule_id, r.evaluations, r.mean_micros, r.max_micros]),
    [['burst', 3, 2, 4]],
    "each batch's counts once",
  )
})

t.test('a decisions file opens again after the process that opened it was killed', async (t) => {
  const path = join(tempDir(t), 'k.duckdb')
  // Opening the store alters its tables; killed before any checkpoint, those changes are only in the WAL.
  const opener = `import { AnalyticsStore, RuleOutcomeStore } from ${JSON.stringify(new URL('../storage/index.ts', import.meta.url).href)}
    await RuleOutcomeStore.open(await AnalyticsStore.open(${JSON.stringify(path)}))
    process.kill(process.pid, 'SIGKILL')`
  const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', opener], { encoding: 'utf8' })
  t.equal(child.signal, 'SIGKILL', child.stderr)
  const outcomes = await openOutcomes(t, path)
  t.same((await outcomes.stats(0)).decisions, { approve: 0, review: 0, block: 0 }, 'it opens, empty')
})

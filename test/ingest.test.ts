import { readFileSync } from 'node:fs'
import { jetstream } from '@nats-io/jetstream'
import { connect, headers } from '@nats-io/transport-node'
import t, { type Test } from 'tap'
import { generateBatch } from '../fixtures/generator.ts'
import { DECISION_BATCH_HEADERS, ENVELOPE_BATCH_HEADERS, SUBJECTS } from '../pipeline/index.ts'
import { eventually, startTestNats, startTestSluice, type TestSluice } from './helpers/sluice.ts'

type ObjectName = 'transaction' | 'account' | 'activity'

/** One valid record of each object, from the seeded generator. */
function sampleRecords(): Record<ObjectName, Record<string, unknown>> {
  const found: Partial<Record<ObjectName, Record<string, unknown>>> = {}
  for (const { object, record } of generateBatch(2000, { seed: 7, accounts: 20 })) found[object] ??= record
  return found as Record<ObjectName, Record<string, unknown>>
}

async function findRecord(s: TestSluice, object: string, recordId: string) {
  const res = await s.request('GET', `/records/${object}?view=history&record_id=${recordId}`)
  const body = (await res.json()) as { records: { record_id: string; data: Record<string, unknown>; source: string; schema_version: number }[] }
  return body.records[0]
}

t.test('ingest over HTTP, end to end', async (t) => {
  const s = await startTestSluice(t)
  const samples = sampleRecords()

  t.test('a valid record of each object is queryable within a second', async (t) => {
    for (const object of ['transaction', 'account', 'activity'] as const) {
      const posted = Date.now()
      const res = await s.request('POST', `/${object}`, samples[object])
      t.equal(res.status, 202, `${object} accepted`)
      const body = (await res.json()) as { record_id: string; stream_seq: number; schema_version: number }
      t.match(body, { record_id: String, stream_seq: Number, schema_version: 1 })
      const stored = await eventually(() => findRecord(s, object, body.record_id), 1000, 10)
      t.ok(Date.now() - posted < 1000, `${object} queryable after ${Date.now() - posted} ms`)
      t.same(
        Object.fromEntries(Object.entries(stored.data).filter(([, v]) => v !== null)),
        Object.fromEntries(Object.entries(samples[object]).filter(([, v]) => v !== null && v !== undefined)),
        `${object} stored as sent`,
      )
      t.match(stored, { source: 'api', schema_version: 1 })
    }
  })

  t.test('validation cases from fixtures/cases/record-validation.json', async (t) => {
    const { cases } = JSON.parse(readFileSync(new URL('../fixtures/cases/record-validation.json', import.meta.url), 'utf8')) as {
      cases: { name: string; object: ObjectName; set?: Record<string, unknown>; unset?: string[]; status: number; pointers: string[] }[]
    }
    for (const c of cases) {
      const record: Record<string, unknown> = { ...samples[c.object], ...c.set }
      for (const f of c.unset ?? []) delete record[f]
      // A distinct id per case, so the content-hash dedup never turns a case into a retry of another.
      const idField = `${c.object}_id`
      if (!c.unset?.includes(idField) && !(idField in (c.set ?? {}))) record[idField] = `${record[idField]}-${c.name}`
      const res = await s.request('POST', `/${c.object}`, record)
      t.equal(res.status, c.status, `${c.name}: status`)
      if (c.status !== 400) continue
      t.match(res.headers.get('content-type'), /application\/problem\+json/, `${c.name}: problem+json`)
      const problem = (await res.json()) as { code: string; errors: { pointer: string; message: string; expected: string; received: string }[] }
      t.equal(problem.code, 'SLUICE_SCHEMA_MISMATCH')
      t.same(problem.errors.map((e) => e.pointer).sort(), [...c.pointers].sort(), `${c.name}: every offending field named`)
      for (const e of problem.errors) t.ok(e.message && e.expected && e.received, `${c.name}: ${e.pointer} says what was expected and received`)
    }
  })

  t.test('a retried POST is stored once and answered with the original record id', async (t) => {
    const record = { ...samples.transaction, transaction_id: 'retry-1' }
    const headers = { 'idempotency-key': 'client-retry-42' }
    const first = (await (await s.request('POST', '/transaction', record, headers)).json()) as { record_id: string; duplicate: boolean }
    const retry = await s.request('POST', '/transaction', record, headers)
    t.equal(retry.status, 202)
    const second = (await retry.json()) as { record_id: string; duplicate: boolean }
    t.equal(second.record_id, first.record_id, 'same record id')
    t.equal(second.duplicate, true)
    // Without a key, an identical body is a retry too; a changed one is a new record.
    const noKey = { ...samples.transaction, transaction_id: 'retry-2' }
    const a = (await (await s.request('POST', '/transaction', noKey)).json()) as { record_id: string }
    const b = (await (await s.request('POST', '/transaction', noKey)).json()) as { record_id: string }
    const changed = (await (await s.request('POST', '/transaction', { ...noKey, status: 'reversed' })).json()) as { record_id: string }
    t.equal(b.record_id, a.record_id)
    t.not(changed.record_id, a.record_id)
    await eventually(() => findRecord(s, 'transaction', changed.record_id))
    const versions = async (id: string, view: string) => {
      const res = await s.request('GET', `/records/transaction?view=${view}&transaction_id=${id}`)
      return ((await res.json()) as { records: { data: { status: string } }[] }).records
    }
    t.equal((await versions('retry-1', 'history')).length, 1, 'a retry with the same key is stored once')
    t.equal((await versions('retry-2', 'history')).length, 2, 'an identical retry is stored once, a changed record is a new version')
    t.same(
      (await versions('retry-2', 'current')).map((r) => r.data.status),
      ['reversed'],
      'the current view shows the latest version',
    )
  })

  t.test('bad requests get clear errors and never a 5xx', async (t) => {
    const expectProblem = async (res: Response, status: number, code: string) => {
      t.equal(res.status, status, code)
      t.match(res.headers.get('content-type'), /application\/problem\+json/)
      const body = (await res.json()) as { code: string; status: number; title: string; detail: string }
      t.match(body, { code, status, title: String, detail: String })
      return body
    }
    await expectProblem(await s.request('POST', '/transaction', samples.transaction, { authorization: '' }), 401, 'SLUICE_UNAUTHORIZED')
    await expectProblem(await s.request('POST', '/transaction', samples.transaction, { authorization: 'Bearer sk_nope' }), 401, 'SLUICE_UNAUTHORIZED')
    await expectProblem(await s.request('POST', '/nonsense', { a: 1 }), 404, 'SLUICE_UNKNOWN_OBJECT')
    await expectProblem(
      await s.request('POST', '/transaction', 'amount=1', { 'content-type': 'application/x-www-form-urlencoded' }),
      415,
      'SLUICE_UNSUPPORTED_MEDIA_TYPE',
    )
    await expectProblem(await s.request('POST', '/transaction', 'hello', { 'content-type': 'text/plain' }), 415, 'SLUICE_UNSUPPORTED_MEDIA_TYPE')
    const big = { ...samples.transaction, description: 'x'.repeat(2 * 1024 * 1024) }
    await expectProblem(await s.request('POST', '/transaction', big), 413, 'SLUICE_PAYLOAD_TOO_LARGE')
    const bad = await expectProblem(await s.request('POST', '/transaction', '{"amount": 1,\n "currency": }'), 400, 'SLUICE_INVALID_JSON')
    t.match(bad.detail, /line 2, column 14/, 'parse position given')
    await expectProblem(await s.request('POST', '/transaction', '[1, 2]'), 400, 'SLUICE_SCHEMA_MISMATCH')
    await expectProblem(await s.request('GET', '/records/transaction?no_such_field=1'), 400, 'SLUICE_BAD_REQUEST')
    await expectProblem(await s.request('GET', '/no/such/route'), 404, 'SLUICE_NOT_FOUND')
    t.equal((await s.request('GET', '/healthz', undefined, { authorization: '' })).status, 200, 'health needs no key')
  })
})

t.test('scopes: a read-only key cannot ingest, an ingest key cannot read', async (t) => {
  const s = await startTestSluice(t)
  const { ApiKeyStore, openStateDb } = await import('../storage/index.ts')
  const { join } = await import('node:path')
  const keys = new ApiKeyStore(openStateDb(join(s.dataDir, 'state.db')))
  const reader = keys.create({ name: 'reader', scopes: ['read'] }).key
  const writer = keys.create({ name: 'writer', scopes: ['ingest'] }).key
  const record = sampleRecords().account
  const asReader = await s.request('POST', '/account', record, { authorization: `Bearer ${reader}` })
  t.equal(asReader.status, 403)
  t.match(await asReader.json(), { code: 'SLUICE_FORBIDDEN' })
  t.equal((await s.request('POST', '/account', record, { authorization: `Bearer ${writer}` })).status, 202)
  t.equal((await s.request('GET', '/records/account', undefined, { authorization: `Bearer ${writer}` })).status, 403)
  t.equal((await s.request('GET', '/records/account', undefined, { authorization: `Bearer ${reader}` })).status, 200)
  const writerId = keys.list().find((k) => k.name === 'writer')?.id as string
  keys.revoke(writerId)
  // Revoked through another connection, as the CLI does: refused within the 100 ms the server takes to notice.
  await new Promise((r) => setTimeout(r, 150))
  t.equal((await s.request('POST', '/account', record, { authorization: `Bearer ${writer}` })).status, 401, 'revoked key refused')
})

t.test('JetStream down: 503 with Retry-After, and nothing half-stored', async (t) => {
  const nats = await startTestNats(t)
  const s = await startTestSluice(t, { natsUrl: nats.url, config: { http: { publishTimeoutMs: 500 } } })
  const record = { ...sampleRecords().transaction, transaction_id: 'while-down' }
  await nats.stop()
  const res = await s.request('POST', '/transaction', record)
  t.equal(res.status, 503)
  t.ok(res.headers.get('retry-after'), 'Retry-After set')
  t.match(await res.json(), { code: 'SLUICE_STREAM_UNAVAILABLE' })
  t.equal((await s.request('GET', '/readyz', undefined, { authorization: '' })).status, 503, 'not ready while NATS is down')
  // Bring the same server back (same store): the refused record must not appear.
  const { startNatsServer } = await import('../pipeline/index.ts')
  const again = await startNatsServer({ storeDir: nats.storeDir, port: nats.port })
  t.teardown(() => again.stop())
  await eventually(async () => ((await s.request('GET', '/readyz', undefined, { authorization: '' })).status === 200 ? true : undefined), 10_000, 100)
  const ok = await s.request('POST', '/transaction', { ...record, transaction_id: 'after-recovery' })
  t.equal(ok.status, 202, 'accepted again after recovery')
  const { record_id } = (await ok.json()) as { record_id: string }
  await eventually(() => findRecord(s, 'transaction', record_id), 5000)
  const res2 = await s.request('GET', '/records/transaction?transaction_id=while-down')
  t.same(((await res2.json()) as { records: unknown[] }).records, [], 'the refused record was not stored')
})

t.test('roles run apart: ingress in one process, sink in another, one NATS', async (t) => {
  const nats = await startTestNats(t)
  const sinkOnly = await startTestSluice(t, { natsUrl: nats.url, config: { roles: ['sink'] } })
  t.equal(sinkOnly.sluice.httpUrl, undefined, 'the sink process serves no HTTP')
  const ingressOnly = await startTestSluice(t, { natsUrl: nats.url, dataDir: sinkOnly.dataDir, config: { roles: ['ingress'] } })
  const res = await ingressOnly.request('POST', '/activity', sampleRecords().activity)
  t.equal(res.status, 202)
  const { record_id } = (await res.json()) as { record_id: string }
  const stored = await eventually(() => findRecord(ingressOnly, 'activity', record_id), 2000)
  t.equal(stored.source, 'api', 'queried through the sink process over NATS')
  await sinkOnly.stop()
  const unavailable = await ingressOnly.request('GET', '/records/activity')
  t.equal(unavailable.status, 503, 'queries answer 503 while no sink runs')
})

/** Sluice, and a JetStream client of its NATS to publish what Sluice never would. */
async function sluiceWithPublisher(t: Test) {
  const nats = await startTestNats(t)
  const s = await startTestSluice(t, { natsUrl: nats.url })
  const nc = await connect({ servers: nats.url })
  t.teardown(() => nc.close())
  return { s, js: jetstream(nc) }
}

t.test('messages on the record stream that hold no record are set aside; records after them are stored and decided', async (t) => {
  const { s, js } = await sluiceWithPublisher(t)
  const batchHeaders = headers()
  batchHeaders.set(ENVELOPE_BATCH_HEADERS.count, '1')
  batchHeaders.set(ENVELOPE_BATCH_HEADERS.schemaVersion, '1')
  batchHeaders.set(ENVELOPE_BATCH_HEADERS.receivedAt, String(Date.now()))
  // An array cut short, an array without its headers, an object that is no envelope, and an envelope whose
  // record is no object (the sink reads an envelope's other members without parsing its record).
  await js.publish(SUBJECTS.record('transaction', 3), '[{"record_id":"x"', { headers: batchHeaders })
  await js.publish(SUBJECTS.record('transaction', 3), '[]')
  await js.publish(SUBJECTS.record('transaction', 3), '{"hello":"world"}')
  await js.publish(
    SUBJECTS.record('transaction', 3),
    `{"record_id":"y","object":"transaction","received_at":${Date.now()},"source":"api","schema_version":1,"record":"no"}`,
  )
  const record = { ...sampleRecords().transaction, transaction_id: 'after-the-poison' }
  const res = await s.request('POST', '/transaction', record)
  t.equal(res.status, 202)
  const { record_id } = (await res.json()) as { record_id: string }
  t.ok(await eventually(() => findRecord(s, 'transaction', record_id), 5000), 'the record after them is stored')
  const decision = await s.request('GET', `/decisions/${record_id}?wait_ms=5000`)
  t.equal(decision.status, 200, 'and decided')
  const metric = async (name: string) => {
    const text = await (await s.request('GET', '/metrics')).text()
    return Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'm').exec(text)?.[1] ?? 0)
  }
  t.equal(await metric('sluice_sink_poison_messages_total'), 4, 'the sink terminated and counted all four')
  t.equal(await metric('sluice_rule_poison_messages_total'), 4, 'so did the rule stage')
})

t.test('messages on the decision stream that hold no decisions are set aside; decisions after them are stored', async (t) => {
  const { s, js } = await sluiceWithPublisher(t)
  const badCounters = headers()
  badCounters.set(DECISION_BATCH_HEADERS.counters, '[{"minute":')
  // An object that is no array, an array cut short, and a batch whose counts cannot be read.
  await js.publish(SUBJECTS.decisionBatch(3), '{"record_id":"x"}')
  await js.publish(SUBJECTS.decisionBatch(3), '[{"record_id":"x"')
  await js.publish(SUBJECTS.decisionBatch(3), '[]', { headers: badCounters })
  const res = await s.request('POST', '/transaction', { ...sampleRecords().transaction, transaction_id: 'after-bad-decisions' })
  const { record_id } = (await res.json()) as { record_id: string }
  const decision = await s.request('GET', `/decisions/${record_id}?wait_ms=5000`)
  t.equal(decision.status, 200, 'the next decision is stored')
})

import { readFileSync } from 'node:fs'
import { connect } from '@nats-io/transport-node'
import t from 'tap'
import { runCli } from './helpers/cli.ts'
import { eventually, startTestNats, startTestSluice, type TestSluice } from './helpers/sluice.ts'

interface EvolutionCase {
  name: string
  flag: 'none' | 'query' | 'body'
  set?: Record<string, unknown>
  unset?: string[]
  status: number
  code?: string
  pointers?: string[]
  after: Record<string, unknown> | null
  stored?: Record<string, unknown>
}
const fixture = JSON.parse(readFileSync(new URL('../fixtures/cases/schema-evolution.json', import.meta.url), 'utf8')) as {
  before: { fields: Record<string, unknown> }
  base_record: Record<string, unknown>
  cases: EvolutionCase[]
}

interface SchemaVersionBody {
  version: number
  reason: string
  created_by: string
  trigger_record_id?: string | null
  diff: { op: string; field?: string }[]
  schema: { fields: Record<string, { type: string; nullable?: boolean }> }
}

async function json<T>(res: Response | Promise<Response>): Promise<T> {
  return (await (await res).json()) as T
}

function postWithFlag(s: TestSluice, object: string, record: Record<string, unknown>, flag: EvolutionCase['flag']) {
  if (flag === 'query') return s.request('POST', `/${object}?update_schema=true`, record)
  if (flag === 'body') return s.request('POST', `/${object}`, { ...record, update_schema: true })
  return s.request('POST', `/${object}`, record)
}

async function historyOf(s: TestSluice, object: string, filter = '') {
  return (
    await json<{ records: { record_id: string; schema_version: number; data: Record<string, unknown> }[] }>(
      s.request('GET', `/records/${object}?view=history&limit=1000${filter}`),
    )
  ).records
}

t.test('update_schema rules, from fixtures/cases/schema-evolution.json', async (t) => {
  const s = await startTestSluice(t)
  for (const [i, c] of fixture.cases.entries()) {
    const object = `payment_case_${i}`
    t.equal((await s.request('PUT', `/schema/${object}`, fixture.before)).status, 201, `${c.name}: object created`)
    const record: Record<string, unknown> = { ...fixture.base_record, ...c.set }
    for (const f of c.unset ?? []) delete record[f]
    const res = await postWithFlag(s, object, record, c.flag)
    t.equal(res.status, c.status, `${c.name}: status`)
    const body = await json<Record<string, any>>(res)
    const schema = await json<SchemaVersionBody>(s.request('GET', `/schema/${object}`))
    if (c.status === 400) {
      t.equal(body.code, c.code, `${c.name}: code`)
      t.same(body.errors.map((e: { pointer: string }) => e.pointer).sort(), c.pointers, `${c.name}: every difference named`)
      if (c.code === 'SLUICE_SCHEMA_INCOMPATIBLE') t.match(body.detail, /manual schema update is needed/, `${c.name}: says a manual update is needed`)
    }
    if (c.after === null) {
      t.equal(schema.version, 1, `${c.name}: no new version`)
      t.same(schema.schema.fields, fixture.before.fields, `${c.name}: schema unchanged`)
    } else {
      t.equal(schema.version, 2, `${c.name}: one new version`)
      t.equal(body.schema_changed, true, `${c.name}: the answer says the schema changed`)
      t.equal(body.schema_version, 2, `${c.name}: and gives the new version`)
      t.match(schema, { reason: 'auto', trigger_record_id: body.record_id }, `${c.name}: auto, with the triggering record`)
      for (const [field, spec] of Object.entries(c.after)) t.same(schema.schema.fields[field], spec, `${c.name}: ${field} after`)
    }
    if (c.stored) {
      const [row] = await eventually(async () => {
        const rows = await historyOf(s, object, `&record_id=${body.record_id}`)
        return rows.length ? rows : undefined
      })
      t.match(row.data, c.stored, `${c.name}: stored row`)
      t.notOk('update_schema' in row.data, `${c.name}: the flag is not part of the record`)
    }
  }
})

t.test('history: old rows read null in a new column and keep values of a field made nullable', async (t) => {
  const s = await startTestSluice(t)
  await s.request('PUT', '/schema/payment', fixture.before)
  const old = await json<{ record_id: string }>(s.request('POST', '/payment', fixture.base_record))
  const evolved = await json<{ record_id: string; schema_version: number }>(
    s.request('POST', '/payment?update_schema=true', { payment_id: 'p-2', paid_at: '2026-02-02T10:00:00Z', amount: 5, note: 'second', promo_code: 'X1' }),
  )
  t.equal(evolved.schema_version, 2)
  const rows = await eventually(async () => {
    const rows = await historyOf(s, 'payment')
    return rows.length === 2 ? rows : undefined
  })
  const byId = new Map(rows.map((r) => [r.record_id, r]))
  t.match(
    byId.get(old.record_id),
    { schema_version: 1, data: { promo_code: null, channel: 'web', payment_id: 'p-1' } },
    'old row: null in the new column, its channel kept',
  )
  t.match(
    byId.get(evolved.record_id),
    { schema_version: 2, data: { promo_code: 'X1', channel: null } },
    'new row: stored under version 2, null for the missing field',
  )
  // Without the flag, later records follow the new version: the field may be left out.
  t.equal((await s.request('POST', '/payment', { payment_id: 'p-3', paid_at: '2026-02-03T10:00:00Z', amount: 1, note: null })).status, 202)

  const history = (await runCli(['schema', 'history', 'payment'], { SLUICE_DATA_DIR: s.dataDir })).stdout
  t.match(history, /v1 .* manual/, 'the CLI lists the manual first version')
  t.match(history, new RegExp(`v2 .* auto \\(record ${evolved.record_id}\\)`), 'and the auto change, with its record')
  t.match(history, /\+ promo_code: string, nullable/, 'what it added')
  t.match(history, /~ channel: now nullable/, 'and what it made nullable')
  const diff = (await runCli(['schema', 'diff', 'payment', '1', '2'], { SLUICE_DATA_DIR: s.dataDir })).stdout
  t.match(diff, /payment v1 -> v2/)
  t.match(diff, /\+ promo_code/)
})

t.test('20 concurrent POSTs adding the same field make exactly one version', async (t) => {
  const s = await startTestSluice(t)
  await s.request('PUT', '/schema/payment', fixture.before)
  const results = await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      json<{ schema_version: number }>(postWithFlag(s, 'payment', { ...fixture.base_record, payment_id: `c-${i}`, risk_flag: true }, 'query')),
    ),
  )
  t.same(new Set(results.map((r) => r.schema_version)), new Set([2]), 'all 20 stored under version 2')
  const { versions } = await json<{ versions: SchemaVersionBody[] }>(s.request('GET', '/schema/payment/versions'))
  t.equal(versions.length, 2, 'one new version, not twenty')
  t.match(versions[1].diff, [{ op: 'add_field', field: 'risk_flag' }])
})

t.test('versions survive a restart, and a second ingress process sees a change made through the first', async (t) => {
  const nats = await startTestNats(t)
  const first = await startTestSluice(t, { natsUrl: nats.url })
  const second = await startTestSluice(t, { natsUrl: nats.url, dataDir: first.dataDir, config: { roles: ['ingress'] } })
  // Warm the second process's cache with version 1 before the change.
  t.equal((await second.request('POST', '/account?update_schema=false', { nope: 1 })).status, 400)
  const watcher = await connect({ servers: nats.url })
  t.teardown(() => watcher.close())
  const events: SchemaVersionBody[] = []
  watcher.subscribe('sluice.schema.changed.>', {
    callback: (_e, m) => {
      events.push(m.json())
    },
  })
  await watcher.flush()
  const account = {
    account_id: 'acc-1',
    customer_id: 'cus-1',
    account_type: 'checking',
    status: 'active',
    currency: 'EUR',
    country: 'DE',
    opened_at: '2025-01-01T00:00:00Z',
    updated_at: '2026-01-01T00:00:00Z',
    kyc_verified: true,
  }
  const changed = await json<{ schema_version: number }>(first.request('POST', '/account?update_schema=true', { ...account, segment: 'premium' }))
  t.equal(changed.schema_version, 2)
  const onSecond = await second.request('POST', '/account', { ...account, account_id: 'acc-2', segment: 'retail' })
  t.equal(onSecond.status, 202, 'the second process accepts the new field without the flag')
  t.equal((await json<{ schema_version: number }>(onSecond)).schema_version, 2)
  await eventually(async () => (events.length > 0 ? true : undefined))
  t.match(events[0], { object: 'account', version: 2, reason: 'auto', diff: [{ op: 'add_field', field: 'segment' }] }, 'a plain NATS subscriber saw the change')

  await second.stop()
  await first.stop()
  const again = await startTestSluice(t, { natsUrl: nats.url, dataDir: first.dataDir })
  const { versions } = await json<{ versions: SchemaVersionBody[] }>(again.request('GET', '/schema/account/versions'))
  t.same(
    versions.map((v) => [v.version, v.reason]),
    [
      [1, 'default'],
      [2, 'auto'],
    ],
    'every version kept across a restart',
  )
  const rows = await historyOf(again, 'account')
  t.same(rows.map((r) => r.data.segment).sort(), ['premium', 'retail'])
})

t.test('manual schema changes: create an object, refuse what stored data cannot satisfy', async (t) => {
  const s = await startTestSluice(t)
  const created = await s.request('PUT', '/schema/chargeback', {
    id_field: 'chargeback_id',
    fields: { chargeback_id: { type: 'string' }, amount: { type: 'string' }, reason_code: { type: 'string', nullable: true } },
  })
  t.equal(created.status, 201, 'a new object type')
  t.match(await json(created), { object: 'chargeback', version: 1, reason: 'manual', created: true })
  t.equal((await s.request('POST', '/chargeback', { chargeback_id: 'cb-1', amount: '12.50' })).status, 202, 'ingested like the built-in objects')
  t.equal((await s.request('POST', '/chargeback', { chargeback_id: 'cb-2', amount: 'n/a' })).status, 202)
  await eventually(async () => ((await historyOf(s, 'chargeback')).length === 2 ? true : undefined))

  const toNumber = {
    id_field: 'chargeback_id',
    fields: { chargeback_id: { type: 'string' }, amount: { type: 'number' }, reason_code: { type: 'string', nullable: true } },
  }
  const refused = await s.request('PUT', '/schema/chargeback', toNumber)
  t.equal(refused.status, 409)
  const problem = await json<{ code: string; detail: string; errors: { pointer: string; message: string }[] }>(refused)
  t.equal(problem.code, 'SLUICE_SCHEMA_CONFLICT')
  t.match(problem.errors, [{ pointer: '/fields/amount', message: /1 stored value/ }], 'names the field and why')

  const widened = await s.request('PUT', '/schema/chargeback', {
    ...toNumber,
    fields: { ...toNumber.fields, amount: { type: 'string' }, merchant_id: { type: 'string', nullable: true } },
  })
  t.equal(widened.status, 200)
  t.match(await json(widened), { version: 2, diff: [{ op: 'add_field', field: 'merchant_id' }] })
  const rows = await eventually(async () => {
    const rows = await historyOf(s, 'chargeback')
    return rows.every((r) => 'merchant_id' in r.data) ? rows : undefined
  })
  t.same(
    rows.map((r) => r.data.merchant_id),
    [null, null],
    'history reads null in the new column at once',
  )

  const v1 = await json<SchemaVersionBody>(s.request('GET', '/schema/chargeback/versions/1'))
  t.equal(v1.schema.fields.merchant_id, undefined)
  t.equal((await s.request('GET', '/schema/chargeback/versions/9')).status, 404)
  const reserved = await s.request('PUT', '/schema/records', toNumber)
  t.equal(reserved.status, 400)
  t.match(await json(reserved), { code: 'SLUICE_RESERVED_NAME' })
  const invalid = await s.request('PUT', '/schema/widget', { id_field: 'nope', fields: { Bad: { type: 'strin' } } })
  t.equal(invalid.status, 400)
  t.match(await json(invalid), { code: 'SLUICE_INVALID_SCHEMA', errors: [{ pointer: String }] })
  t.equal((await s.request('POST', '/widget', {})).status, 404, 'an invalid PUT creates nothing')
})

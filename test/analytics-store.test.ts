import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { encodeEnvelope } from '../pipeline/index.ts'
import { AnalyticsStore, type EnvelopeRow, type ObjectSchemaDoc } from '../storage/index.ts'
import { tempDir } from './helpers/sluice.ts'

const schema = JSON.parse(readFileSync(new URL('../fixtures/schemas/activity.json', import.meta.url), 'utf8')) as ObjectSchemaDoc

function row(seq: number): EnvelopeRow {
  const envelope = encodeEnvelope({
    record_id: `r-${seq}`,
    object: 'activity',
    received_at: Date.now(),
    source: 'api',
    schema_version: 1,
    record: { activity_id: `a-${seq}`, account_id: 'acc-1', event_type: 'login', occurred_at: '2026-01-01T00:00:00Z' },
  })
  return { seq, envelope: Buffer.from(envelope).toString() }
}

t.test('a record delivered twice, in one batch or across batches, is stored once', async (t) => {
  const store = await AnalyticsStore.open(join(tempDir(t), 'a.duckdb'))
  t.teardown(() => store.close())
  await store.ensureTable(schema)
  t.equal(await store.append('activity', [row(1), row(2), row(1)]), 2, 'a redelivery inside the batch is dropped')
  t.equal(await store.append('activity', [row(2), row(3)]), 1, 'a sequence already stored is dropped')
  const page = await store.queryRecords({ object: 'activity', limit: 10, view: 'history' })
  t.same(
    page.records.map((r) => r.seq),
    [3, 2, 1],
  )
})

import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { writeCsv } from '../fixtures/generate.ts'
import { BatchJobStore, openStateDb } from '../storage/index.ts'
import { startServe } from './helpers/cli.ts'
import { eventually, startTestNats, tempDir } from './helpers/sluice.ts'

// 200,000 records end to end, twice started, with other test files running beside it on 2 cores: what this
// asserts is exactly-once, not speed (bench/ measures that).
t.setTimeout(420_000)

interface JobStatus {
  state: string
  counts: { total: number | null; processed: number; accepted: number; rejected: number; stored: number }
}

const FINAL = ['completed', 'completed_with_errors', 'failed', 'cancelled']

t.test('a job whose worker is killed mid-way completes after a restart, every record exactly once', async (t) => {
  const nats = await startTestNats(t)
  const dir = tempDir(t)
  const file = join(dir, 'transactions.csv')
  const count = await writeCsv(file, 'transaction', 200_000, { seed: 5, accounts: 2000 })
  const configFile = join(dir, 'sluice.json')
  writeFileSync(configFile, JSON.stringify({ batch: { leaseSeconds: 2 }, sink: { ackWaitSeconds: 2 } }))
  const env = { SLUICE_DATA_DIR: join(dir, 'data'), NATS_URL: nats.url, SLUICE_CONFIG: configFile, SLUICE_ADMIN_KEY: 'sk_batch_crash_admin_key_00000000' }
  const first = await startServe(t, env)
  const headers = { authorization: `Bearer ${env.SLUICE_ADMIN_KEY}` }
  const res = await fetch(`${first.url}/batch?object=transaction`, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'text/csv' },
    body: new Uint8Array(readFileSync(file)),
  })
  t.equal(res.status, 202)
  const { job_id } = (await res.json()) as { job_id: string }
  const statusOf = async (url: string) => (await (await fetch(`${url}/batch-status/${job_id}`, { headers })).json()) as JobStatus
  await eventually(async () => ((await statusOf(first.url)).counts.processed > 20_000 ? true : undefined), 60_000, 50)
  await first.stop('SIGKILL')
  t.pass('killed in the middle of the job')

  const second = await startServe(t, env)
  const done = await eventually(
    async () => {
      const status = await statusOf(second.url)
      return FINAL.includes(status.state) ? status : undefined
    },
    240_000,
    200,
  )
  t.match(done, { state: 'completed', counts: { total: count, accepted: count, rejected: 0, stored: count } })
  const stats = (await (await fetch(`${second.url}/stats`, { headers })).json()) as { objects: { object: string; total: number }[] }
  t.equal(stats.objects.find((o) => o.object === 'transaction')?.total, count, 'analytics hold every record exactly once')
})

t.test('a worker whose job was taken over notes nothing of the chunk it was making; the new holder notes it once', async (t) => {
  const jobs = new BatchJobStore(openStateDb(join(tempDir(t), 'state.db')))
  const created = jobs.create({
    object: 'transaction',
    format: 'csv',
    compressed: false,
    source: 'api',
    payload_path: '/nonexistent',
    payload_bytes: 0,
    payload_sha256: '',
    update_schema: false,
    evaluate_rules: true,
    created_by: 'test',
  })
  const now = Date.now()
  t.equal(jobs.claim('worker-a', 1000, now)?.id, created.id)
  // worker-a stalls past its lease; worker-b takes the job over.
  t.equal(jobs.claim('worker-b', 1000, now + 2000)?.id, created.id)
  const chunk = { accepted: 9, rejected: 1, errors: [{ row: 4, record_key: 'tx-4', pointer: '/amount', message: 'expected a number' }], checkpoint_row: 10 }
  t.equal(jobs.recordChunk(created.id, 'worker-a', chunk), false, 'the worker that lost the job is told so')
  t.match(jobs.get(created.id), { accepted: 0, rejected: 0, checkpoint_row: 0 }, 'and notes nothing')
  t.equal(jobs.recordChunk(created.id, 'worker-b', chunk), true)
  t.equal(jobs.recordChunk(created.id, 'worker-b', chunk), false, 'a chunk is noted once')
  t.match(jobs.get(created.id), { accepted: 9, rejected: 1, checkpoint_row: 10 })
})

import { join } from 'node:path'
import t from 'tap'
import { ApiKeyStore, openStateDb } from '../storage/index.ts'
import { runCli } from './helpers/cli.ts'
import { eventually, startTestSluice, TEST_ADMIN_KEY } from './helpers/sluice.ts'

interface Stats {
  objects: { object: string; total: number }[]
}

t.test('sluice demo streams generated data into a running Sluice, paced', async (t) => {
  const s = await startTestSluice(t)
  const started = Date.now()
  const { stdout } = await runCli(['demo', '--url', s.url, '--key', TEST_ADMIN_KEY, '--rate', '200', '--count', '300', '--seed', '8'], {})
  const elapsed = Date.now() - started
  t.match(stdout, /sent \d+ \(transaction \d+, activity \d+, account \d+\), \d+\/s, 0 rejected/, 'progress lines')
  t.match(stdout, /done: 300 sent, 0 rejected/)
  t.ok(elapsed >= 1400, `300 records at 200/s take about 1.5 s (${elapsed} ms)`)
  const totals = await eventually(async () => {
    const stats = (await (await s.request('GET', '/stats')).json()) as Stats
    const sum = stats.objects.reduce((n, o) => n + o.total, 0)
    return sum === 300 ? stats : undefined
  })
  for (const object of ['account', 'activity', 'transaction'])
    t.ok((totals.objects.find((o) => o.object === object)?.total ?? 0) > 0, `${object} records arrived`)
})

t.test('sluice demo with a key that may not ingest reports the rejection once', async (t) => {
  const s = await startTestSluice(t)
  const reader = new ApiKeyStore(openStateDb(join(s.dataDir, 'state.db'))).create({ name: 'reader', scopes: ['read'] }).key
  const { stdout } = await runCli(['demo', '--url', s.url, '--key', reader, '--rate', '100', '--count', '40'], {})
  t.equal(stdout.split('\n').filter((line) => line.includes('SLUICE_FORBIDDEN')).length, 1, 'the 403 is logged once')
  t.match(stdout, /done: 40 sent, 40 rejected/)
})

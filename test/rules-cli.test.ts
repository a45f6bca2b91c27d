import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect } from '@nats-io/transport-node'
import t from 'tap'
import { DEFAULT_RULES_FILE } from '../rules/index.ts'
import type { Alert } from '../storage/index.ts'
import { runCli, SLUICE_BIN } from './helpers/cli.ts'
import { eventually, startTestNats, startTestSluice, tempDir } from './helpers/sluice.ts'

const { bases } = JSON.parse(readFileSync(new URL('../fixtures/cases/rules.json', import.meta.url), 'utf8')) as {
  bases: Record<string, Record<string, unknown>>
}
const DEFAULT_RULES = JSON.parse(readFileSync(DEFAULT_RULES_FILE, 'utf8')) as { rules: Record<string, unknown>[] }
const ODD_AMOUNT = { id: 'odd-amount', name: 'Odd amount', object: 'transaction', order: 95, when: 'record.amount == 77.7', score: 60 }

t.test('sluice rules, alerts tail and replay from the command line', async (t) => {
  const nats = await startTestNats(t)
  const s = await startTestSluice(t, { natsUrl: nats.url })
  const env = { SLUICE_DATA_DIR: s.dataDir, NATS_URL: nats.url, SLUICE_LOG_LEVEL: 'warn' }
  const files = tempDir(t)
  const file = (name: string, content: unknown) => {
    const path = join(files, name)
    writeFileSync(path, JSON.stringify(content))
    return path
  }
  const nc = await connect({ servers: nats.url })
  t.teardown(() => nc.close())

  t.test('rules list shows the default rule set', async (t) => {
    const { stdout } = await runCli(['rules', 'list'], env)
    t.match(stdout, /^rule set v1 /)
    t.match(stdout, /transaction\s+50\s+velocity-burst\s+v1\s+\+50 high/)
    t.match(stdout, /night-time-large-payment .* \[shadow\]/)
  })

  t.test('rules test shows what each rule does with one record', async (t) => {
    const before = JSON.stringify([{ object: 'account', record: { ...bases.account, status: 'closed' } }])
    const { stdout } = await runCli(['rules', 'test', DEFAULT_RULES_FILE, '--record', JSON.stringify(bases.transaction), '--before', before], env)
    t.match(stdout, /^block {2}score 100/)
    t.match(stdout, /hit {8}account-closed-or-frozen {2}\+100/)
    t.match(stdout, /miss {7}large-amount/)
  })

  t.test('rules apply refuses an invalid file with every problem and its position', async (t) => {
    const bad = file('bad.json', {
      rules: [
        { ...ODD_AMOUNT, when: 'record.amount ==' },
        { ...ODD_AMOUNT, id: 'other', object: 'nothing' },
      ],
    })
    const failed = await runCli(['rules', 'apply', bad], env).then(
      () => undefined,
      (err: { stderr: string }) => err.stderr,
    )
    t.match(failed, /SLUICE_INVALID_RULES/)
    t.match(failed, /\/rules\/0\/when: line 1, column 17: /)
    t.match(failed, /\/rules\/1\/object: there is no object type nothing/)
  })

  t.test('alerts tail prints alerts as they are raised', async (t) => {
    const tail = spawn(process.execPath, [SLUICE_BIN, 'alerts', 'tail', '--rule', 'account-closed-or-frozen', '--count', '1', '--json'], {
      env: { ...process.env, ...env },
    })
    t.teardown(() => tail.kill())
    let stdout = ''
    let stderr = ''
    tail.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    tail.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const exited = new Promise<number | null>((resolve) => tail.once('exit', resolve))
    await eventually(async () => (stderr.includes('tailing') ? true : undefined), 15_000)
    await s.request('POST', '/account', { ...bases.account, account_id: 'acc-tail', status: 'frozen' })
    await s.request('POST', '/transaction', { ...bases.transaction, transaction_id: 'tx-tail', account_id: 'acc-tail' })
    t.equal(await exited, 0, 'stops after --count alerts')
    t.match(JSON.parse(stdout) as Alert, { rule_id: 'account-closed-or-frozen', account_id: 'acc-tail', decision: 'block' })
  })

  t.test('replay finds the hits a new rule would have raised, without touching live alerts', async (t) => {
    for (let i = 0; i < 10; i++) {
      const amount = i % 3 === 0 ? 77.7 : 12.5
      const record = { ...bases.transaction, transaction_id: `tx-replay-${i}`, account_id: `acc-replay-${i}`, amount }
      t.equal((await s.request('POST', '/transaction', record)).status, 202)
    }
    const candidate = file('candidate.json', { ...DEFAULT_RULES, rules: [...DEFAULT_RULES.rules, ODD_AMOUNT] })
    const live: string[] = []
    const replayed: Alert[] = []
    nc.subscribe('alerts.>', { callback: (_err, msg) => void live.push(msg.subject) })
    nc.subscribe('replay.alerts.>', { callback: (_err, msg) => void replayed.push(msg.json<Alert>()) })
    await nc.flush()
    const { stdout } = await runCli(['replay', '--from', '1', '--object', 'transaction', '--rules', candidate, '--json'], env)
    const report = JSON.parse(stdout)
    t.match(report.differences, [{ rule_id: 'odd-amount', replayed_hits: 4, live_hits: 0, only_replayed: 4, only_live: 0 }])
    t.match(
      report.replayed.rules.find((r: { rule_id: string }) => r.rule_id === 'odd-amount'),
      { hits: 4 },
    )
    t.ok(report.changed_decisions >= 4, 'the new rule turns approvals into reviews')
    t.equal(report.published, 0)
    const text = (await runCli(['replay', '--from', '2026-01-01T00:00:00Z', '--rules', candidate, '--publish'], env)).stdout
    t.match(text, /odd-amount +replayed 4, live 0: \+4 only replayed, -0 only live/)
    const published = Number(/published (\d+) alerts under replay\.alerts\.>/.exec(text)?.[1])
    await eventually(async () => (replayed.length >= published ? true : undefined))
    const odd = replayed.filter((a) => a.rule_id === 'odd-amount')
    t.equal(odd.length, 4, "the new rule's alerts are published apart")
    t.match(odd[0], { object: 'transaction', replay_id: /^replay-/, decision: 'review' })
    t.same(live, [], 'no live alert was raised by the replays')
  })

  t.test('rules apply makes a file the live rule set, and the running stage uses it at once', async (t) => {
    const { stdout } = await runCli(['rules', 'apply', file('new.json', { ...DEFAULT_RULES, rules: [...DEFAULT_RULES.rules, ODD_AMOUNT] })], env)
    t.match(stdout, /rule set v2\n {2}added {4}odd-amount v1\nrunning rule stages were told/)
    const fired = await eventually(async () => {
      const id = `tx-applied-${Date.now()}`
      const res = await s.request('POST', '/transaction?decision=sync', { ...bases.transaction, transaction_id: id, account_id: id, amount: 77.7 })
      const { decision } = (await res.json()) as { decision: { fired: { rule_id: string }[] } }
      return decision.fired.length > 0 ? decision.fired : undefined
    })
    t.match(fired, [{ rule_id: 'odd-amount' }])
  })

  t.test('replay --rebuild-analytics rebuilds the DuckDB file from the streams', async (t) => {
    const count = async (path: string) => (await (await s.request('GET', path)).json()) as { alerts?: unknown[]; records?: unknown[] }
    const alertsBefore = await eventually(async () => {
      const { alerts } = await count('/alerts?limit=1000')
      return alerts && alerts.length >= 2 ? alerts.length : undefined
    })
    // Decisions can be stored before the sink has written the last records: wait until it has taken them all.
    await eventually(async () => {
      const ready = (await (await s.request('GET', '/readyz')).json()) as { checks: { sink_lag?: { detail?: number } } }
      return ready.checks.sink_lag?.detail === 0 ? true : undefined
    })
    const recordsBefore = (await count('/records/transaction?view=history&limit=1000')).records?.length
    await s.stop()
    const { stdout } = await runCli(['replay', '--rebuild-analytics'], env)
    t.match(stdout, /rebuilt .*analytics\.duckdb: \d+ records, \d+ decisions; the previous file is .*\.bak/)
    const again = await startTestSluice(t, { natsUrl: nats.url, dataDir: s.dataDir })
    const after = async (path: string) => (await (await again.request('GET', path)).json()) as { alerts?: unknown[]; records?: unknown[] }
    t.equal((await after('/alerts?limit=1000')).alerts?.length, alertsBefore, 'the same alerts')
    t.equal((await after('/records/transaction?view=history&limit=1000')).records?.length, recordsBefore, 'the same records')
  })
})

import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { generateBatch } from '../fixtures/generator.ts'
import { runCli, type ServeProcess, startServe } from './helpers/cli.ts'
import { eventually, startTestNats, tempDir } from './helpers/sluice.ts'

const transactions = generateBatch(3000, { seed: 11, accounts: 30 })
  .filter((r) => r.object === 'transaction')
  .map((r) => r.record)

function post(serve: ServeProcess, key: string, path: string, body: unknown) {
  return fetch(`${serve.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
}

async function storedTransactionIds(serve: ServeProcess, key: string): Promise<string[]> {
  const ids: string[] = []
  let cursor = ''
  for (;;) {
    const res = await fetch(`${serve.url}/records/transaction?limit=1000${cursor}`, { headers: { authorization: `Bearer ${key}` } })
    const page = (await res.json()) as { records: { data: { transaction_id: string } }[]; next_cursor?: string }
    ids.push(...page.records.map((r) => r.data.transaction_id))
    if (!page.next_cursor) return ids
    cursor = `&cursor=${page.next_cursor}`
  }
}

function nextServerPids(): string[] {
  try {
    return execFileSync('pgrep', ['-x', 'nats-server'], { encoding: 'utf8' }).trim().split('\n').filter(Boolean)
  } catch {
    return []
  }
}

/** The environment of the one nats-server started since `before` was taken. */
function spawnedServerEnv(t: Test, before: string[]): string[] {
  const spawned = nextServerPids().filter((p) => !before.includes(p))
  t.equal(spawned.length, 1, 'serve spawned one nats-server')
  return readFileSync(`/proc/${spawned[0]}/environ`, 'utf8').split('\0')
}

t.test('a port in use is a one-line error naming it, and serve exits 1', async (t) => {
  const taken = createServer()
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
  t.teardown(() => taken.close())
  const { port } = taken.address() as { port: number }
  const failed = await runCli(['serve'], { SLUICE_DATA_DIR: tempDir(t), SLUICE_HTTP_PORT: String(port), SLUICE_LOG_LEVEL: 'error' }).then(
    () => undefined,
    (err: { code: number; stderr: string }) => err,
  )
  t.equal(failed?.code, 1)
  t.match(failed?.stderr, new RegExp(`^sluice: cannot listen on 127\\.0\\.0\\.1:${port}: the address is in use`, 'm'))
  t.notMatch(failed?.stderr, /at Server\./, 'no stack trace')
})

t.test('sluice serve on its own embedded nats-server: restart keeps data, key and sink position', async (t) => {
  const dataDir = tempDir(t)
  const natsBefore = nextServerPids()
  const first = await startServe(t, { SLUICE_DATA_DIR: dataDir })
  const printed = /Admin API key[^\n]*\n\s+(sk_\S+)/.exec(first.output())
  t.ok(printed, 'a generated admin key is printed on first start')
  const key = (printed as RegExpExecArray)[1]
  t.ok(spawnedServerEnv(t, natsBefore).includes('GOMAXPROCS=1'), 'it runs on one core by default (embeddedNats.cpus)')
  for (const record of transactions.slice(0, 50)) t.equal((await post(first, key, '/transaction', record)).status, 202)
  await eventually(async () => ((await storedTransactionIds(first, key)).length === 50 ? true : undefined), 3000)
  t.equal(await first.stop(), 0, 'SIGTERM exits cleanly')
  t.same(
    nextServerPids().filter((p) => !natsBefore.includes(p)),
    [],
    'the embedded nats-server was stopped too',
  )

  // The restart also takes an operator's settings for the embedded server from a config file.
  const configFile = join(dataDir, 'sluice.json')
  writeFileSync(configFile, JSON.stringify({ embeddedNats: { cpus: 0, memoryLimitMb: 300 } }))
  const natsBeforeSecond = nextServerPids()
  const second = await startServe(t, { SLUICE_DATA_DIR: dataDir, SLUICE_CONFIG: configFile })
  const natsEnvSecond = spawnedServerEnv(t, natsBeforeSecond)
  t.ok(natsEnvSecond.includes('GOMEMLIMIT=300MiB'), 'embeddedNats.memoryLimitMb becomes GOMEMLIMIT')
  t.equal(natsEnvSecond.includes('GOMAXPROCS=1'), false, 'embeddedNats.cpus 0 leaves Go its default')
  t.notMatch(second.output(), /Admin API key/, 'no new admin key on a later start')
  t.equal((await storedTransactionIds(second, key)).length, 50, 'data still there, the old key still works')
  for (const record of transactions.slice(50, 80)) t.equal((await post(second, key, '/transaction', record)).status, 202)
  const ids = await eventually(async () => {
    const ids = await storedTransactionIds(second, key)
    return ids.length >= 80 ? ids : undefined
  }, 3000)
  t.equal(ids.length, 80, 'the sink resumed where it stopped: no record twice')
  t.equal(new Set(ids).size, 80)
  t.equal(await second.stop(), 0)
})

t.test('a killed serve process loses nothing and stores nothing twice', async (t) => {
  const nats = await startTestNats(t)
  const dataDir = tempDir(t)
  // A config file as an operator would write one: a short ack wait, so the dead sink's records come back quickly.
  const configFile = join(dataDir, 'sluice.json')
  writeFileSync(configFile, JSON.stringify({ sink: { ackWaitSeconds: 2 } }))
  const env = { SLUICE_DATA_DIR: dataDir, SLUICE_CONFIG: configFile, NATS_URL: nats.url, SLUICE_ADMIN_KEY: 'sk_crash_test_admin_key_000000000' }
  const first = await startServe(t, env)
  const accepted = new Set<string>()
  const batch = transactions.slice(0, 600)
  let i = 0
  // Load from 8 concurrent clients and kill -9 the process while records are in flight.
  const clients = Array.from({ length: 8 }, async () => {
    while (i < batch.length) {
      const record = batch[i++]
      try {
        const res = await post(first, env.SLUICE_ADMIN_KEY, '/transaction', record)
        if (res.status === 202) accepted.add(record.transaction_id as string)
      } catch {
        return // connection died with the process: not accepted
      }
    }
  })
  setTimeout(() => first.child.kill('SIGKILL'), 400)
  await Promise.all(clients)
  await first.stop()
  t.ok(accepted.size > 0, `${accepted.size} records accepted before the kill`)

  const second = await startServe(t, env)
  const ids = await eventually(async () => {
    const ids = await storedTransactionIds(second, env.SLUICE_ADMIN_KEY)
    return [...accepted].every((id) => ids.includes(id)) ? ids : undefined
  }, 10_000)
  t.equal(ids.length, new Set(ids).size, 'no record stored twice')
  t.ok(ids.length >= accepted.size, 'every accepted record is stored')
  await second.stop()
})

t.test('sluice keys create, list and revoke act on a running server', async (t) => {
  const dataDir = tempDir(t)
  const env = { SLUICE_DATA_DIR: dataDir, SLUICE_ADMIN_KEY: 'sk_keys_test_admin_key_00000000000' }
  const serve = await startServe(t, env)
  const created = JSON.parse((await runCli(['keys', 'create', '--name', 'fraud-team', '--scopes', 'read', '--json'], env)).stdout)
  t.match(created, { id: /^key_/, name: 'fraud-team', scopes: ['read'], key: /^sk_/ })
  const get = (key: string) => fetch(`${serve.url}/stats`, { headers: { authorization: `Bearer ${key}` } })
  t.equal((await get(created.key)).status, 200, 'the new key reads')
  t.equal((await post(serve, created.key, '/transaction', transactions[0])).status, 403, 'but may not ingest')
  const listed = (await runCli(['keys', 'list'], env)).stdout
  t.match(listed, /fraud-team/)
  t.notMatch(listed, new RegExp(created.key), 'the secret is never listed')
  await runCli(['keys', 'revoke', created.id], env)
  t.equal((await get(created.key)).status, 401, 'a revoked key is refused at once')
  await t.rejects(runCli(['keys', 'create', '--name', 'x', '--scopes', 'superuser'], env), /unknown scope superuser/)
  await serve.stop()
})

import { readFileSync } from 'node:fs'
import t from 'tap'
import { ERROR_CODES, loadConfig, SluiceError } from '../pipeline/index.ts'

t.test('every error code is documented in docs/errors.md with its status, and nothing else is', async (t) => {
  const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8')
  const documented = new Map([...doc.matchAll(/^\| `(SLUICE_[A-Z_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], Number(m[2])]))
  for (const [code, { status }] of Object.entries(ERROR_CODES)) t.equal(documented.get(code), status, `${code} documented as ${status}`)
  t.same([...documented.keys()].sort(), Object.keys(ERROR_CODES).sort(), 'no stale codes in the doc')
})

t.test('config: defaults, environment, and every invalid setting listed at once', async (t) => {
  const config = loadConfig({ env: { SLUICE_HTTP_PORT: '9999', SLUICE_DATA_DIR: '/tmp/sluice-x', NATS_URL: 'nats://127.0.0.1:4333' } })
  t.match(config, { http: { port: 9999, bodyLimit: 1048576 }, dataDir: '/tmp/sluice-x', natsUrl: 'nats://127.0.0.1:4333', roles: ['ingress', 'sink'] })
  t.ok(Object.isFrozen(config.http), 'frozen')
  try {
    loadConfig({ env: { SLUICE_HTTP_PORT: 'eighty', SLUICE_ROLES: 'ingress,teleporter' }, overrides: { surprise: 1 } as never })
    t.fail('invalid config accepted')
  } catch (err) {
    t.ok(err instanceof SluiceError)
    const e = err as SluiceError
    t.equal(e.code, 'SLUICE_CONFIG_INVALID')
    const pointers = (e.errors ?? []).map((x) => x.pointer)
    t.ok(pointers.includes('/http/port'), 'bad port named')
    t.ok(
      pointers.some((p) => p.startsWith('/roles/1')),
      'bad role named',
    )
    t.ok(pointers.includes('/surprise'), 'unknown setting named')
  }
})

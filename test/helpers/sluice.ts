import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'
import { type ConfigInput, type EmbeddedNatsServer, loadConfig, type RunningSluice, startNatsServer, startSluice } from '../../pipeline/index.ts'

/** A fresh temporary directory, removed when the test ends. */
export function tempDir(t: Test, prefix = 'sluice-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A real `nats-server -js` on a random port with its own store, stopped in teardown. */
export async function startTestNats(t: Test, storeDir = join(tempDir(t, 'sluice-nats-'), 'store')): Promise<EmbeddedNatsServer> {
  const server = await startNatsServer({ storeDir })
  t.teardown(() => server.stop())
  return server
}

export const TEST_ADMIN_KEY = 'sk_test_admin_key_0123456789abcdef'

export interface TestSluice {
  readonly sluice: RunningSluice
  readonly url: string
  readonly dataDir: string
  /** fetch against the running API with the admin key unless headers say otherwise. */
  request(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Response>
  stop(): Promise<void>
}

/** Starts Sluice in this process against `natsUrl` (or a fresh test nats-server), on a random HTTP port. */
export async function startTestSluice(t: Test, opts: { natsUrl?: string; dataDir?: string; config?: ConfigInput } = {}): Promise<TestSluice> {
  const natsUrl = opts.natsUrl ?? (await startTestNats(t)).url
  const dataDir = opts.dataDir ?? tempDir(t)
  const config = loadConfig({
    env: {},
    overrides: { dataDir, natsUrl, adminKey: TEST_ADMIN_KEY, log: { level: 'warn' }, ...opts.config, http: { port: 0, ...(opts.config?.http as object) } },
  })
  const sluice = await startSluice(config)
  let stopped = false
  const stop = async () => {
    if (stopped) return
    stopped = true
    await sluice.stop()
  }
  t.teardown(stop)
  const url = sluice.httpUrl as string
  return {
    sluice,
    url,
    dataDir,
    stop,
    request(method, path, body, headers = {}) {
      const h: Record<string, string> = { authorization: `Bearer ${TEST_ADMIN_KEY}`, ...headers }
      let payload: string | undefined
      if (body !== undefined) {
        payload = typeof body === 'string' ? body : JSON.stringify(body)
        h['content-type'] ??= 'application/json'
      }
      return fetch(`${url}${path}`, { method, headers: h, body: payload })
    },
  }
}

/** Polls `probe` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function eventually<T>(probe: () => Promise<T | undefined>, timeoutMs = 5000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

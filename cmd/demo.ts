import { setTimeout as sleep } from 'node:timers/promises'
import { type GeneratedRecord, generate, type ObjectName } from '../fixtures/generator.ts'

/** Options of `sluice demo`. */
export interface DemoOptions {
  /** Base URL of a running Sluice, e.g. http://127.0.0.1:8080. */
  url: string
  /** An API key with the ingest scope. */
  apiKey: string
  /** Records per second (default 50). */
  rate?: number
  /** Stop after this many records (default: never). */
  count?: number
  /** Generator seed (default 42). */
  seed?: number
  /** Where the progress lines go (default console.log). */
  log?: (line: string) => void
  /** Stops the demo: no new request starts, those in flight finish. */
  signal?: AbortSignal
}

/** `sent` counts every record posted and answered; `rejected` those of them Sluice did not accept. */
export interface DemoResult {
  sent: number
  rejected: number
}

/** Enough requests in flight to keep the pace over a slow link, few enough not to flood a small instance. */
const MAX_IN_FLIGHT = 8
const REQUEST_TIMEOUT_MS = 10_000

interface Rejection {
  /** The problem's error code, or what failed: one log line per distinct code. */
  code: string
  detail: string
}

/** Streams generated records (an endless simulated period) to a running Sluice, one POST per record, paced at `rate`. */
export async function runDemo(opts: DemoOptions): Promise<DemoResult> {
  const rate = opts.rate ?? 50
  if (!(rate > 0)) throw new RangeError(`rate must be a positive number of records per second, got ${opts.rate}`)
  const log = opts.log ?? console.log
  const limit = opts.count ?? Number.POSITIVE_INFINITY
  const baseUrl = opts.url.replace(/\/+$/, '')
  const sentByObject: Record<ObjectName, number> = { transaction: 0, activity: 0, account: 0 }
  const loggedCodes = new Set<string>()
  let sent = 0
  let rejected = 0
  let sentAtLastReport = 0

  const post = async ({ object, record }: GeneratedRecord): Promise<void> => {
    const rejection = await postRecord(`${baseUrl}/${object}`, opts.apiKey, record)
    sent++
    sentByObject[object]++
    if (!rejection) return
    rejected++
    if (loggedCodes.has(rejection.code)) return
    loggedCodes.add(rejection.code)
    log(`rejected ${object} ${record[`${object}_id`]}: ${rejection.detail}`)
  }
  const report = () => {
    const { transaction, activity, account } = sentByObject
    log(`sent ${sent} (transaction ${transaction}, activity ${activity}, account ${account}), ${sent - sentAtLastReport}/s, ${rejected} rejected`)
    sentAtLastReport = sent
  }

  const inFlight = new Set<Promise<void>>()
  const timer = setInterval(report, 1000)
  const startedAt = performance.now()
  let started = 0
  try {
    for (const generated of generate({ seed: opts.seed, days: Number.POSITIVE_INFINITY })) {
      if (started >= limit) break
      // Each record has its due time, so time spent waiting on the server does not lower the rate.
      if (!(await sleepUntil(startedAt + (started * 1000) / rate, opts.signal))) break
      while (inFlight.size >= MAX_IN_FLIGHT) await Promise.race(inFlight)
      const request = post(generated).finally(() => inFlight.delete(request))
      inFlight.add(request)
      started++
    }
    await Promise.all(inFlight)
  } finally {
    clearInterval(timer)
  }
  return { sent, rejected }
}

/** Posts one record; null when Sluice accepted it. */
async function postRecord(url: string, apiKey: string, record: Record<string, unknown>): Promise<Rejection | null> {
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(record),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    })
    // Read the body even on success, so the connection goes back to the pool.
    const body = await res.text()
    if (res.ok) return null
    return { code: problemCode(body) ?? `HTTP ${res.status}`, detail: `HTTP ${res.status} ${body}` }
  } catch (err) {
    const e = err as Error & { cause?: { code?: string } }
    const code = e.cause?.code ?? e.name
    return { code, detail: `request failed: ${e.message} (${code})` }
  }
}

/** The stable `code` of an RFC 9457 problem body, if the body is one. */
function problemCode(body: string): string | undefined {
  try {
    const code = (JSON.parse(body) as { code?: unknown }).code
    return typeof code === 'string' ? code : undefined
  } catch {
    return undefined
  }
}

/** Waits until `at` (a performance.now() time); false if the signal aborted. */
async function sleepUntil(at: number, signal: AbortSignal | undefined): Promise<boolean> {
  const ms = at - performance.now()
  if (ms > 0) {
    try {
      await sleep(ms, undefined, { signal })
    } catch {
      return false
    }
  }
  return !signal?.aborted
}

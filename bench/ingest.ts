import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import autocannon, { type Result as LoadResult } from 'autocannon'
import { generateOf } from '../fixtures/generator.ts'
import { percentile, probeFreshness } from './freshness.ts'
import { cpuSeconds, natsServerPid } from './proc.ts'
import type { BenchResult, Figure, Target } from './report.ts'
import { freePort, startServerProcess, withSluiceServe } from './server-process.ts'

/** The load both servers get: keep-alive connections, one request in flight on each. */
const LOAD = { connections: 50, pipelining: 1, warmupSeconds: 2, seconds: 10 } as const
/** Records sent one by one after the load, a few in flight, each polled until queryable. */
const FRESHNESS = { records: 300, inFlight: 4, pollEveryMs: 5, timeoutMs: 10_000 } as const
/** How long accepted records may take to all become queryable before that counts as a failure. */
const DRAIN_TIMEOUT_MS = 20_000

export const INGEST_TARGETS = {
  endToEndRecordsPerSecond: { op: '>=', value: 8000 },
  ratioToBare: { op: '>=', value: 0.35 },
  freshnessP99Ms: { op: '<', value: 1000 },
} as const satisfies Record<string, Target>

/**
 * The load: realistic transactions from the seeded generator (thousands of accounts, their own times spread over
 * simulated weeks), so the rule stage's velocity windows hold what a real account's would. Every body is distinct,
 * since identical bodies are deduplicated. Enough for the warm-ups and loads of both servers at the targets.
 */
const LOAD_POOL_SIZE = 400_000
let loadPool: string[] | undefined
let nextLoadBody = 0
function loadBodies(): string[] {
  if (loadPool) return loadPool
  loadPool = []
  for (const record of generateOf('transaction', { seed: 17, accounts: 5000, days: Number.POSITIVE_INFINITY })) {
    if (loadPool.push(JSON.stringify(record)) >= LOAD_POOL_SIZE) break
  }
  return loadPool
}

const progress = (message: string) => process.stderr.write(`ingest: ${message}\n`)

function runLoad(url: string, headers: Record<string, string>, seconds: number): PromiseLike<LoadResult> {
  return autocannon({
    url: `${url}/transaction`,
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/json' },
    requests: [
      {
        setupRequest: (request: Record<string, unknown>) => {
          const pool = loadBodies()
          return { ...request, body: pool[nextLoadBody++ % pool.length] }
        },
      },
    ],
    connections: LOAD.connections,
    pipelining: LOAD.pipelining,
    duration: seconds,
  })
}

interface LoadSummary {
  requests_per_second: number
  completed: number
  accepted_202: number
  non_202: number
  /** Requests that got no answer at all: connection errors and timeouts. */
  unanswered: number
  status_codes: Record<string, number>
  latency_ms: { p50: number; p99: number; max: number }
}

function summarizeLoad(result: LoadResult): LoadSummary {
  const accepted = result.statusCodeStats['202']?.count ?? 0
  return {
    requests_per_second: result.requests.total / result.duration,
    completed: result.requests.total,
    accepted_202: accepted,
    non_202: result.requests.total - accepted,
    unanswered: result.errors,
    status_codes: Object.fromEntries(Object.entries(result.statusCodeStats).map(([code, { count }]) => [code, count])),
    latency_ms: { p50: result.latency.p50, p99: result.latency.p99, max: result.latency.max },
  }
}

/**
 * CPU time per answered request while a load ran, in µs: the server process (all its threads), its nats-server
 * when it has one, and this process, which is the load generator. Unlike requests per second, these barely move
 * with the machine's speed from one minute to the next, so they show what a change to Sluice costs or saves.
 */
interface CpuPerRequest {
  server_us: number | null
  nats_server_us: number | null
  load_generator_us: number
}

async function measureCpu(pids: { server: number; nats: number | null }, load: () => PromiseLike<LoadSummary>): Promise<LoadSummary & { cpu: CpuPerRequest }> {
  const natsCpu = () => (pids.nats === null ? null : cpuSeconds(pids.nats))
  const before = { server: cpuSeconds(pids.server), nats: natsCpu(), self: process.cpuUsage() }
  const summary = await load()
  const after = { server: cpuSeconds(pids.server), nats: natsCpu(), self: process.cpuUsage(before.self) }
  const perRequest = (start: number | null, end: number | null) => (start === null || end === null ? null : ((end - start) * 1e6) / summary.completed)
  return {
    ...summary,
    cpu: {
      server_us: perRequest(before.server, after.server),
      nats_server_us: perRequest(before.nats, after.nats),
      load_generator_us: (after.self.user + after.self.system) / summary.completed,
    },
  }
}

function loadProblems(server: string, load: LoadSummary): string[] {
  const problems: string[] = []
  if (load.non_202 > 0) problems.push(`${server} answered ${load.non_202} requests with a status other than 202: ${JSON.stringify(load.status_codes)}`)
  if (load.unanswered > 0) problems.push(`${server} left ${load.unanswered} requests without an answer (connection errors or timeouts)`)
  return problems
}

/**
 * The two baselines Sluice is compared with: bare fastify (the issue's), and the least the ingest path's job takes
 * on this stack (fastify, a JetStream publish awaiting its ack, DuckDB storage by a consumer, nothing else), whose
 * ratio to the bare server is the ceiling of Sluice's on this machine.
 */
const BASELINES = {
  bare: { name: 'bare fastify server', script: 'bench/bare-server.ts', portVariable: 'BARE_SERVER_PORT' },
  minimal: { name: 'minimal pipeline server', script: 'bench/minimal-pipeline-server.ts', portVariable: 'MINIMAL_SERVER_PORT' },
} as const

async function measureBaseline(
  baseline: (typeof BASELINES)[keyof typeof BASELINES],
  headers: Record<string, string>,
): Promise<LoadSummary & { cpu: CpuPerRequest }> {
  const port = await freePort()
  progress(`starting the ${baseline.name}`)
  const url = `http://127.0.0.1:${port}`
  const server = await startServerProcess({
    name: baseline.name,
    args: ['--import', 'tsx', baseline.script],
    env: { ...process.env, [baseline.portVariable]: String(port) },
    url,
  })
  try {
    progress(`${baseline.name}: ${LOAD.warmupSeconds} s warm-up, ${LOAD.seconds} s load`)
    await runLoad(url, headers, LOAD.warmupSeconds)
    return await measureCpu({ server: server.pid, nats: await natsServerPid(server.pid) }, async () => summarizeLoad(await runLoad(url, headers, LOAD.seconds)))
  } finally {
    await server.stop()
  }
}

/** Sluice's HTTP API as the bench uses it. */
class SluiceClient {
  constructor(
    readonly url: string,
    readonly headers: Record<string, string>,
  ) {}

  async get<T>(path: string): Promise<T> {
    const res = await fetch(`${this.url}${path}`, { headers: this.headers })
    if (res.status !== 200) throw new Error(`GET ${path} answered ${res.status}: ${await res.text()}`)
    return (await res.json()) as T
  }

  async storedTransactions(): Promise<number> {
    const stats = await this.get<{ objects: { object: string; total: number }[] }>('/stats')
    return stats.objects.find((o) => o.object === 'transaction')?.total ?? 0
  }

  /** Polls /stats until at least `count` transactions are stored; when that was seen (Date.now()), or null on timeout. */
  async waitUntilStored(count: number, timeoutMs: number): Promise<number | null> {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      if ((await this.storedTransactions()) >= count) return Date.now()
      await sleep(20)
    }
    return null
  }

  /**
   * Polls /stats until at least `count` transactions are stored and the number has not moved for a few sink
   * flushes, so that records still in flight when a load stopped are counted too; returns it.
   */
  async waitUntilSettled(count: number, timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs
    let previous = -1
    while (Date.now() < deadline) {
      const stored = await this.storedTransactions()
      if (stored >= count && stored === previous) return stored
      previous = stored
      await sleep(300)
    }
    throw new Error(`Sluice did not store the ${count} records of the warm-up within ${timeoutMs} ms`)
  }
}

interface FreshnessSamples {
  postMs: number[]
  queryableMs: number[]
  problems: string[]
}

/** POST-to-queryable time of single records: POST, then poll for the record_id until a query returns it. */
async function measureFreshness(sluice: SluiceClient): Promise<FreshnessSamples> {
  const samples: FreshnessSamples = { postMs: [], queryableMs: [], problems: [] }
  let next = 0
  const sendOneAtATime = async () => {
    while (next < FRESHNESS.records && samples.problems.length === 0) {
      const probe = await probeFreshness(sluice, `fresh-${next++}`, FRESHNESS)
      if ('problem' in probe) {
        samples.problems.push(probe.problem)
        return
      }
      samples.postMs.push(probe.postMs)
      samples.queryableMs.push(probe.queryableMs)
    }
  }
  await Promise.all(Array.from({ length: FRESHNESS.inFlight }, sendOneAtATime))
  return samples
}

interface SluiceMeasurements {
  load: LoadSummary & { cpu: CpuPerRequest }
  storedBeforeLoad: number
  /** Seconds from the start of the load until every accepted record was queryable; null if they never all were. */
  endToEndSeconds: number | null
  freshness: FreshnessSamples
  problems: string[]
}

async function measureRunningSluice(sluice: SluiceClient, pid: number): Promise<SluiceMeasurements> {
  progress(`sluice: ${LOAD.warmupSeconds} s warm-up`)
  const warmup = summarizeLoad(await runLoad(sluice.url, sluice.headers, LOAD.warmupSeconds))
  // The warm-up's records must be stored before the load starts, or they would count as the load's.
  const storedBeforeLoad = await sluice.waitUntilSettled(warmup.accepted_202, DRAIN_TIMEOUT_MS)
  progress(`sluice: ${LOAD.seconds} s load`)
  const loadStarted = Date.now()
  const pids = { server: pid, nats: await natsServerPid(pid) }
  const load = await measureCpu(pids, async () => summarizeLoad(await runLoad(sluice.url, sluice.headers, LOAD.seconds)))
  const allQueryableAt = await sluice.waitUntilStored(storedBeforeLoad + load.accepted_202, DRAIN_TIMEOUT_MS)
  const problems = [...loadProblems('Sluice (warm-up)', warmup), ...loadProblems('Sluice', load)]
  if (allQueryableAt === null) problems.push(`the ${load.accepted_202} accepted records were not all stored ${DRAIN_TIMEOUT_MS} ms after the load`)
  progress(`sluice: freshness of ${FRESHNESS.records} single records`)
  const freshness = await measureFreshness(sluice)
  problems.push(...freshness.problems)
  return {
    load,
    storedBeforeLoad,
    endToEndSeconds: allQueryableAt === null ? null : (allQueryableAt - loadStarted) / 1000,
    freshness,
    problems,
  }
}

/**
 * The two set-ups measured: the ingest path issue #2 defines (HTTP ingress, JetStream, analytics sink) and
 * `sluice serve` as it starts by default, which also runs the rule stage and the batch worker on every record.
 */
const SETUPS = [
  { key: 'ingest_path', label: 'ingest path (roles ingress,sink)', roles: ['ingress', 'sink'] },
  { key: 'default_serve', label: 'sluice serve (default roles, rules on every record)', roles: undefined },
] as const

async function measureSluice(adminKey: string, roles: readonly string[] | undefined): Promise<SluiceMeasurements> {
  progress(`starting sluice serve${roles ? ` --roles ${roles.join(',')}` : ''}`)
  const { result, problems } = await withSluiceServe(adminKey, (sluice) => measureRunningSluice(new SluiceClient(sluice.url, sluice.headers), sluice.pid), {
    roles,
  })
  result.problems.push(...problems)
  return result
}

/** What one set-up's run comes to: the load's summary, end to end throughput, freshness and single POST times. */
function setupDetails(sluice: SluiceMeasurements) {
  const endToEndRecordsPerSecond = sluice.endToEndSeconds === null ? null : sluice.load.accepted_202 / sluice.endToEndSeconds
  const postMs = [...sluice.freshness.postMs].sort((a, b) => a - b)
  const queryableMs = [...sluice.freshness.queryableMs].sort((a, b) => a - b)
  return {
    ...sluice.load,
    stored_before_load: sluice.storedBeforeLoad,
    end_to_end: { records: sluice.load.accepted_202, seconds: sluice.endToEndSeconds, records_per_second: endToEndRecordsPerSecond },
    freshness_ms: { samples: queryableMs.length, p50: percentile(queryableMs, 0.5), p99: percentile(queryableMs, 0.99), max: queryableMs.at(-1) ?? null },
    single_post_ms: { p50: percentile(postMs, 0.5), p99: percentile(postMs, 0.99) },
  }
}

function setupFigures(label: string, details: ReturnType<typeof setupDetails>, bareRequestsPerSecond: number): Figure[] {
  return [
    { label: `${label}: POST /transaction`, value: details.requests_per_second, unit: 'req/s' },
    { label: '  non-202 responses', value: details.non_202, unit: '' },
    { label: '  requests unanswered', value: details.unanswered, unit: '' },
    {
      label: '  end to end (POST to queryable)',
      value: details.end_to_end.records_per_second,
      unit: 'records/s',
      target: INGEST_TARGETS.endToEndRecordsPerSecond,
    },
    {
      label: '  ratio to bare req/s',
      value: details.requests_per_second / bareRequestsPerSecond,
      unit: '',
      decimals: 2,
      target: INGEST_TARGETS.ratioToBare,
    },
    { label: '  CPU per request: Sluice', value: details.cpu.server_us, unit: 'µs' },
    { label: '  CPU per request: its nats-server', value: details.cpu.nats_server_us, unit: 'µs' },
    { label: '  CPU per request: the load generator', value: details.cpu.load_generator_us, unit: 'µs' },
    { label: '  POST latency under load p50', value: details.latency_ms.p50, unit: 'ms' },
    { label: '  POST latency under load p99', value: details.latency_ms.p99, unit: 'ms' },
    { label: '  freshness (POST to queryable) p50', value: details.freshness_ms.p50, unit: 'ms' },
    { label: '  freshness (POST to queryable) p99', value: details.freshness_ms.p99, unit: 'ms', target: INGEST_TARGETS.freshnessP99Ms },
  ]
}

/** Single-record HTTP ingest: Sluice (two set-ups) against a bare fastify server, end-to-end throughput and freshness. */
export async function runIngestBench(): Promise<BenchResult> {
  const adminKey = `bench_admin_${randomBytes(16).toString('hex')}`
  const bare = await measureBaseline(BASELINES.bare, { authorization: `Bearer ${adminKey}` })
  const minimal = await measureBaseline(BASELINES.minimal, { authorization: `Bearer ${adminKey}` })
  const measured: { setup: (typeof SETUPS)[number]; sluice: SluiceMeasurements; details: ReturnType<typeof setupDetails> }[] = []
  for (const setup of SETUPS) {
    const sluice = await measureSluice(adminKey, setup.roles)
    measured.push({ setup, sluice, details: setupDetails(sluice) })
  }

  return {
    name: 'ingest',
    figures: [
      { label: 'bare fastify POST /transaction', value: bare.requests_per_second, unit: 'req/s' },
      { label: '  CPU per request: the bare server', value: bare.cpu.server_us, unit: 'µs' },
      { label: '  CPU per request: the load generator', value: bare.cpu.load_generator_us, unit: 'µs' },
      { label: 'minimal pipeline (JetStream publish + DuckDB store only)', value: minimal.requests_per_second, unit: 'req/s' },
      { label: "  ratio to bare req/s (the ceiling of Sluice's)", value: minimal.requests_per_second / bare.requests_per_second, unit: '', decimals: 2 },
      { label: '  CPU per request: the minimal server', value: minimal.cpu.server_us, unit: 'µs' },
      { label: '  CPU per request: its nats-server', value: minimal.cpu.nats_server_us, unit: 'µs' },
      ...measured.flatMap(({ setup, details }) => setupFigures(setup.label, details, bare.requests_per_second)),
    ],
    details: {
      settings: {
        connections: LOAD.connections,
        pipelining: LOAD.pipelining,
        warmup_seconds: LOAD.warmupSeconds,
        load_seconds: LOAD.seconds,
        freshness_records: FRESHNESS.records,
        freshness_in_flight: FRESHNESS.inFlight,
        freshness_poll_every_ms: FRESHNESS.pollEveryMs,
      },
      bare,
      minimal_pipeline: minimal,
      ...Object.fromEntries(measured.map(({ setup, details }) => [setup.key, details])),
    },
    problems: [
      ...loadProblems('the bare server', bare),
      ...loadProblems('the minimal pipeline server', minimal),
      ...measured.flatMap(({ sluice }) => sluice.problems),
    ],
  }
}

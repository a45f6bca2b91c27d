import { randomBytes } from 'node:crypto'
import { createReadStream, mkdtempSync, rmSync, statSync } from 'node:fs'
import { type IncomingMessage, request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { DuckDBInstance } from '@duckdb/node-api'
import { writeCsv } from '../fixtures/generate.ts'
import { percentile, probeFreshness } from './freshness.ts'
import { cpuSeconds, natsServerPid, rssBytes } from './proc.ts'
import type { BenchResult, Figure, Target } from './report.ts'
import { withSluiceServe } from './server-process.ts'

/** A real-time record sent every so often while the job runs, waiting for its rule decision, then polled for until queryable. */
const REAL_TIME_PROBE = { everyMs: 1000, pollEveryMs: 20, timeoutMs: 120_000, syncDecision: true } as const
/** One CSV upload of this many transactions; status polled, server memory sampled, while the job runs. */
const BATCH = { records: 1_000_000, pollEveryMs: 200, rssEveryMs: 100, timelineEveryMs: 1000, progressEveryMs: 5000, timeoutMs: 20 * 60_000 } as const

export const BATCH_TARGETS = {
  endToEndSeconds: { op: '<=', value: 15 },
  ratioToDuckdb: { op: '<=', value: 15 },
  sluicePeakRssMb: { op: '<', value: 500 },
} as const satisfies Record<string, Target>

const FINAL_STATES = new Set(['completed', 'completed_with_errors', 'failed', 'cancelled'])

const progress = (message: string) => process.stderr.write(`batch: ${message}\n`)
const megabytes = (bytes: number | null) => (bytes === null ? null : bytes / 1e6)

/** `/batch-status/<job_id>`, the parts the bench reads. */
interface JobStatus {
  job_id: string
  state: string
  counts: { total: number | null; processed: number; accepted: number; rejected: number; stored: number; evaluated: number }
  timings_ms: Record<string, number | null>
  error: string | null
  first_errors: unknown[]
}

/** The highest VmRSS each of some processes reached, read from /proc every `everyMs` between start() and stop(). */
class PeakRss {
  readonly #peaks = new Map<number, number>()
  #timer?: NodeJS.Timeout

  constructor(readonly pids: number[]) {}

  start(everyMs: number): void {
    this.sample()
    this.#timer = setInterval(() => this.sample(), everyMs)
  }

  stop(): void {
    clearInterval(this.#timer)
    this.sample()
  }

  sample(): void {
    for (const pid of this.pids) {
      const rss = rssBytes(pid)
      if (rss !== null && rss > (this.#peaks.get(pid) ?? 0)) this.#peaks.set(pid, rss)
    }
  }

  peakBytes(pid: number | null): number | null {
    return pid === null ? null : (this.#peaks.get(pid) ?? null)
  }
}

/** Streams `file` as the body of POST /batch (never held in memory); the answer's status and body. */
async function uploadCsv(url: string, headers: Record<string, string>, file: string): Promise<{ status: number; body: string }> {
  const req = request(`${url}/batch?object=transaction&file_name=bench-transactions.csv`, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'text/csv', 'content-length': String(statSync(file).size) },
  })
  const answered = new Promise<IncomingMessage>((resolve, reject) => req.once('response', resolve).once('error', reject))
  // Sluice may answer an error before it has read the whole body, which cuts the upload short: the answer says why.
  const sent = pipeline(createReadStream(file), req).catch((err: Error) => err)
  const res = await answered
  let body = ''
  for await (const chunk of res.setEncoding('utf8')) body += chunk
  await sent
  return { status: res.statusCode ?? 0, body }
}

async function getStatus(url: string, headers: Record<string, string>, jobId: string): Promise<JobStatus> {
  const res = await fetch(`${url}/batch-status/${jobId}`, { headers })
  if (res.status !== 200) throw new Error(`GET /batch-status/${jobId} answered ${res.status}: ${await res.text()}`)
  return (await res.json()) as JobStatus
}

interface DuckdbBaseline {
  seconds: number
  rows: number
}

/** DuckDB's own CSV reader loading the same file into a table of a fresh database file, in this process. */
async function measureDuckdb(csvPath: string, dir: string): Promise<DuckdbBaseline> {
  const instance = await DuckDBInstance.create(join(dir, 'baseline.duckdb'))
  try {
    const connection = await instance.connect()
    try {
      const started = performance.now()
      await connection.run(`CREATE TABLE t AS SELECT * FROM read_csv('${csvPath.replaceAll("'", "''")}', header = true)`)
      const seconds = (performance.now() - started) / 1000
      const rows = Number((await connection.runAndReadAll('SELECT count(*) FROM t')).getRows()[0][0])
      return { seconds, rows }
    } finally {
      connection.closeSync()
    }
  } finally {
    instance.closeSync()
  }
}

/** One point of the job's progress, for the results file: where the time went. */
interface TimelinePoint {
  seconds: number
  state: string
  processed: number
  stored: number
  evaluated: number
  sluice_rss_mb: number | null
  sluice_cpu_seconds: number | null
  nats_cpu_seconds: number | null
}

interface SluiceMeasurements {
  uploadSeconds: number | null
  /** Upload start until a status poll saw a final state; null if none was reached in time. */
  endToEndSeconds: number | null
  final: JobStatus | null
  sluicePeakRssBytes: number | null
  natsPeakRssBytes: number | null
  idleRss: { sluice_mb: number | null; nats_mb: number | null }
  cpuSeconds: { sluice: number | null; nats: number | null }
  timeline: TimelinePoint[]
  /** POST-to-queryable times of real-time records sent one at a time while the job ran, ms. */
  realTimeFreshnessMs: number[]
  /** How long their POST ?decision=sync took to answer, ms, and how many answers said the decision was still pending. */
  realTimeDecisionMs: number[]
  realTimePending: number
  problems: string[]
}

async function measureRunningSluice(
  url: string,
  headers: Record<string, string>,
  csvPath: string,
  pids: { sluice: number; nats: number | null },
): Promise<SluiceMeasurements> {
  const measured: SluiceMeasurements = {
    uploadSeconds: null,
    endToEndSeconds: null,
    final: null,
    sluicePeakRssBytes: null,
    natsPeakRssBytes: null,
    idleRss: { sluice_mb: megabytes(rssBytes(pids.sluice)), nats_mb: pids.nats === null ? null : megabytes(rssBytes(pids.nats)) },
    cpuSeconds: { sluice: null, nats: null },
    timeline: [],
    realTimeFreshnessMs: [],
    realTimeDecisionMs: [],
    realTimePending: 0,
    problems: [],
  }
  const cpuAtStart = { sluice: cpuSeconds(pids.sluice), nats: pids.nats === null ? null : cpuSeconds(pids.nats) }
  const cpuNow = () => {
    const sluice = cpuSeconds(pids.sluice)
    const nats = pids.nats === null ? null : cpuSeconds(pids.nats)
    return {
      sluice: sluice === null || cpuAtStart.sluice === null ? null : sluice - cpuAtStart.sluice,
      nats: nats === null || cpuAtStart.nats === null ? null : nats - cpuAtStart.nats,
    }
  }
  const memory = new PeakRss(pids.nats === null ? [pids.sluice] : [pids.sluice, pids.nats])
  memory.start(BATCH.rssEveryMs)
  try {
    progress(`uploading ${(statSync(csvPath).size / 1e6).toFixed(0)} MB of CSV`)
    const started = performance.now()
    const elapsed = () => (performance.now() - started) / 1000
    const answer = await uploadCsv(url, headers, csvPath)
    measured.uploadSeconds = elapsed()
    if (answer.status !== 202) {
      measured.problems.push(`POST /batch answered ${answer.status}: ${answer.body}`)
      return measured
    }
    const { job_id: jobId } = JSON.parse(answer.body) as { job_id: string }
    progress(`job ${jobId} accepted after ${measured.uploadSeconds.toFixed(1)} s; following it`)
    // Real-time records sent while the job runs share the analytics sink with it: how soon are they queryable?
    let jobRunning = true
    const probes = (async () => {
      for (let n = 0; jobRunning; n++) {
        const probe = await probeFreshness({ url, headers }, `during-job-${n}`, REAL_TIME_PROBE)
        if ('problem' in probe) return measured.problems.push(probe.problem)
        measured.realTimeFreshnessMs.push(probe.queryableMs)
        measured.realTimeDecisionMs.push(probe.postMs)
        if (!probe.decided) measured.realTimePending++
        await sleep(REAL_TIME_PROBE.everyMs)
      }
    })()
    let lastTimeline = Number.NEGATIVE_INFINITY
    let lastProgress = performance.now()
    for (;;) {
      const status = await getStatus(url, headers, jobId)
      const now = performance.now()
      if (FINAL_STATES.has(status.state)) {
        measured.endToEndSeconds = elapsed()
        measured.final = status
        break
      }
      if (now - lastTimeline >= BATCH.timelineEveryMs) {
        lastTimeline = now
        const cpu = cpuNow()
        const { processed, stored, evaluated } = status.counts
        const rss = megabytes(rssBytes(pids.sluice))
        measured.timeline.push({
          seconds: elapsed(),
          state: status.state,
          processed,
          stored,
          evaluated,
          sluice_rss_mb: rss,
          sluice_cpu_seconds: cpu.sluice,
          nats_cpu_seconds: cpu.nats,
        })
      }
      if (now - lastProgress >= BATCH.progressEveryMs) {
        lastProgress = now
        const { processed, stored } = status.counts
        progress(
          `${elapsed().toFixed(0)} s: ${status.state}, ${processed} processed, ${stored} stored, Sluice RSS ${megabytes(memory.peakBytes(pids.sluice))?.toFixed(0)} MB peak`,
        )
      }
      if (elapsed() * 1000 > BATCH.timeoutMs) {
        measured.final = status
        measured.problems.push(`job ${jobId} was still ${status.state} after ${BATCH.timeoutMs / 1000} s: ${JSON.stringify(status.counts)}`)
        break
      }
      await sleep(BATCH.pollEveryMs)
    }
    jobRunning = false
    await probes
  } finally {
    memory.stop()
    measured.cpuSeconds = cpuNow()
    measured.sluicePeakRssBytes = memory.peakBytes(pids.sluice)
    measured.natsPeakRssBytes = memory.peakBytes(pids.nats)
  }
  return measured
}

async function measureSluice(adminKey: string, csvPath: string): Promise<SluiceMeasurements> {
  progress('starting sluice serve')
  const { result, problems } = await withSluiceServe(adminKey, async (sluice) =>
    measureRunningSluice(sluice.url, sluice.headers, csvPath, { sluice: sluice.pid, nats: await natsServerPid(sluice.pid) }),
  )
  result.problems.push(...problems)
  return result
}

/** Differences between what the job should have counted and what it did. */
function countProblems(final: JobStatus | null, records: number): string[] {
  if (!final) return []
  const problems: string[] = []
  if (final.state !== 'completed') problems.push(`the job ended ${final.state}${final.error ? `: ${final.error}` : ''}`)
  const { accepted, rejected, stored } = final.counts
  if (accepted !== records) problems.push(`the job accepted ${accepted} of ${records} records`)
  if (rejected !== 0) problems.push(`the job rejected ${rejected} records; first: ${JSON.stringify(final.first_errors.slice(0, 3))}`)
  if (stored !== records) problems.push(`the job stored ${stored} of ${records} records`)
  return problems
}

/** A CSV batch job of 1M transactions: Sluice upload to queryable, against DuckDB's own read_csv of the same file. */
export async function runBatchBench(): Promise<BenchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-batch-'))
  const removeDir = () => rmSync(dir, { recursive: true, force: true })
  process.once('exit', removeDir)
  try {
    const csvPath = join(dir, 'transactions.csv')
    progress(`generating ${BATCH.records} transactions as CSV`)
    const generateStarted = performance.now()
    const records = await writeCsv(csvPath, 'transaction', BATCH.records)
    const generateSeconds = (performance.now() - generateStarted) / 1000
    const csvBytes = statSync(csvPath).size
    progress(`generated ${records} records (${(csvBytes / 1e6).toFixed(0)} MB) in ${generateSeconds.toFixed(1)} s; DuckDB read_csv baseline`)

    const duckdb = await measureDuckdb(csvPath, dir)
    progress(`DuckDB loaded ${duckdb.rows} rows in ${duckdb.seconds.toFixed(2)} s`)
    const sluice = await measureSluice(`bench_admin_${randomBytes(16).toString('hex')}`, csvPath)

    const problems = [...sluice.problems, ...countProblems(sluice.final, records)]
    const realTimeFreshness = [...sluice.realTimeFreshnessMs].sort((a, b) => a - b)
    const realTimeDecision = [...sluice.realTimeDecisionMs].sort((a, b) => a - b)
    if (records !== BATCH.records) problems.push(`the generator wrote ${records} records, not ${BATCH.records}`)
    if (duckdb.rows !== records) problems.push(`DuckDB read ${duckdb.rows} rows of the ${records} records`)

    const seconds = (ms: number | null | undefined) => (ms === null || ms === undefined ? null : ms / 1000)
    const timings = sluice.final?.timings_ms ?? {}
    const completed = sluice.final?.state === 'completed'
    const endToEndSeconds = completed ? sluice.endToEndSeconds : null
    const recordsPerSecond = endToEndSeconds === null ? null : records / endToEndSeconds
    const ratioToDuckdb = endToEndSeconds === null ? null : endToEndSeconds / duckdb.seconds

    const figures: Figure[] = [
      { label: 'DuckDB read_csv into a table', value: duckdb.seconds, unit: 's', decimals: 2 },
      { label: 'Sluice upload (POST /batch to 202)', value: sluice.uploadSeconds, unit: 's', decimals: 2 },
      { label: 'Sluice validating (timings_ms)', value: seconds(timings.validating), unit: 's', decimals: 2 },
      { label: 'Sluice processing (timings_ms)', value: seconds(timings.processing), unit: 's', decimals: 2 },
      { label: 'Sluice end to end (upload to completed)', value: endToEndSeconds, unit: 's', decimals: 2, target: BATCH_TARGETS.endToEndSeconds },
      { label: 'Sluice end to end', value: recordsPerSecond, unit: 'records/s' },
      { label: 'ratio Sluice / DuckDB time', value: ratioToDuckdb, unit: '', decimals: 1, target: BATCH_TARGETS.ratioToDuckdb },
      { label: 'Sluice server peak RSS', value: megabytes(sluice.sluicePeakRssBytes), unit: 'MB', target: BATCH_TARGETS.sluicePeakRssMb },
      { label: 'nats-server peak RSS', value: megabytes(sluice.natsPeakRssBytes), unit: 'MB' },
      { label: 'real-time record POST to queryable during the job, p50', value: percentile(realTimeFreshness, 0.5), unit: 'ms' },
      { label: 'real-time record POST to queryable during the job, max', value: realTimeFreshness.at(-1) ?? null, unit: 'ms' },
      { label: 'its POST ?decision=sync answered, p50', value: percentile(realTimeDecision, 0.5), unit: 'ms' },
      { label: 'its POST ?decision=sync answered, max', value: realTimeDecision.at(-1) ?? null, unit: 'ms' },
      { label: 'sync answers still pending (rules.syncTimeoutMs)', value: sluice.realTimePending, unit: `of ${realTimeDecision.length}` },
      { label: 'records accepted', value: sluice.final?.counts.accepted ?? null, unit: '' },
      { label: 'records rejected', value: sluice.final?.counts.rejected ?? null, unit: '' },
      { label: 'records stored', value: sluice.final?.counts.stored ?? null, unit: '' },
    ]
    return {
      name: 'batch',
      figures,
      details: {
        settings: { records: BATCH.records, poll_every_ms: BATCH.pollEveryMs, rss_every_ms: BATCH.rssEveryMs, evaluate_rules: true },
        csv: { records, bytes: csvBytes, generate_seconds: generateSeconds },
        duckdb,
        sluice: {
          state: sluice.final?.state ?? null,
          counts: sluice.final?.counts ?? null,
          upload_seconds: sluice.uploadSeconds,
          end_to_end_seconds: sluice.endToEndSeconds,
          records_per_second: recordsPerSecond,
          timings_ms: sluice.final?.timings_ms ?? null,
          peak_rss_mb: { sluice: megabytes(sluice.sluicePeakRssBytes), nats: megabytes(sluice.natsPeakRssBytes) },
          idle_rss_mb: sluice.idleRss,
          cpu_seconds_during_job: sluice.cpuSeconds,
          timeline: sluice.timeline,
        },
        ratio_to_duckdb: ratioToDuckdb,
      },
      problems,
    }
  } finally {
    process.off('exit', removeDir)
    removeDir()
  }
}

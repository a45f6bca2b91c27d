import { createReadStream, statSync } from 'node:fs'
import { Readable, Transform } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { SingleBar } from 'cli-progress'
import type { Command } from 'commander'

/** Where the CLI finds a running Sluice, and the key it uses. */
interface ApiTarget {
  url: string
  key: string
}

interface JobStatus {
  job_id: string
  state: string
  object: string | null
  counts: { total: number | null; processed: number; accepted: number; rejected: number; stored: number }
  first_errors: { row: number; record_key: string | null; pointer: string; message: string }[]
  errors_url: string
  error: string | null
  timings_ms: Record<string, number | null>
}

const FINAL = new Set(['completed', 'completed_with_errors', 'failed', 'cancelled'])

function addTargetOptions(cmd: Command): Command {
  return cmd
    .option('--url <url>', 'Sluice HTTP base URL (SLUICE_URL)', process.env.SLUICE_URL ?? `http://127.0.0.1:${process.env.SLUICE_HTTP_PORT ?? 8080}`)
    .option('--key <key>', 'API key (SLUICE_API_KEY, else SLUICE_ADMIN_KEY)')
}

function targetOf(cmd: Command, opts: { url: string; key?: string }): ApiTarget {
  const key = opts.key ?? process.env.SLUICE_API_KEY ?? process.env.SLUICE_ADMIN_KEY
  if (!key) cmd.error('give an API key with --key or SLUICE_API_KEY')
  return { url: opts.url.replace(/\/$/, ''), key: key as string }
}

async function api(target: ApiTarget, cmd: Command, path: string, init: RequestInit = {}): Promise<Response> {
  let res: Response
  try {
    res = await fetch(`${target.url}${path}`, { ...init, headers: { authorization: `Bearer ${target.key}`, ...init.headers } })
  } catch (err) {
    return cmd.error(`cannot reach Sluice at ${target.url}: ${(err as Error).message}`)
  }
  if (!res.ok) {
    const problem = (await res.json().catch(() => ({}))) as { code?: string; detail?: string }
    return cmd.error(`${res.status} ${problem.code ?? ''}: ${problem.detail ?? res.statusText}`)
  }
  return res
}

/** Content type and encoding of a file, from its name. */
function formatOf(file: string): { type: string; gzip: boolean } {
  const gzip = file.endsWith('.gz')
  const name = gzip ? file.slice(0, -3) : file
  if (name.endsWith('.csv')) return { type: 'text/csv', gzip }
  if (name.endsWith('.ndjson') || name.endsWith('.jsonl')) return { type: 'application/x-ndjson', gzip }
  return { type: 'application/json', gzip }
}

function summary(status: JobStatus): string {
  const c = status.counts
  const lines = [
    `job ${status.job_id}: ${status.state}`,
    `  object ${status.object ?? '?'}: ${c.total ?? '?'} records, ${c.accepted} accepted, ${c.rejected} rejected, ${c.stored} queryable`,
  ]
  if (status.timings_ms.total !== null) lines.push(`  took ${((status.timings_ms.total ?? 0) / 1000).toFixed(1)} s`)
  if (status.error) lines.push(`  error: ${status.error}`)
  for (const e of status.first_errors) lines.push(`  row ${e.row}${e.record_key ? ` (${e.record_key})` : ''} ${e.pointer || '(record)'}: ${e.message}`)
  if (c.rejected > 0) lines.push(`  full error report: sluice jobs errors ${status.job_id}  (GET ${status.errors_url})`)
  return lines.join('\n')
}

async function follow(target: ApiTarget, cmd: Command, jobId: string, showProgress: boolean): Promise<JobStatus> {
  const bar = showProgress ? new SingleBar({ format: 'records   [{bar}] {percentage}% | {value}/{total} | {state}', hideCursor: true }) : undefined
  let started = false
  for (;;) {
    const status = (await (await api(target, cmd, `/batch-status/${jobId}`)).json()) as JobStatus
    if (bar && status.counts.total !== null) {
      if (!started) bar.start(status.counts.total, 0, { state: status.state })
      started = true
      bar.update(status.state.startsWith('completed') ? status.counts.total : status.counts.processed, { state: status.state })
    }
    if (FINAL.has(status.state)) {
      bar?.stop()
      return status
    }
    await sleep(250)
  }
}

/** `sluice upload` and `sluice jobs`: the batch API from the command line. */
export function registerBatchCommands(program: Command): void {
  addTargetOptions(
    program
      .command('upload <file>')
      .description('upload a CSV, NDJSON or JSON file (optionally .gz) as a batch job and follow it to the end')
      .requiredOption('--object <name>', 'the object its records are (transaction, account, activity, ...)')
      .option('--update-schema', 'apply the automatic schema evolution rules')
      .option('--no-rules', 'historical backfill: raise no alerts')
      .option('--idempotency-key <key>', 'make a retried upload return the same job')
      .option('--json', 'machine-readable output, no progress bars'),
  ).action(async function (
    this: Command,
    file: string,
    opts: { object: string; updateSchema?: boolean; rules: boolean; idempotencyKey?: string; json?: boolean; url: string; key?: string },
  ) {
    const target = targetOf(this, opts)
    const { type, gzip } = formatOf(file)
    const size = statSync(file).size
    const bytesBar = opts.json ? undefined : new SingleBar({ format: 'uploading [{bar}] {percentage}% | {value}/{total} bytes', hideCursor: true })
    bytesBar?.start(size, 0)
    let sent = 0
    const meter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        sent += chunk.length
        bytesBar?.update(sent)
        done(null, chunk)
      },
    })
    const query = new URLSearchParams({
      object: opts.object,
      update_schema: String(Boolean(opts.updateSchema)),
      evaluate_rules: String(opts.rules),
      file_name: file.split('/').pop() as string,
    })
    const res = await api(target, this, `/batch?${query}`, {
      method: 'POST',
      headers: { 'content-type': type, ...(gzip && { 'content-encoding': 'gzip' }), ...(opts.idempotencyKey && { 'idempotency-key': opts.idempotencyKey }) },
      body: Readable.toWeb(createReadStream(file).pipe(meter)) as ReadableStream,
      duplex: 'half',
    } as RequestInit)
    bytesBar?.stop()
    const { job_id } = (await res.json()) as { job_id: string }
    const status = await follow(target, this, job_id, !opts.json)
    console.log(opts.json ? JSON.stringify(status) : summary(status))
    process.exitCode = status.state === 'completed' ? 0 : 1
  })

  const jobs = program.command('jobs').description('batch jobs of a running Sluice')
  addTargetOptions(jobs.command('list').option('--state <state>').option('--object <object>').option('--json')).action(async function (
    this: Command,
    opts: { state?: string; object?: string; json?: boolean; url: string; key?: string },
  ) {
    const query = new URLSearchParams({ ...(opts.state && { state: opts.state }), ...(opts.object && { object: opts.object }) })
    const { jobs: list } = (await (await api(targetOf(this, opts), this, `/batch-status?${query}`)).json()) as { jobs: JobStatus[] }
    if (opts.json) return console.log(JSON.stringify(list))
    for (const j of list)
      console.log(
        `${j.job_id}  ${j.state.padEnd(21)} ${String(j.object).padEnd(12)} ${j.counts.accepted}/${j.counts.total ?? '?'} accepted, ${j.counts.rejected} rejected`,
      )
  })
  addTargetOptions(jobs.command('show <job_id>').option('--json')).action(async function (
    this: Command,
    id: string,
    opts: { json?: boolean; url: string; key?: string },
  ) {
    const status = (await (await api(targetOf(this, opts), this, `/batch-status/${id}`)).json()) as JobStatus
    console.log(opts.json ? JSON.stringify(status) : summary(status))
  })
  addTargetOptions(jobs.command('errors <job_id>').option('--csv', 'CSV instead of NDJSON')).action(async function (
    this: Command,
    id: string,
    opts: { csv?: boolean; url: string; key?: string },
  ) {
    const res = await api(targetOf(this, opts), this, `/batch-status/${id}/errors`, { headers: { accept: opts.csv ? 'text/csv' : 'application/x-ndjson' } })
    process.stdout.write(await res.text())
  })
  addTargetOptions(jobs.command('cancel <job_id>')).action(async function (this: Command, id: string, opts: { url: string; key?: string }) {
    const status = (await (await api(targetOf(this, opts), this, `/batch-status/${id}`, { method: 'DELETE' })).json()) as JobStatus
    console.log(`job ${id}: ${status.state}${status.state === 'cancelled' ? '' : ' (cancel requested)'}`)
  })
}

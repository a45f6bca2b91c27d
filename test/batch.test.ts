import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { connect } from '@nats-io/transport-node'
import t, { type Test } from 'tap'
import { generateBatch } from '../fixtures/generator.ts'
import { runCli } from './helpers/cli.ts'
import { finished, type JobStatus } from './helpers/jobs.ts'
import { eventually, startTestNats, startTestSluice, type TestSluice, tempDir } from './helpers/sluice.ts'

async function upload(s: TestSluice, body: string | Uint8Array<ArrayBuffer>, contentType: string, query = '', headers: Record<string, string> = {}) {
  return fetch(`${s.url}/batch${query}`, {
    method: 'POST',
    headers: { authorization: 'Bearer sk_test_admin_key_0123456789abcdef', 'content-type': contentType, ...headers },
    body,
  })
}

async function jobIdOf(res: Response): Promise<string> {
  const body = (await res.json()) as { job_id: string; status_url: string }
  return body.job_id
}

const transactions = generateBatch(4000, { seed: 3, accounts: 40 })
  .filter((r) => r.object === 'transaction')
  .map((r) => r.record)

t.test('batch uploads: formats, counts, error reports', async (t) => {
  const s = await startTestSluice(t)

  t.test('NDJSON with known bad rows: exact counts and a full error report', async (t) => {
    const rows = transactions.slice(0, 50).map((r) => ({ ...r }))
    rows[4].amount = 'lots' // row 5
    delete rows[9].currency // row 10
    rows[19].surprise = 1 // row 20
    const lines = rows.map((r) => JSON.stringify(r))
    lines.splice(30, 0, '{"broken json') // row 31, every later row shifts by one
    const res = await upload(s, lines.join('\n'), 'application/x-ndjson', '?object=transaction')
    t.equal(res.status, 202)
    const status = await finished(s, await jobIdOf(res))
    t.equal(status.state, 'completed_with_errors')
    t.match(status.counts, { total: 51, processed: 51, accepted: 47, rejected: 4, stored: 47, evaluated: 47 }, 'completed once stored and decided')
    t.same(
      status.first_errors.map((e) => [e.row, e.pointer]),
      [
        [5, '/amount'],
        [10, '/currency'],
        [20, '/surprise'],
        [31, ''],
      ],
    )
    t.equal(status.first_errors[0].record_key, rows[4].transaction_id, 'the record is named by its own id')
    const report = await (await s.request('GET', status.errors_url)).text()
    t.equal(report.trim().split('\n').length, 4, 'NDJSON report: one line per error')
    const csv = await (await s.request('GET', status.errors_url, undefined, { accept: 'text/csv' })).text()
    t.match(csv, /^row,record_key,pointer,message\r?\n5,/, 'CSV report on Accept: text/csv')
    const stored = (await (await s.request('GET', `/records/transaction?limit=1000&view=history&transaction_id=${rows[0].transaction_id}`)).json()) as {
      records: { source: string; job_id: string }[]
    }
    t.match(stored.records, [{ source: 'api', job_id: status.job_id }], 'stored records carry their job')
  })

  t.test('CSV edge cases: quoted commas, quotes, newlines, BOM, CRLF, empty cells as null', async (t) => {
    const header = 'transaction_id,account_id,amount,currency,direction,type,status,created_at,channel,country,merchant_name,description,metadata'
    const csv = [
      `\uFEFF${header}`,
      'csv-1,acc-1,10.5,EUR,debit,card_payment,completed,2026-01-01T10:00:00Z,pos,DE,"Bäckerei, Müller","said ""hi""",',
      'csv-2,acc-1,20,EUR,debit,card_payment,completed,2026-01-01T11:00:00Z,web,DE,,"line one\r\nline two","{""k"":1}"',
      'csv-3,acc-2,abc,EUR,debit,card_payment,completed,2026-01-01T12:00:00Z,web,DE,,,',
      'csv-4,acc-2,5,EUR,debit,card_payment,completed,2026-01-01T12:00:00Z,web',
    ].join('\r\n')
    const res = await upload(s, csv, 'text/csv; charset=utf-8', '?object=transaction')
    const status = await finished(s, await jobIdOf(res))
    t.match(status.counts, { total: 4, accepted: 2, rejected: 2 })
    t.same(
      status.first_errors.map((e) => [e.row, e.pointer]),
      [
        [3, '/amount'],
        [4, ''],
      ],
    )
    const get = async (id: string) =>
      ((await (await s.request('GET', `/records/transaction?transaction_id=${id}`)).json()) as { records: { data: Record<string, unknown> }[] }).records[0].data
    t.match(await get('csv-1'), { merchant_name: 'Bäckerei, Müller', description: 'said "hi"', amount: 10.5, metadata: null, transaction_id: 'csv-1' })
    t.match(await get('csv-2'), { merchant_name: null, description: 'line one\r\nline two', amount: 20, metadata: { k: 1 } })
  })

  t.test('a CSV read in many pieces: quoted line breaks across them, and a broken quote fails the job', async (t) => {
    const fields = Object.keys(transactions[0])
    const cell = (value: unknown) => (value === null ? '' : `"${String(typeof value === 'object' ? JSON.stringify(value) : value).replaceAll('"', '""')}"`)
    // About 2.5 KB a row, quoted and holding CRLFs: a file of megabytes, read one megabyte at a time.
    const rows = transactions.map((r, i) => ({
      ...r,
      description: `row ${i},\r\n"${'x'.repeat(900)}"\r\nend`,
      metadata: { note: 'a "quoted",\r\nvalue', pad: 'z'.repeat(1200) },
    }))
    const csv = [fields.join(','), ...rows.map((r) => fields.map((f) => cell(r[f as keyof typeof r])).join(','))].join('\r\n')
    t.ok(csv.length > 2_500_000, 'larger than two reads')
    const status = await finished(s, await jobIdOf(await upload(s, csv, 'text/csv', '?object=transaction&evaluate_rules=false')), 60_000)
    const n = rows.length
    t.match(status, { state: 'completed', counts: { total: n, accepted: n, rejected: 0, stored: n } })
    const last = (await (await s.request('GET', `/records/transaction?transaction_id=${transactions[n - 1].transaction_id}`)).json()) as {
      records: { data: Record<string, unknown> }[]
    }
    t.match(last.records[0].data, { description: rows[n - 1].description, metadata: rows[n - 1].metadata }, 'quotes and line breaks kept exactly')

    const broken = [fields.join(','), fields.map((f) => cell(rows[0][f as keyof (typeof rows)[0]])).join(','), `"unclosed,${'y'.repeat(20)}`].join('\n')
    const failed = await finished(s, await jobIdOf(await upload(s, broken, 'text/csv', '?object=transaction')))
    t.match(failed, { state: 'failed', error: /CSV cannot be read at row 2: Quoted field unterminated/ }, 'an unclosed quote: the job fails and says where')
    t.equal(failed.counts.accepted, 0, 'nothing of it was published')
  })

  t.test('JSON bodies, gzip, and the object named in the payload', async (t) => {
    const envelope = { object: 'transaction', records: transactions.slice(100, 120), evaluate_rules: false }
    const gz = new Uint8Array(gzipSync(JSON.stringify(envelope)))
    const res = await upload(s, gz, 'application/json', '', { 'content-encoding': 'gzip' })
    t.equal(res.status, 202)
    const status = await finished(s, await jobIdOf(res))
    t.match(status, { state: 'completed', object: 'transaction', counts: { accepted: 20, stored: 20 } })
    const array = await upload(s, JSON.stringify(transactions.slice(120, 125)), 'application/json', '?object=transaction')
    t.match(await finished(s, await jobIdOf(array)), { state: 'completed', counts: { accepted: 5 } }, 'a JSON array with ?object=')
    const nameless = await upload(s, JSON.stringify(transactions.slice(125, 126)), 'application/json')
    t.match(await finished(s, await jobIdOf(nameless)), { state: 'failed', error: /which object/ }, 'no object anywhere: the job fails and says why')
    const badGzip = await upload(s, 'not gzip at all', 'application/x-ndjson', '?object=transaction', { 'content-encoding': 'gzip' })
    t.match(await finished(s, await jobIdOf(badGzip)), { state: 'failed', error: /gzip/ })
    const badGzipJson = await upload(s, 'not gzip either', 'application/json', '?object=transaction', { 'content-encoding': 'gzip' })
    t.match(await finished(s, await jobIdOf(badGzipJson)), { state: 'failed', error: /gzip/ }, 'a JSON body that is not gzip: the job fails and says so')
    const cut = JSON.stringify(transactions.slice(126, 129)).slice(0, -40)
    const truncated = await finished(s, await jobIdOf(await upload(s, cut, 'application/json', '?object=transaction')))
    t.match(truncated, { state: 'failed', error: /JSON cannot be read after record 2/ }, 'a JSON array cut short: the job fails and says after which record')
    t.equal(truncated.counts.accepted, 0, 'nothing of it was published')
  })

  t.test('idempotent resubmission, and bad requests', async (t) => {
    const body = transactions
      .slice(200, 210)
      .map((r) => JSON.stringify(r))
      .join('\n')
    const key = { 'idempotency-key': 'nightly-2026-11-23' }
    const first = await jobIdOf(await upload(s, body, 'application/x-ndjson', '?object=transaction', key))
    const again = await upload(s, body, 'application/x-ndjson', '?object=transaction', key)
    t.equal(again.status, 202)
    t.match(await again.json(), { job_id: first, existing: true }, 'same key, same payload: the same job')
    const other = await upload(s, `${body}\n`, 'application/x-ndjson', '?object=transaction', key)
    t.equal(other.status, 409)
    t.match(await other.json(), { code: 'SLUICE_IDEMPOTENCY_CONFLICT' })
    t.equal((await upload(s, body, 'application/x-ndjson')).status, 400, 'NDJSON without ?object=')
    t.equal((await upload(s, body, 'application/x-ndjson', '?object=nope')).status, 404)
    t.equal((await upload(s, body, 'application/xml', '?object=transaction')).status, 415)
    t.equal((await s.request('GET', '/batch-status/job_doesnotexist')).status, 404)
    const list = (await (await s.request('GET', '/batch-status?state=completed&object=transaction')).json()) as { jobs: JobStatus[] }
    t.ok(list.jobs.length >= 2 && list.jobs.every((j) => j.state === 'completed'), 'list filtered by state')
    t.match(await (await s.request('GET', `/batch-status?job_id=${first}`)).json(), { job_id: first })
  })
})

t.test('413 past the upload limit, and cancel', async (t) => {
  const s = await startTestSluice(t, { config: { batch: { maxBytes: 4096, chunkSize: 100, pollIntervalMs: 20 } } })
  const big = transactions
    .slice(0, 100)
    .map((r) => JSON.stringify(r))
    .join('\n')
  const res = await upload(s, big, 'application/x-ndjson', '?object=transaction')
  t.equal(res.status, 413)
  t.match(await res.json(), { code: 'SLUICE_PAYLOAD_TOO_LARGE', detail: /4096 bytes/ })
  t.same(((await (await s.request('GET', '/batch-status')).json()) as { jobs: unknown[] }).jobs, [], 'no job was made')
})

t.test('a cancelled job stops and says so', async (t) => {
  const nats = await startTestNats(t)
  // No batch role: the job stays queued until cancelled.
  const s = await startTestSluice(t, { natsUrl: nats.url, config: { roles: ['ingress', 'sink'] } })
  const id = await jobIdOf(await upload(s, JSON.stringify(transactions.slice(0, 5)), 'application/json', '?object=transaction'))
  const cancel = await s.request('DELETE', `/batch-status/${id}`)
  t.equal(cancel.status, 202)
  t.match(await cancel.json(), { state: 'cancelled' })
  t.equal((await s.request('DELETE', `/batch-status/${id}`)).status, 409, 'a finished job cannot be cancelled again')
})

/** Every stored version of every transaction, newest first, page by page. */
async function storedTransactions(s: TestSluice): Promise<{ seq: number; job_id: string | null }[]> {
  const stored: { seq: number; job_id: string | null }[] = []
  let cursor: string | undefined
  do {
    const page = (await (await s.request('GET', `/records/transaction?view=history&limit=1000${cursor ? `&cursor=${cursor}` : ''}`)).json()) as {
      records: { seq: number; job_id: string | null }[]
      next_cursor?: string
    }
    stored.push(...page.records)
    cursor = page.next_cursor
  } while (cursor)
  return stored
}

t.test('a job cancelled while it runs sends nothing more: every record it sent is counted in it', async (t) => {
  // Chunks large enough that some of their messages are full, and leave, before the chunk ends.
  const s = await startTestSluice(t, { config: { batch: { chunkSize: 1000, pollIntervalMs: 20 } } })
  const rows = Array.from({ length: 20 }, (_, copy) => copy).flatMap((copy) =>
    transactions.map((r) => ({ ...r, transaction_id: `${r.transaction_id}-c${copy}` })),
  )
  const id = await jobIdOf(await upload(s, rows.map((r) => JSON.stringify(r)).join('\n'), 'application/x-ndjson', '?object=transaction&evaluate_rules=false'))
  await eventually(
    async () => {
      const status = (await (await s.request('GET', `/batch-status/${id}`)).json()) as JobStatus
      return status.counts.processed >= 200 ? status : undefined
    },
    20_000,
    10,
  )
  t.equal((await s.request('DELETE', `/batch-status/${id}`)).status, 202)
  const status = await finished(s, id)
  t.equal(status.state, 'cancelled')
  t.ok(status.counts.accepted < rows.length, `stopped part way (${status.counts.accepted} of ${rows.length})`)
  // Whatever reached JetStream is stored; give the sink time, then count the job's records.
  await new Promise((r) => setTimeout(r, 1000))
  const stored = (await storedTransactions(s)).filter((r) => r.job_id === id).length
  t.equal(stored, status.counts.accepted, `the records stored are the ones the job counts (${stored} stored)`)
})

/**
 * Ingress and a batch worker apart from the analytics sink, which is away: its consumer was made, then nothing
 * pulls from it, so a job's records pile up until startSink(). `sinkStallSeconds` says how long a job waits for it.
 */
async function withSinkAway(t: Test, sinkStallSeconds: number) {
  const nats = await startTestNats(t)
  const firstSink = await startTestSluice(t, { natsUrl: nats.url, config: { roles: ['sink'] } })
  await firstSink.stop()
  const s = await startTestSluice(t, {
    natsUrl: nats.url,
    dataDir: firstSink.dataDir,
    config: {
      roles: ['ingress', 'batch'],
      // The worker asks the sink for the job's stored count as it goes: while the sink is away, at most this long.
      http: { queryTimeoutMs: 300 },
      batch: { chunkSize: 100, sinkBacklogMessages: 5, sinkStallSeconds, pollIntervalMs: 20 },
    },
  })
  const startSink = async () => {
    const sink = await startTestSluice(t, { natsUrl: nats.url, dataDir: firstSink.dataDir, config: { roles: ['sink'] } })
    t.teardown(() => sink.stop())
  }
  return { s, startSink }
}

/** Records of one job, numbered apart from every other test's. */
function numbered(count: number, tag: string) {
  return Array.from({ length: count }, (_, i) => ({ ...transactions[i % transactions.length], transaction_id: `${tag}-${i}` }))
}

t.test('a job waits for the analytics sink, so a real-time record sent meanwhile is stored before the rest of the job', async (t) => {
  const { s, startSink } = await withSinkAway(t, 60)
  const rows = numbered(2000, 'held')
  const id = await jobIdOf(await upload(s, JSON.stringify(rows), 'application/json', '?object=transaction'))
  const status = async () => (await (await s.request('GET', `/batch-status/${id}`)).json()) as JobStatus
  await eventually(async () => ((await status()).state === 'processing' ? true : undefined), 20_000)
  // Unheld, the job would send all its records in this time.
  await new Promise((r) => setTimeout(r, 1500))
  const held = await status()
  t.ok(held.counts.processed <= 200, `with no sink storing, the job sent no more than two chunks (${held.counts.processed} of 2000 rows)`)
  t.equal((await s.request('POST', '/transaction', { ...transactions[0], transaction_id: 'live-during-job' })).status, 202)
  await startSink()
  t.match(await finished(s, id), { state: 'completed', counts: { accepted: 2000, stored: 2000 } }, 'the job completes once the sink is back')
  // The sink stores in stream order: every record of the job sent after the real-time one was stored after it.
  const stored = await storedTransactions(s)
  const live = stored.find((r) => r.job_id === null) as { seq: number }
  const behindLive = stored.filter((r) => r.job_id === id && r.seq > live.seq).length
  t.ok(behindLive >= 1800, `the real-time record was stored ahead of ${behindLive} of the job's 2000 records`)
})

t.test('a job does not wait for a stopped analytics sink: it sends every record, and completes once the sink is back', async (t) => {
  const { s, startSink } = await withSinkAway(t, 1)
  const id = await jobIdOf(await upload(s, JSON.stringify(numbered(2000, 'unheld')), 'application/json', '?object=transaction'))
  const sent = await eventually(
    async () => {
      const status = (await (await s.request('GET', `/batch-status/${id}`)).json()) as JobStatus
      return status.counts.processed === 2000 ? status : undefined
    },
    20_000,
    50,
  )
  t.match(sent, { state: 'processing', counts: { accepted: 2000, stored: 0 } }, 'every record sent; none stored, and the job waits for them')
  await startSink()
  t.match(await finished(s, id), { state: 'completed', counts: { stored: 2000 } })
})

t.test('where no rule stage runs, a job completes once its records are stored', async (t) => {
  const nats = await startTestNats(t)
  const s = await startTestSluice(t, { natsUrl: nats.url, config: { roles: ['ingress', 'sink', 'batch'] } })
  const status = await finished(s, await jobIdOf(await upload(s, JSON.stringify(transactions.slice(0, 5)), 'application/json', '?object=transaction')))
  t.match(status, { state: 'completed', counts: { accepted: 5, stored: 5, evaluated: 0 } })
})

t.test("a job's records are counted by the sink but not in the real-time freshness histogram", async (t) => {
  const nats = await startTestNats(t)
  const s = await startTestSluice(t, { natsUrl: nats.url, config: { roles: ['ingress', 'sink', 'batch'] } })
  const metric = async (name: string) => {
    const text = await (await s.request('GET', '/metrics')).text()
    return [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)$`, 'gm'))].reduce((sum, m) => sum + Number(m[1]), 0)
  }
  const status = await finished(s, await jobIdOf(await upload(s, JSON.stringify(transactions.slice(500, 530)), 'application/json', '?object=transaction')))
  t.match(status, { state: 'completed', counts: { accepted: 30, stored: 30 } })
  t.equal(await metric('sluice_sink_records_total'), 30, 'the sink counts the 30 records')
  t.equal(await metric('sluice_freshness_seconds_count'), 0, 'the freshness histogram has none of them')
  t.equal((await s.request('POST', '/transaction', transactions[530])).status, 202)
  t.equal(await eventually(async () => ((await metric('sluice_freshness_seconds_count')) === 1 ? 1 : undefined)), 1, 'a real-time record is in it')
  t.equal(await metric('sluice_sink_records_total'), 31)
})

t.test("a job's records are decided and their decisions stored, not announced one by one as a real-time record's is", async (t) => {
  const s = await startTestSluice(t)
  const nc = await connect({ servers: s.sluice.natsUrl })
  t.teardown(() => nc.close())
  const announced: string[] = []
  nc.subscribe('sluice.decisions.>', { callback: (_err, msg) => void announced.push(msg.json<{ record_id: string }>().record_id) })
  await nc.flush()
  const status = await finished(s, await jobIdOf(await upload(s, JSON.stringify(transactions.slice(400, 420)), 'application/json', '?object=transaction')))
  t.match(status, { state: 'completed', counts: { accepted: 20, evaluated: 20 } })
  const live = (await (await s.request('POST', '/transaction', transactions[420])).json()) as { record_id: string }
  await eventually(async () => (announced.includes(live.record_id) ? true : undefined))
  t.same(announced, [live.record_id], "only the real-time record's decision went out on core NATS")
  const stored = (await (await s.request('GET', '/records/transaction?limit=1&transaction_id=' + transactions[400].transaction_id)).json()) as {
    records: { record_id: string }[]
  }
  t.equal((await s.request('GET', `/decisions/${stored.records[0].record_id}`)).status, 200, "a job record's decision is stored")
  // A job's stored decisions leave their evaluations out and their batches carry the counts: the dashboard's
  // per-rule counts still match what the stage evaluated, each evaluation once.
  const evaluatedByStage = async () => {
    const metrics = await (await s.request('GET', '/metrics')).text()
    return [...metrics.matchAll(/^sluice_rule_evaluations_total\{[^}]*\} (\d+)$/gm)].reduce((sum, m) => sum + Number(m[1]), 0)
  }
  const countedForDashboard = async () => {
    const stats = (await (await s.request('GET', '/rules/stats')).json()) as { rules: { evaluations: number }[] }
    return stats.rules.reduce((sum, r) => sum + r.evaluations, 0)
  }
  const expected = await evaluatedByStage()
  t.ok(expected >= 21, `the stage evaluated rules on all 21 records (${expected} evaluations)`)
  t.equal(await eventually(async () => ((await countedForDashboard()) === expected ? expected : undefined)), expected, 'GET /rules/stats counts the same')
})

t.test('a backfill of a new field shows in the current view and keeps history', async (t) => {
  const s = await startTestSluice(t)
  const originals = transactions.slice(300, 310)
  const first = await finished(
    s,
    await jobIdOf(await upload(s, originals.map((r) => JSON.stringify(r)).join('\n'), 'application/x-ndjson', '?object=transaction')),
  )
  t.equal(first.state, 'completed')
  // The same transactions again, same time, with a field the schema does not have yet: a backfill.
  const backfill = originals.map((r) => ({ ...r, risk_segment: 'low' }))
  const second = await finished(
    s,
    await jobIdOf(
      await upload(s, backfill.map((r) => JSON.stringify(r)).join('\n'), 'application/x-ndjson', '?object=transaction&update_schema=true&evaluate_rules=false'),
    ),
  )
  t.match(second, { state: 'completed', counts: { accepted: 10, stored: 10 } })
  const id = originals[0].transaction_id
  const current = (await (await s.request('GET', `/records/transaction?transaction_id=${id}`)).json()) as { records: { data: Record<string, unknown> }[] }
  t.same(
    current.records.map((r) => r.data.risk_segment),
    ['low'],
    'the current view shows the backfilled value, once',
  )
  const history = (await (await s.request('GET', `/records/transaction?view=history&transaction_id=${id}`)).json()) as {
    records: { data: Record<string, unknown> }[]
  }
  t.same(history.records.map((r) => r.data.risk_segment).sort(), ['low', null], 'history keeps the version before the backfill')
})

t.test('sluice upload follows the job to the end; sluice jobs lists, shows and reports', async (t) => {
  const s = await startTestSluice(t)
  const dir = tempDir(t)
  const good = join(dir, 'good.ndjson.gz')
  const rows = transactions.slice(400, 430)
  writeFileSync(good, gzipSync(rows.map((r) => JSON.stringify(r)).join('\n')))
  const env = { SLUICE_URL: s.url, SLUICE_API_KEY: 'sk_test_admin_key_0123456789abcdef' }
  const ok = await runCli(['upload', good, '--object', 'transaction', '--json'], env)
  const status = JSON.parse(ok.stdout) as JobStatus
  t.match(status, { state: 'completed', counts: { total: 30, accepted: 30, stored: 30 } }, 'exit 0 and the final status')

  const bad = join(dir, 'bad.csv')
  writeFileSync(bad, 'transaction_id,amount\nx-1,12\n')
  const failed = await runCli(['upload', bad, '--object', 'transaction'], env).catch((err: { code: number; stdout: string }) => err)
  t.equal((failed as { code: number }).code, 1, 'rejections: non-zero exit')
  t.match(
    (failed as { stdout: string }).stdout,
    /completed_with_errors[\s\S]*1 rejected[\s\S]*row 1 \(x-1\)[\s\S]*sluice jobs errors job_/,
    'a summary that says where the report is',
  )

  const listed = (await runCli(['jobs', 'list'], env)).stdout
  t.match(listed, new RegExp(`${status.job_id}\\s+completed`))
  t.match((await runCli(['jobs', 'show', status.job_id], env)).stdout, /30 accepted, 0 rejected, 30 queryable/)
  const badId = /job (job_\S+):/.exec((failed as { stdout: string }).stdout)?.[1] as string
  t.match((await runCli(['jobs', 'errors', badId, '--csv'], env)).stdout, /^row,record_key,pointer,message\n1,x-1,/)
})

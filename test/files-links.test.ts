import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { chromium } from 'playwright-core'
import t from 'tap'
import { writeCsv } from '../fixtures/generate.ts'
import { openStateDb, UploadLinkStore } from '../storage/index.ts'
import { runCli } from './helpers/cli.ts'
import { eventually, startTestSluice, type TestSluice, tempDir } from './helpers/sluice.ts'

interface CreatedLink {
  id: string
  object: string
  state: string
  uploads: number
  max_uploads: number | null
  token: string
  url: string
}
interface LinkJob {
  job_id: string
  state: string
  file_name: string
  counts: { total: number | null; accepted: number; rejected: number; stored: number }
  errors_url: string
}

const MAX_BYTES = 64 * 1024

async function createLink(s: TestSluice, body: Record<string, unknown>): Promise<CreatedLink> {
  const res = await s.request('POST', '/upload-links', body)
  if (res.status !== 201) throw new Error(`POST /upload-links: ${res.status} ${await res.text()}`)
  return (await res.json()) as CreatedLink
}

/** Uploads through a link as the page does, without an API key. */
const uploadThrough = (url: string, fileName: string, body: BodyInit, headers: Record<string, string> = {}) =>
  fetch(`${url}?file_name=${encodeURIComponent(fileName)}`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', ...headers },
    body,
    duplex: 'half',
  } as RequestInit)

async function finished(s: TestSluice, statusUrl: string): Promise<LinkJob> {
  return eventually(
    async () => {
      const job = (await (await fetch(`${s.url}${statusUrl}`)).json()) as LinkJob
      return ['completed', 'completed_with_errors', 'failed'].includes(job.state) ? job : undefined
    },
    20_000,
    100,
  )
}

const jobCount = async (s: TestSluice) => ((await (await s.request('GET', '/batch-status?limit=1000')).json()) as { jobs: unknown[] }).jobs.length
const payloadCount = (s: TestSluice) => readdirSync(join(s.dataDir, 'batches'), { withFileTypes: true }).length

t.test('upload links', async (t) => {
  const s = await startTestSluice(t, { config: { batch: { maxBytes: MAX_BYTES, pollIntervalMs: 50 } } })
  const work = tempDir(t, 'sluice-links-')
  const csv = join(work, 'transactions.csv')
  await writeCsv(csv, 'transaction', 30, { seed: 41, accounts: 8 })
  const csvText = readFileSync(csv, 'utf8')
  const withPrefix = (prefix: string) => csvText.replace(/\r\n([^,]+)/g, `\r\n${prefix}-$1`)

  t.test('an admin makes a link; whoever holds it uploads without a key, up to max_uploads', async (t) => {
    const link = await createLink(s, { object: 'transaction', expires: '2h', max_uploads: 2 })
    t.match(link, { object: 'transaction', state: 'active', uploads: 0, max_uploads: 2 })
    t.match(link.url, new RegExp(`^${s.url}/upload/link_[0-9a-f]{16}\\.\\d+\\.[\\w-]{43}$`), 'a URL carrying the signed token')
    const listed = (await (await s.request('GET', '/upload-links')).json()) as { links: Record<string, unknown>[] }
    t.match(listed.links[0], { id: link.id, state: 'active' })
    t.notOk('token' in listed.links[0], 'the token is never listed')
    t.equal((await fetch(`${s.url}/upload-links`)).status, 401, 'listing needs a key')

    const first = await uploadThrough(link.url, 'tx-1.csv', withPrefix('l1'))
    t.equal(first.status, 202)
    const { status_url } = (await first.json()) as { status_url: string }
    t.match(await finished(s, status_url), { state: 'completed', file_name: 'tx-1.csv', counts: { total: 30, accepted: 30, stored: 30 } })
    const stored = (await (await s.request('GET', `/records/transaction?transaction_id=${withPrefix('l1').split('\r\n')[1].split(',')[0]}`)).json()) as {
      records: { source: string }[]
    }
    t.match(stored.records, [{ source: 'upload_link' }], 'records are queryable, from the upload link')

    t.equal((await uploadThrough(link.url, 'tx-2.csv', withPrefix('l2'))).status, 202, 'the second of two uploads')
    const jobs = await jobCount(s)
    const third = await uploadThrough(link.url, 'tx-3.csv', withPrefix('l3'))
    t.equal(third.status, 403)
    t.match(await third.json(), { code: 'SLUICE_LINK_USED_UP', detail: /used up/ })
    t.equal(await jobCount(s), jobs, 'a used-up link stores nothing')
    t.match((await (await fetch(`${s.url}${status_url}`)).json()) as LinkJob, { state: 'completed' }, 'its jobs can still be followed')
  })

  t.test('tampered, revoked and oversized: 403 or 413, and nothing is stored', async (t) => {
    const link = await createLink(s, { object: 'transaction', expires: '30m' })
    const [jobs, payloads] = [await jobCount(s), payloadCount(s)]
    const signature = link.url.slice(-43)
    // A later expiry with the old signature, and a changed signature.
    const tampered = link.url.replace(/(link_[0-9a-f]{16})\.(\d+)\./, (_m, id, exp) => `${id}.${Number(exp) + 86400}.`)
    const forged = `${link.url.slice(0, -43)}${signature.startsWith('A') ? 'B' : 'A'}${signature.slice(1)}`
    for (const url of [tampered, forged, `${s.url}/upload/nonsense`]) {
      const res = await uploadThrough(url, 'tx.csv', csvText)
      t.equal(res.status, 403)
      t.match(await res.json(), { code: 'SLUICE_LINK_INVALID' }, 'problem+json for the API call')
    }
    const page = await fetch(tampered)
    t.equal(page.status, 403)
    t.match(await page.text(), /<h1 id="refused">The upload link is not valid<\/h1>/, 'an HTML page for the browser')

    const big = Readable.from(
      (function* () {
        for (let i = 0; i < 40; i++) yield Buffer.alloc(4096, 'x')
      })(),
    )
    const tooLarge = await uploadThrough(link.url, 'big.ndjson', Readable.toWeb(big) as ReadableStream)
    t.equal(tooLarge.status, 413, 'the size limit holds while streaming (no Content-Length to trust)')
    t.match(await tooLarge.json(), { code: 'SLUICE_PAYLOAD_TOO_LARGE' })
    t.equal((await uploadThrough(link.url, 'notes.txt', 'hello')).status, 415, 'a file Sluice cannot read')

    t.equal((await s.request('DELETE', `/upload-links/${link.id}`)).status, 200)
    const revoked = await uploadThrough(link.url, 'tx.csv', csvText)
    t.equal(revoked.status, 403)
    t.match(await revoked.json(), { code: 'SLUICE_LINK_REVOKED' })
    t.equal((await s.request('DELETE', '/upload-links/link_0000000000000000')).status, 404)
    t.equal(await jobCount(s), jobs, 'no job')
    t.equal(payloadCount(s), payloads, 'no payload left on disk')
    t.match(
      ((await (await s.request('GET', '/upload-links')).json()) as { links: CreatedLink[] }).links.find((l) => l.id === link.id),
      {
        state: 'revoked',
        uploads: 0,
      },
    )
  })

  t.test('sluice links create, list and revoke, on the data dir', async (t) => {
    const env = { SLUICE_DATA_DIR: s.dataDir }
    const created = JSON.parse(
      (await runCli(['links', 'create', '--object', 'account', '--expires', '3d', '--max-uploads', '1', '--json'], env)).stdout,
    ) as CreatedLink
    t.match(created, { object: 'account', max_uploads: 1, url: /^http:\/\/127\.0\.0\.1:8080\/upload\/link_/ })
    t.match((await runCli(['links', 'list'], env)).stdout, new RegExp(`${created.id}\\s+account\\s+active`))
    const page = await fetch(`${s.url}/upload/${created.token}`)
    t.equal(page.status, 200, 'the running server takes a link the CLI made')
    t.match((await runCli(['links', 'revoke', created.id], env)).stdout, /revoked/)
    t.equal((await fetch(`${s.url}/upload/${created.token}`)).status, 403, 'and sees its revocation at once')
    const bad = await runCli(['links', 'create', '--object', 'nope'], env).catch((err: { code: number; stderr: string }) => err)
    t.match(bad, { code: 1, stderr: /no object type nope/ })
  })

  t.test('the upload page in Chromium: pick a file, drop another, follow both jobs; an expired link shows 403', async (t) => {
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    })
    t.teardown(() => browser.close())
    const page = await browser.newPage()
    const elsewhere: string[] = []
    page.on('request', (r) => {
      if (!r.url().startsWith(s.url)) elsewhere.push(r.url())
    })
    const pageErrors: string[] = []
    page.on('pageerror', (err) => pageErrors.push(err.message))

    const link = await createLink(s, { object: 'transaction', expires: '1d', max_uploads: 3 })
    const opened = await page.goto(link.url)
    t.equal(opened?.status(), 200)
    t.equal(await page.textContent('#object'), 'transaction', 'the page says which object')
    t.match(await page.textContent('#expires'), /^\d{4}-\d\d-\d\d \d\d:\d\d UTC$/, 'and until when')
    const file = join(work, 'picked.csv')
    await writeCsv(file, 'transaction', 25, { seed: 43, accounts: 5 })
    await page.setInputFiles('#file', file)
    await page.waitForSelector('#result.done', { timeout: 20_000 })
    t.match(await page.textContent('#result'), /Done: all 25 records were accepted/)
    t.equal(await page.textContent('#upload-percent'), '100%', 'the upload progress reached the end')
    t.equal(await page.textContent('#count-stored'), '25', 'and the job shows its records queryable')

    // Drag and drop a file with a rejected row: the report is one click away, through the link.
    const rows = withPrefix('dnd').split('\r\n').slice(0, 6)
    rows[3] = rows[3].replace(/^([^,]*,[^,]*,)[^,]*/, '$1not-a-number')
    await page.reload()
    const transfer = await page.evaluateHandle((text) => {
      const data = new DataTransfer()
      data.items.add(new File([text], 'dropped.csv', { type: 'text/csv' }))
      return data
    }, rows.join('\r\n'))
    await page.dispatchEvent('#drop', 'drop', { dataTransfer: transfer })
    await page.waitForSelector('#result.error', { timeout: 20_000 })
    t.match(await page.textContent('#result'), /4 records accepted, 1 rejected/)
    const report = await page.getAttribute('#errors-link', 'href')
    const csvReport = await (await fetch(`${s.url}${report}`)).text()
    t.match(csvReport, /^row,record_key,pointer,message\n3,dnd-[^,]+,\/amount,/, 'the error report downloads through the token')

    const expired = new UploadLinkStore(openStateDb(join(s.dataDir, 'state.db'))).create({
      object: 'transaction',
      expiresAt: new Date(Date.now() - 60_000),
      actor: 'test',
    })
    const refused = await page.goto(`${s.url}/upload/${expired.token}`)
    t.equal(refused?.status(), 403)
    t.equal(await page.textContent('h1'), 'The upload link has expired')
    t.match(await page.textContent('body'), /expired on \d{4}-\d\d-\d\d \d\d:\d\d UTC[\s\S]*Nothing was uploaded/)
    t.same(elsewhere, [], 'the page loads nothing from anywhere else')
    t.same(pageErrors, [], 'and runs without script errors')
  })

  t.test('link creation, use and refusal are audited', async (t) => {
    const audit = openStateDb(join(s.dataDir, 'state.db')).prepare("SELECT action, actor FROM audit_log WHERE action LIKE 'link.%'").all() as {
      action: string
      actor: string
    }[]
    const actions = new Set(audit.map((a) => a.action))
    t.same([...actions].sort(), ['link.create', 'link.refused', 'link.revoke', 'link.upload'])
    t.ok(
      audit.some((a) => a.action === 'link.upload' && a.actor.startsWith('link:link_')),
      'an upload is the link holder acting',
    )
  })
})

import { mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import t from 'tap'
import { generateBatch } from '../fixtures/generator.ts'
import { buildDashboard } from '../web/build.ts'
import { startTestSluice, TEST_ADMIN_KEY } from './helpers/sluice.ts'

/** Screenshots of every page, for a person to look at (git-ignored). */
const SCREENSHOTS = fileURLToPath(new URL('../test-output/screenshots/', import.meta.url))
/** The promise: a record shows in the dashboard within a second of its POST. */
const LIVE_MS = 1000

const transaction = (id: string, amount = 42.5) => ({
  transaction_id: id,
  account_id: 'acc-browser',
  amount,
  currency: 'EUR',
  direction: 'debit',
  type: 'card_payment',
  status: 'completed',
  created_at: new Date().toISOString(),
  channel: 'web',
  country: 'DE',
})

t.test('the dashboard in Debian Chromium', async (t) => {
  await buildDashboard()
  mkdirSync(SCREENSHOTS, { recursive: true })
  const s = await startTestSluice(t)
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  })
  t.teardown(() => browser.close())
  const page = await (await browser.newContext({ viewport: { width: 1440, height: 900 } })).newPage()
  const consoleErrors: string[] = []
  const outside: string[] = []
  // Chromium logs every 4xx answer to the console; those the test provokes on purpose are not the page's errors.
  let provoking = false
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return
    if (provoking && /status of 4\d\d/.test(msg.text())) return
    consoleErrors.push(`${page.url()}: ${msg.text()}`)
  })
  const provoke = async (action: () => Promise<unknown>) => {
    provoking = true
    try {
      await action()
    } finally {
      provoking = false
    }
  }
  page.on('pageerror', (err) => consoleErrors.push(`${page.url()}: ${err.message}`))
  page.on('request', (req) => {
    if (!req.url().startsWith(s.url) && !req.url().startsWith('data:')) outside.push(req.url())
  })
  const shot = async (name: string, fullPage = true) => {
    // Scrolled back up first: the sticky bars would otherwise be drawn halfway down a full-page picture.
    await page.evaluate(() => window.scrollTo(0, 0))
    await page.screenshot({ path: `${SCREENSHOTS}${name}.png`, fullPage })
  }
  const open = async (hash: string, ready: string) => {
    await page.evaluate((h) => {
      location.hash = h
    }, hash)
    await page.waitForSelector(ready)
  }
  const routes = new Set(
    Object.entries(((await (await s.request('GET', '/openapi.json')).json()) as { paths: Record<string, object> }).paths).flatMap(([path, methods]) =>
      Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`),
    ),
  )

  t.test('sign in with an API key', async (t) => {
    await page.goto(`${s.url}/`)
    await page.waitForSelector('#api-key')
    await page.fill('#api-key', 'sk_wrong')
    await provoke(async () => {
      await page.click('button[type=submit]')
      await page.waitForSelector('.field-error')
    })
    t.match(await page.textContent('.field-error'), /unknown or revoked/, 'a wrong key says why')
    await shot('sign-in')
    await page.fill('#api-key', TEST_ADMIN_KEY)
    await page.click('button[type=submit]')
    await page.waitForSelector('[data-testid=live-status].live')
    t.equal(await page.textContent('.topbar h1'), 'Overview')
    await page.waitForSelector('[data-testid=first-record]')
    await shot('overview-empty')
    const command = (await page.textContent('[data-testid=first-record] pre')) ?? ''
    const example = /-d '([^']*)'/.exec(command)?.[1]
    t.ok(example, 'the empty Overview shows a curl command for a first record')
    const sent = await s.request('POST', '/transaction', example)
    t.equal(sent.status, 202, 'and the record in it is valid')
  })

  t.test('a record POSTed through the API shows on the Overview within a second, without reload', async (t) => {
    const posted = Date.now()
    const res = await s.request('POST', '/transaction', transaction('tx-browser-1'))
    t.equal(res.status, 202)
    await page.waitForSelector('[data-testid=latest-records] >> text=tx-browser-1', { timeout: LIVE_MS })
    t.ok(Date.now() - posted < LIVE_MS, `shown after ${Date.now() - posted} ms`)
    await page.waitForFunction(() => document.querySelector('[data-testid=stat-total] .stat-value')?.textContent === '2', undefined, { timeout: 5000 })
    // Some traffic for the chart, then let it draw a few seconds.
    for (let i = 2; i <= 6; i++) await s.request('POST', '/transaction', transaction(`tx-browser-${i}`, i * 10))
    for (const { object, record } of generateBatch(30, { seed: 11, accounts: 5 })) await s.request('POST', `/${object}`, record)
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=latest-records] li').length >= 10)
    if (routes.has('GET /rules/stats')) await page.waitForSelector('[data-testid=decision-mix]', { timeout: 10_000 })
    await page.waitForTimeout(2000)
    t.ok(await page.$('[data-testid=rate-chart] canvas'), 'the ingest rate chart is drawn')
    await shot('overview')
  })

  t.test('a record POSTed through the API shows on the Records page within a second, with its envelope', async (t) => {
    await open('#/records/transaction', '[data-testid=records-table]')
    const headers = await page.$$eval('[data-testid=records-table] th', (ths) => ths.map((th) => th.textContent))
    t.match(headers.slice(0, 4), ['Received', 'transaction_id', 'created_at', 'account_id'], 'columns come from the schema: id, time, then fields')
    const posted = Date.now()
    await s.request('POST', '/transaction', transaction('tx-browser-live', 999.99))
    await page.waitForSelector('[data-testid=records-table] >> text=tx-browser-live', { timeout: LIVE_MS })
    t.ok(Date.now() - posted < LIVE_MS, `shown after ${Date.now() - posted} ms`)
    await shot('records')
    await page.click('[data-testid=records-table] >> text=tx-browser-live')
    await page.waitForSelector('[data-testid=record-detail] >> text=Stream seq')
    await page.waitForFunction(() => !document.querySelector('[data-testid=record-detail]')?.textContent?.includes('not yet queryable'))
    const detail = await page.textContent('[data-testid=record-detail]')
    t.match(detail, /Sourceapi/, 'the envelope shows the source')
    t.match(detail, /Schema versionv1/, 'and the schema version')
    t.match(detail, /999\.99/, 'and the fields')
    if (routes.has('GET /decisions/{record_id}')) {
      // The rule stage decides a moment after the record is stored: the panel waits for it rather than erring.
      await page.waitForSelector('[data-testid=record-decision]', { timeout: 10_000 })
      const recordId = (await page.getAttribute('[data-testid=records-table] tr.selected', 'data-record-id')) as string
      const stored = (await (await s.request('GET', `/decisions/${recordId}`)).json()) as { decision: string; fired: string[] }
      const shown = (await page.textContent('[data-testid=record-decision]')) ?? ''
      t.equal(await page.textContent('[data-testid=record-decision] .badge'), stored.decision, 'the panel shows the decision')
      t.match(shown, /score \d+ · rule set v1/, 'with its score and rule set version')
      for (const rule of stored.fired) t.match(shown, rule, `and the rule that fired: ${rule}`)
      t.match(shown, /Evaluated.*after receipt/s, 'and when, how long after receipt')
    }
    await shot('record-detail', false)
    await page.fill('[data-testid=filter-value]', 'tx-browser-3')
    await page.selectOption('.filter-bar select', 'transaction_id')
    await page.click('.filter-bar button[type=submit]')
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=records-table] tbody tr').length === 1)
    t.match(await page.textContent('[data-testid=records-table] tbody'), /tx-browser-3/, 'a field filter narrows the table')
  })

  t.test('a schema edited in the page shows a new version; errors show at the field', async (t) => {
    await open('#/schemas/transaction', '[data-testid=schema-versions]')
    await page.click('[data-testid=edit-schema]')
    await page.click('[data-testid=add-field]')
    const row = '[data-testid=schema-editor] tbody tr:last-child'
    await page.fill(`${row} input[aria-label="Field name"]`, 'risk_note')
    await page.fill(`${row} input[aria-label="Pattern"]`, '([a-z')
    await provoke(async () => {
      await page.click('[data-testid=save-schema]')
      await page.waitForSelector('tr.has-error[data-field=risk_note]')
    })
    t.match(await page.textContent('tr.error-row'), /Invalid regular expression|Unterminated/, 'the bad pattern is named at its row')
    await shot('schema-error')
    await page.fill('tr.has-error input[aria-label="Pattern"]', '')
    await page.click('[data-testid=save-schema]')
    await page.waitForSelector('[data-testid=schema-versions] li[data-version="2"]')
    t.match(
      await page.textContent('[data-testid=schema-versions] li[data-version="2"]'),
      /manual.*added risk_note: string, nullable/s,
      'the new version and its diff',
    )
    t.match(await page.textContent('[data-testid=schema-fields]'), /risk_note/)
    await shot('schemas')
  })

  t.test('a new object type is created from the page', async (t) => {
    await open('#/schemas/new', '[data-testid=new-object-name]')
    await page.fill('[data-testid=new-object-name]', 'chargeback')
    await page.click('[data-testid=save-schema]')
    await page.waitForSelector('.nav-item >> text=chargeback')
    const res = await s.request('POST', '/chargeback', { id: 'cb-1', created_at: '2026-11-23T10:00:00Z' })
    t.equal(res.status, 202, 'the new object takes records')
  })

  t.test('the rules page: a bad expression shows its error at its position', async (t) => {
    if (!routes.has('GET /rules')) {
      await open('#/rules', '[data-testid=not-available]')
      t.match(await page.textContent('[data-testid=not-available]'), /not available in this build/)
      await shot('rules')
      return
    }
    await open('#/rules', 'table.rules')
    await shot('rules')
    await page.click('table.rules tbody tr:first-child td:nth-child(2)')
    await page.waitForSelector('[data-testid=rule-editor]')
    if (routes.has('POST /rules/test')) {
      await page.fill('[data-testid=rule-test-record]', JSON.stringify(transaction('tx-rule-test')))
      await page.click('[data-testid=rule-test-run]')
      await page.waitForSelector('[data-testid=rule-test-result]')
      t.match(
        await page.textContent('[data-testid=rule-test-result]'),
        /Decision\s*(approve|review|block).*score \d+.*(hit|miss|error)/s,
        'Test shows the decision and each rule',
      )
      await shot('rule-test')
    }
    await page.fill('[data-testid=rule-when]', 'record.amount > 100.0 &&\n  record.country ==')
    await provoke(async () => {
      await page.click('[data-testid=save-rule]')
      await page.waitForSelector('[data-testid=expression-error]')
    })
    t.match(await page.textContent('[data-testid=expression-error]'), /Line 2, column \d+/, 'the error names line and column')
    t.ok(await page.$('[data-testid=expression-error] mark'), 'and marks the position in the expression')
    await shot('rule-error')
    await page.click('[data-testid=rule-editor] button[aria-label=Close]')
  })

  t.test("a batch job's progress bar reaches 100%", async (t) => {
    const lines = Array.from({ length: 300 }, (_, i) => JSON.stringify(transaction(`tx-batch-${i}`, i + 1)))
    lines.push(JSON.stringify({ ...transaction('tx-batch-bad'), amount: 'lots' }))
    const res = await s.request('POST', '/batch?object=transaction&file_name=transactions.ndjson', lines.join('\n'), { 'content-type': 'application/x-ndjson' })
    t.equal(res.status, 202)
    const { job_id } = (await res.json()) as { job_id: string }
    await open('#/jobs', `[data-job-id=${job_id}]`)
    await page.waitForSelector(`[data-job-id=${job_id}] [role=progressbar][aria-valuenow="100"]`, { timeout: 20_000 })
    await page.waitForFunction((id) => document.querySelector(`[data-job-id=${id}]`)?.textContent?.includes('completed with errors'), job_id, {
      timeout: 10_000,
    })
    t.match(await page.textContent(`[data-job-id=${job_id}]`), /300 ok · 1 rejected/)
    t.ok(await page.$(`[data-job-id=${job_id}] >> text=Errors CSV`), 'the error report can be downloaded')
    await page.click(`[data-job-id=${job_id}] td:first-child`)
    await page.waitForSelector('.job-detail >> text=First rejected rows')
    await shot('jobs')
  })

  t.test("a batch job's records reach the Overview while it is open: stored count exact, rate and latest records live", async (t) => {
    await open('#/', '[data-testid=stat-total] .stat-value')
    const storedNow = async () => Number((await page.textContent('[data-testid=stat-total] .stat-value'))?.replace(/\D/g, ''))
    const before = await storedNow()
    const lines = Array.from({ length: 500 }, (_, i) => JSON.stringify(transaction(`tx-overview-batch-${i}`, i + 1)))
    const res = await s.request('POST', '/batch?object=transaction', lines.join('\n'), { 'content-type': 'application/x-ndjson' })
    t.equal(res.status, 202)
    // Batch records travel many to a message: the page must count each of them, not each message.
    await page.waitForFunction(
      (want) => document.querySelector('[data-testid=stat-total] .stat-value')?.textContent?.replace(/\D/g, '') === String(want),
      before + 500,
      {
        timeout: 20_000,
      },
    )
    t.equal(await storedNow(), before + 500, 'Records stored counts every record of the job')
    await page.waitForSelector('[data-testid=latest-records] >> text=/tx-overview-batch-\\d+/', { timeout: 5000 })
    // 500 records within the last ten seconds: at least 50/s, where counting messages would show a few.
    const counted = await page
      .waitForFunction(() => Number(document.querySelector('[data-testid=stat-rate] .stat-value')?.textContent?.replace(/[^\d.]/g, '')) >= 50, undefined, {
        timeout: 5000,
      })
      .then(
        () => true,
        () => false,
      )
    t.ok(counted, `the ingest rate counts the job's records: ${await page.textContent('[data-testid=stat-rate] .stat-value')}`)
  })

  t.test('the alerts and access pages', async (t) => {
    if (routes.has('GET /alerts')) await open('#/alerts', '[data-testid=alerts-card] :is([data-testid=alerts-table], [data-testid=alerts-empty])')
    else await open('#/alerts', '[data-testid=not-available]')
    await shot('alerts', false)
    await open('#/access', '[data-testid=keys-table]')
    await page.fill('[data-testid=key-name]', 'fraud-team')
    await page.click('[data-testid=create-key]')
    await page.waitForSelector('[data-testid=new-key-secret]')
    t.match(await page.textContent('[data-testid=new-key-secret]'), /sk_[A-Za-z0-9_-]{40,}/, 'the new secret is shown once')
    await page.waitForSelector('[data-testid=keys-table] >> text=fraud-team')
    if (routes.has('POST /sftp-users')) {
      await page.waitForSelector('[data-testid=sftp-users-empty]')
      await page.fill('[data-testid=sftp-username]', 'Acme Corp')
      await page.fill('[data-testid=sftp-password]', 'short')
      await provoke(async () => {
        await page.click('[data-testid=create-sftp-user]')
        await page.waitForSelector('[data-testid=sftp-user-form] .field-error')
      })
      const errors = await page.$$eval('[data-testid=sftp-user-form] label', (labels) =>
        labels.map((l) => [l.firstChild?.textContent?.trim(), l.querySelector('.field-error')?.textContent ?? '']),
      )
      t.match(
        errors,
        [
          ['User name', /lowercase letters/],
          ['Password', /at least 10 characters/],
        ],
        'each bad field shows its error beside it',
      )
      await shot('access-sftp-error', false)
      await page.fill('[data-testid=sftp-username]', 'acme')
      await page.fill('[data-testid=sftp-password]', 'correct horse battery')
      await page.click('[data-testid=create-sftp-user]')
      await page.waitForSelector('[data-sftp-user=acme]')
      t.match(await page.textContent('[data-sftp-user=acme]'), /acme\s*password/, 'the new user is listed with how it logs in')
      t.notOk(await page.$('[data-testid=sftp-user-form] .field-error'), 'the errors are gone')
      t.equal(await page.inputValue('[data-testid=sftp-password]'), '', 'the password field is cleared')
      await shot('access')
      page.once('dialog', (dialog) => dialog.dismiss())
      await page.click('[data-sftp-user=acme] [data-testid=remove-sftp-user]')
      t.ok(await page.$('[data-sftp-user=acme]'), 'a dismissed confirmation removes nothing')
      let question = ''
      page.once('dialog', (dialog) => {
        question = dialog.message()
        return dialog.accept()
      })
      await page.click('[data-sftp-user=acme] [data-testid=remove-sftp-user]')
      await page.waitForSelector('[data-testid=sftp-users-empty]')
      t.match(question, /Remove the SFTP user acme\?/, 'removing asks first')
      t.same(((await (await s.request('GET', '/sftp-users')).json()) as { users: unknown[] }).users, [], 'and the user is gone on the server')
    } else await shot('access')
  })

  t.test('every page loaded without a console error or an outside request', async (t) => {
    await open('#/', '[data-testid=rate-chart]')
    t.same(consoleErrors, [], 'no console errors')
    t.same(outside, [], 'nothing loaded from outside the server')
  })

  t.test('sign out returns to the sign-in page, and the session is gone', async (t) => {
    await page.click('[data-testid=sign-out]')
    await page.waitForSelector('#api-key')
    await page.reload()
    await page.waitForSelector('#api-key')
    t.pass('signed out across a reload')
  })

  t.test('a read key watches everything and is told what needs admin, without a refused request', async (t) => {
    const { secret } = (await (await s.request('POST', '/keys', { name: 'analyst', scopes: ['read'] })).json()) as { secret: string }
    await page.fill('#api-key', secret)
    await page.click('button[type=submit]')
    await page.waitForSelector('[data-testid=live-status].live')
    await open('#/schemas/transaction', '[data-testid=schema-versions]')
    t.notOk(await page.$('[data-testid=edit-schema]'), 'no schema editing')
    await open('#/access', 'text=Access management needs the admin scope')
    if (routes.has('GET /rules')) await open('#/rules', 'text=The rule set needs the admin scope')
    await open('#/jobs', '[data-testid=jobs-table]')
    t.notOk(await page.$('text=Upload a file'), 'no upload without the ingest scope')
    t.same(consoleErrors, [], 'no console errors')
  })
})

import t from 'tap'
import { ApiKeyStore, openStateDb, SESSION_TTL_MS, SessionStore } from '../storage/index.ts'
import { eventually, startTestSluice, TEST_ADMIN_KEY, type TestSluice } from './helpers/sluice.ts'

const RECORD = {
  transaction_id: 'tx-dash-1',
  account_id: 'acc-1',
  amount: 12.5,
  currency: 'EUR',
  direction: 'debit',
  type: 'card_payment',
  status: 'completed',
  created_at: '2026-11-23T14:02:11Z',
  channel: 'pos',
  country: 'DE',
}

/** Signs in as the dashboard does and returns the session cookie (`name=value`) and the Set-Cookie header. */
async function signIn(s: TestSluice, key: string): Promise<{ res: Response; cookie: string; setCookie: string }> {
  const res = await fetch(`${s.url}/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key }) })
  const setCookie = res.headers.get('set-cookie') ?? ''
  return { res, cookie: setCookie.split(';')[0], setCookie }
}

/** A request as the browser makes it: the cookie, and the dashboard's header unless told otherwise. */
function asBrowser(s: TestSluice, cookie: string, method: string, path: string, body?: unknown, headers: Record<string, string> = { 'x-sluice-csrf': '1' }) {
  return fetch(`${s.url}${path}`, {
    method,
    headers: { cookie, ...(body !== undefined && { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
}

/** Reads server-sent events from `GET /events` until `until` returns true for one, or the time is up. */
async function readEvents(s: TestSluice, cookie: string, until: (event: string, data: any) => boolean, timeoutMs = 5000) {
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(), timeoutMs)
  const res = await fetch(`${s.url}/events`, { headers: { cookie }, signal: abort.signal })
  const seen: { event: string; data: any }[] = []
  let buffer = ''
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += Buffer.from(chunk).toString('utf8')
      let end = buffer.indexOf('\n\n')
      while (end >= 0) {
        const block = buffer.slice(0, end)
        buffer = buffer.slice(end + 2)
        const event = /^event: (.*)$/m.exec(block)?.[1]
        const data = /^data: (.*)$/m.exec(block)?.[1]
        if (event && data) {
          seen.push({ event, data: JSON.parse(data) })
          if (until(event, JSON.parse(data))) return { res, seen }
        }
        end = buffer.indexOf('\n\n')
      }
    }
  } catch (err) {
    if (!abort.signal.aborted) throw err
  } finally {
    clearTimeout(timer)
    abort.abort()
  }
  return { res, seen }
}

t.test('dashboard sessions, keys and live events', async (t) => {
  const s = await startTestSluice(t)

  t.test('signing in with an admin key sets an httpOnly, SameSite=Strict session cookie that works like the key', async (t) => {
    const { res, cookie, setCookie } = await signIn(s, TEST_ADMIN_KEY)
    t.equal(res.status, 200)
    t.match(await res.json(), { signed_in: true, key: { name: 'admin', scopes: ['admin'] }, expires_at: String })
    t.match(setCookie, /^sluice_session=[A-Za-z0-9_-]{43};/)
    t.match(setCookie, /HttpOnly/)
    t.match(setCookie, /SameSite=Strict/)
    t.match(setCookie, /Max-Age=43200/)
    t.notMatch(setCookie, new RegExp(TEST_ADMIN_KEY), 'the key itself is never in the cookie')
    t.match(await (await asBrowser(s, cookie, 'GET', '/session')).json(), { signed_in: true, key: { id: String } })
    const records = await asBrowser(s, cookie, 'GET', '/records/transaction')
    t.equal(records.status, 200, 'a read route answers the cookie')
    const posted = await asBrowser(s, cookie, 'POST', '/transaction', RECORD)
    t.equal(posted.status, 202, 'a change with the dashboard header is accepted')
  })

  t.test('a cookie-authenticated change without the dashboard header, or from another origin, is refused', async (t) => {
    const { cookie } = await signIn(s, TEST_ADMIN_KEY)
    const bare = await asBrowser(s, cookie, 'POST', '/transaction', { ...RECORD, transaction_id: 'tx-csrf' }, {})
    t.equal(bare.status, 403)
    t.match(await bare.json(), { code: 'SLUICE_CSRF_REJECTED' })
    const foreign = await asBrowser(s, cookie, 'PUT', '/schema/transaction', {}, { 'x-sluice-csrf': '1', origin: 'https://evil.example' })
    t.equal(foreign.status, 403)
    t.match(await foreign.json(), { code: 'SLUICE_CSRF_REJECTED', detail: /evil\.example/ })
    const sameOrigin = await asBrowser(
      s,
      cookie,
      'POST',
      '/transaction',
      { ...RECORD, transaction_id: 'tx-same-origin' },
      { 'x-sluice-csrf': '1', origin: s.url },
    )
    t.equal(sameOrigin.status, 202)
    const bearer = await s.request('POST', '/transaction', { ...RECORD, transaction_id: 'tx-bearer' })
    t.equal(bearer.status, 202, 'Bearer clients need no header')
  })

  t.test('a field the API does not know is a 400 naming it, not silently dropped', async (t) => {
    const res = await s.request('POST', '/keys', { name: 'typo', scopes: ['read'], expires: '2027-01-01' })
    t.equal(res.status, 400)
    t.match(await res.json(), { code: 'SLUICE_BAD_REQUEST', errors: [{ pointer: '/body/expires' }] })
    const keys = (await (await s.request('GET', '/keys')).json()) as { keys: { name: string }[] }
    t.notOk(
      keys.keys.some((k) => k.name === 'typo'),
      'no key was made',
    )
  })

  t.test('only keys with the read or admin scope can sign in; unknown keys cannot', async (t) => {
    const created = await s.request('POST', '/keys', { name: 'shipper', scopes: ['ingest'] })
    t.equal(created.status, 201)
    const { secret } = (await created.json()) as { secret: string }
    const ingestOnly = await signIn(s, secret)
    t.equal(ingestOnly.res.status, 403)
    t.match(await ingestOnly.res.json(), { code: 'SLUICE_FORBIDDEN' })
    t.equal(ingestOnly.setCookie, '', 'no cookie')
    const unknown = await signIn(s, 'sk_not_a_key')
    t.equal(unknown.res.status, 401)
    t.match(await (await fetch(`${s.url}/session`)).json(), { signed_in: false }, 'without a cookie GET /session says signed out, not 401')
  })

  t.test('a read key signs in, reads, and is refused admin routes', async (t) => {
    const { secret } = (await (await s.request('POST', '/keys', { name: 'analyst', scopes: ['read'] })).json()) as { secret: string }
    const { cookie } = await signIn(s, secret)
    t.equal((await asBrowser(s, cookie, 'GET', '/stats/pipeline')).status, 200)
    const keys = await asBrowser(s, cookie, 'GET', '/keys')
    t.equal(keys.status, 403)
    t.match(await keys.json(), { code: 'SLUICE_FORBIDDEN' })
  })

  t.test('sign-out ends the session and clears the cookie', async (t) => {
    const { cookie } = await signIn(s, TEST_ADMIN_KEY)
    const out = await asBrowser(s, cookie, 'DELETE', '/session')
    t.equal(out.status, 200)
    t.match(out.headers.get('set-cookie'), /^sluice_session=; Max-Age=0/)
    const after = await asBrowser(s, cookie, 'GET', '/records/transaction')
    t.equal(after.status, 401)
    t.match(await after.json(), { code: 'SLUICE_UNAUTHORIZED', detail: /sign in again/ })
  })

  t.test('revoking a key ends the sessions opened with it at once', async (t) => {
    const { secret, key } = (await (await s.request('POST', '/keys', { name: 'temp', scopes: ['read'] })).json()) as { secret: string; key: { id: string } }
    const { cookie } = await signIn(s, secret)
    t.equal((await asBrowser(s, cookie, 'GET', '/stats/pipeline')).status, 200)
    const revoked = await s.request('DELETE', `/keys/${key.id}`)
    t.equal(revoked.status, 200)
    t.match(await revoked.json(), { id: key.id, revoked_at: String })
    t.equal((await asBrowser(s, cookie, 'GET', '/stats/pipeline')).status, 401)
    t.match(await (await asBrowser(s, cookie, 'GET', '/session')).json(), { signed_in: false })
  })

  t.test('keys: listed without secrets, revoking an unknown key is a 404', async (t) => {
    const list = (await (await s.request('GET', '/keys')).json()) as { keys: Record<string, unknown>[] }
    t.ok(list.keys.length >= 3)
    for (const k of list.keys) t.notOk('key_hash' in k || 'secret' in k, `${k.id} has no secret`)
    const missing = await s.request('DELETE', '/keys/key_0000000000aa')
    t.equal(missing.status, 404)
    t.match(await missing.json(), { code: 'SLUICE_KEY_NOT_FOUND' })
    const bad = await s.request('POST', '/keys', { name: 'x', scopes: ['root'] })
    t.equal(bad.status, 400)
  })

  t.test('GET /events streams a record POSTed through the API within a second, and per-second counts', async (t) => {
    const { cookie } = await signIn(s, TEST_ADMIN_KEY)
    let posted: Promise<{ record_id: string }> | undefined
    let postedAt = 0
    let arrivedAt = 0
    const { res, seen } = await readEvents(s, cookie, (event, data) => {
      if (event === 'hello') {
        postedAt = Date.now()
        posted = s.request('POST', '/transaction', { ...RECORD, transaction_id: 'tx-live' }).then((r) => r.json() as Promise<{ record_id: string }>)
      }
      if (event === 'record') arrivedAt = Date.now()
      return event === 'tick' && data.tick.records.transaction >= 1
    })
    t.equal(res.headers.get('content-type'), 'text/event-stream; charset=utf-8')
    const live = seen.find((e) => e.event === 'record')
    t.match(live?.data.record, { object: 'transaction', source: 'api', schema_version: 1, data: { transaction_id: 'tx-live', amount: 12.5 } })
    t.equal(live?.data.record.record_id, (await posted)?.record_id, 'the record as it was accepted')
    t.ok(arrivedAt - postedAt < 1000, `the event came ${arrivedAt - postedAt} ms after the POST`)
    t.ok(
      seen.some((e) => e.event === 'tick' && e.data.tick.records.transaction === 1),
      'a tick counted it',
    )
    const stats = await eventually(async () => {
      const again = await readEvents(s, cookie, (event) => event === 'stats', 3000)
      return again.seen.find((e) => e.event === 'stats')
    })
    t.match(stats.data.objects, [{ object: String, total: Number }])
  })

  t.test("GET /decisions/:record_id answers a record's decision once the rule stage made it; 404 with a code before", async (t) => {
    const posted = await s.request('POST', '/transaction', { ...RECORD, transaction_id: 'tx-decided', account_id: 'acc-decided', amount: 25_000 })
    t.equal(posted.status, 202)
    const { record_id } = (await posted.json()) as { record_id: string }
    // The rule stage decides after the record is stored, and the sink stores the decision after that.
    const decision = await eventually(
      async () => {
        const res = await s.request('GET', `/decisions/${record_id}`)
        if (res.status === 404) t.match(await res.json(), { code: 'SLUICE_DECISION_NOT_FOUND' }, 'not yet decided is a 404 with a code')
        return res.status === 200 ? res.json() : undefined
      },
      10_000,
      100,
    )
    t.match(decision, {
      record_id,
      object: 'transaction',
      account_id: 'acc-decided',
      decision: /^(approve|review|block)$/,
      score: Number,
      fired: Array,
      shadow_hits: Array,
      rule_set_version: 1,
      evaluate_rules: true,
      received_at: String,
      evaluated_at: String,
      latency_ms: Number,
    })
    t.ok(decision.fired.includes('large-amount'), `the large amount rule fired (${decision.fired.join(', ')})`)
    t.ok(decision.score > 0 && decision.latency_ms >= 0, 'with its score and how long the decision took')
    t.notOk('_seq' in decision, 'no storage internals')

    const { secret } = (await (await s.request('POST', '/keys', { name: 'decision-reader', scopes: ['read'] })).json()) as { secret: string }
    const asReader = await s.request('GET', `/decisions/${record_id}`, undefined, { authorization: `Bearer ${secret}` })
    t.equal(asReader.status, 200, 'a read key reads decisions')

    const fresh = (await (await s.request('POST', '/transaction', { ...RECORD, transaction_id: 'tx-waited', account_id: 'acc-waited' })).json()) as {
      record_id: string
    }
    const waited = await s.request('GET', `/decisions/${fresh.record_id}?wait_ms=8000`)
    t.equal(waited.status, 200, '?wait_ms waits for a decision not made yet')
    t.match(await waited.json(), { record_id: fresh.record_id, decision: 'approve', fired: [] })

    const started = Date.now()
    const unknown = await s.request('GET', '/decisions/01NOSUCHRECORD0000000000000?wait_ms=300')
    t.equal(unknown.status, 404)
    t.match(unknown.headers.get('content-type'), /application\/problem\+json/)
    t.match(await unknown.json(), { code: 'SLUICE_DECISION_NOT_FOUND', status: 404, detail: /01NOSUCHRECORD/ })
    t.ok(Date.now() - started >= 300, 'after waiting as long as asked')
    const tooLong = await s.request('GET', `/decisions/${record_id}?wait_ms=60000`)
    t.equal(tooLong.status, 400)
    t.match(await tooLong.json(), { code: 'SLUICE_BAD_REQUEST', errors: [{ pointer: '/querystring/wait_ms' }] })
  })

  t.test('an event stream without a session is refused', async (t) => {
    const res = await fetch(`${s.url}/events`)
    t.equal(res.status, 401)
  })

  t.test('GET /stats/pipeline shows each stream and the sink consumer with its lag', async (t) => {
    const res = await s.request('GET', '/stats/pipeline')
    t.equal(res.status, 200)
    const body = (await res.json()) as {
      streams: { name: string; present: boolean; messages: number }[]
      consumers: { name: string; role: string; waiting: number }[]
    }
    t.match(
      body.streams.find((x) => x.name === 'SLUICE_RECORDS'),
      { present: true, messages: Number },
    )
    const sink = body.consumers.find((c) => c.name === 'sink-analytics')
    t.match(sink, { role: 'sink', pending: Number })
    t.ok((sink?.waiting ?? 0) > 0, 'the running sink is attached')
  })
})

t.test('a session expires after its lifetime', async (t) => {
  const db = openStateDb(`${t.testdirName}/state.db`)
  t.teardown(() => db.close())
  const keys = new ApiKeyStore(db)
  const sessions = new SessionStore(db)
  const { info } = keys.create({ name: 'reader', scopes: ['read'] })
  const now = Date.now()
  const { token } = sessions.open(info, now)
  t.match(sessions.verify(token, now + SESSION_TTL_MS - 1000), { key: { id: info.id, scopes: ['read'] } })
  t.equal(sessions.verify(token, now + SESSION_TTL_MS + 1), undefined)
})

import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import type { JetStreamManager } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { type Static, Type } from '@sinclair/typebox'
import { stringifySetCookie } from 'cookie'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { type ApiKeyInfo, hasScope, SCOPES, SESSION_TTL_MS, type SessionStore } from '../../storage/index.ts'
import { SluiceError } from '../errors.ts'
import { CONSUMERS, EVERY_RULE_CONSUMER, STREAMS, SUBJECTS } from '../streams.ts'
import type { IngressDeps } from './app.ts'
import { authenticate, SESSION_COOKIE, sessionToken } from './auth.ts'
import { LiveFeed } from './live-feed.ts'
import { problem } from './route-schemas.ts'

/** What the dashboard needs beyond the rest of the API: sessions, and NATS for the live feed and stream state. */
export interface DashboardDeps {
  sessions: SessionStore
  nc: NatsConnection
  jsm: JetStreamManager
}

/** The dashboard's folder; `web/build.ts` puts the built page in its `dist/`. */
const WEB_DIR = fileURLToPath(new URL('../../web', import.meta.url))
const PAGE_FILE = 'dist/index.html'

/** The page loads only what this server sends: no CDN, no outside fonts, no framing by other sites. */
const PAGE_HEADERS = {
  'content-security-policy': "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
}

const NOT_BUILT_PAGE = `<!doctype html><meta charset="utf-8"><title>Sluice</title>
<p>The dashboard is not built. Run <code>make run</code>, or <code>node --import tsx web/build.ts</code> and reload.</p>`

/** How often an open event stream checks that its session or key is still valid. */
const EVENT_STREAM_RECHECK_MS = 15_000

const KeyInfoSchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  scopes: Type.Array(Type.String()),
  created_at: Type.String(),
  revoked_at: Type.Union([Type.String(), Type.Null()]),
  last_used_at: Type.Union([Type.String(), Type.Null()]),
})
const SessionSchema = Type.Object({
  signed_in: Type.Boolean(),
  key: Type.Optional(KeyInfoSchema),
  expires_at: Type.Optional(Type.String()),
})
const SignInBody = Type.Object({ key: Type.String({ minLength: 1, maxLength: 512, description: 'an API key with the read or admin scope' }) })
const CreateKeyBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 100 }),
    scopes: Type.Array(Type.Union(SCOPES.map((s) => Type.Literal(s))), { minItems: 1, uniqueItems: true }),
  },
  { additionalProperties: false },
)
const KeyParams = Type.Object({ id: Type.String({ pattern: '^key_[a-f0-9]+$' }) })
const AssetParams = Type.Object({ file: Type.String({ pattern: '^[A-Za-z0-9_.-]+$' }) })
const PipelineSchema = Type.Object({
  streams: Type.Array(
    Type.Object({
      name: Type.String(),
      subjects: Type.Array(Type.String()),
      present: Type.Boolean(),
      messages: Type.Integer(),
      bytes: Type.Integer(),
      first_seq: Type.Integer(),
      last_seq: Type.Integer(),
    }),
  ),
  consumers: Type.Array(
    Type.Object({
      stream: Type.String(),
      name: Type.String(),
      role: Type.String({ description: 'the Sluice role that consumes it: sink, rules, or other' }),
      pending: Type.Integer({ description: 'messages not yet delivered: the lag' }),
      ack_pending: Type.Integer({ description: 'delivered, not yet acknowledged' }),
      redelivered: Type.Integer(),
      waiting: Type.Integer({ description: 'pull requests waiting: above 0 while a consumer process is attached' }),
      last_active: Type.Union([Type.String(), Type.Null()]),
    }),
  ),
})

const SINK_CONSUMERS: ReadonlySet<string> = new Set([CONSUMERS.analyticsSink.durable, CONSUMERS.ruleOutcomeSink.durable])
const RULE_STAGE_CONSUMERS: ReadonlySet<string> = new Set(EVERY_RULE_CONSUMER)
const roleOfConsumer = (name: string) => (SINK_CONSUMERS.has(name) ? 'sink' : RULE_STAGE_CONSUMERS.has(name) ? 'rules' : 'other')

function sessionCookie(request: FastifyRequest, value: string, maxAgeSeconds: number): string {
  return stringifySetCookie({
    name: SESSION_COOKIE,
    value,
    httpOnly: true,
    sameSite: 'strict',
    path: '/',
    maxAge: maxAgeSeconds,
    secure: request.protocol === 'https',
  })
}

const sessionView = (key: ApiKeyInfo, expires_at: string): Static<typeof SessionSchema> => ({ signed_in: true, key, expires_at })

/**
 * The dashboard (issue 7): its static files at `/`, sign-in sessions, the live event stream, API key
 * administration and the JetStream state the Overview shows. docs/dashboard.md describes each.
 */
export function registerDashboardRoutes(app: FastifyInstance, deps: IngressDeps): void {
  const { keys, registry, queries, log } = deps
  const { sessions, jsm } = deps.dashboard
  const feed = new LiveFeed({
    nc: deps.dashboard.nc,
    stats: () => queries.request(SUBJECTS.queryStats, { objects: registry.objects() }),
    log: log.child({ role: 'ingress', part: 'live-feed' }),
  })
  const openStreams = new Set<FastifyReply>()
  // Event streams never end by themselves; close them so that fastify's close does not wait for them.
  app.addHook('preClose', async () => {
    for (const reply of openStreams) reply.raw.end()
    feed.stop()
  })

  const built = () => existsSync(join(WEB_DIR, PAGE_FILE))
  if (!built()) log.warn('the dashboard is not built; run make run, or node --import tsx web/build.ts')
  // Rooted at web/, which always exists (dist/ may not yet); only the two routes below send files from it.
  app.register(fastifyStatic, { root: WEB_DIR, serve: false })

  app.get('/', { config: { scope: 'public' }, schema: { hide: true } }, async (_request, reply) => {
    reply.headers(PAGE_HEADERS)
    if (!built()) return reply.code(503).type('text/html; charset=utf-8').send(NOT_BUILT_PAGE)
    // The page names its assets by content hash: it must be revalidated, the assets never need to be.
    return reply.header('cache-control', 'no-cache').sendFile(PAGE_FILE, { cacheControl: false })
  })

  app.get<{ Params: Static<typeof AssetParams> }>(
    '/assets/:file',
    { config: { scope: 'public' }, schema: { hide: true, params: AssetParams } },
    async (request, reply) =>
      reply.header('x-content-type-options', 'nosniff').sendFile(`dist/assets/${request.params.file}`, { immutable: true, maxAge: '365d' }),
  )

  app.get(
    '/session',
    {
      config: { scope: 'public' },
      schema: {
        tags: ['dashboard'],
        summary: 'Whether this browser is signed in to the dashboard, and as which key',
        security: [],
        response: { 200: SessionSchema },
      },
    },
    async (request) => {
      const token = sessionToken(request)
      const session = token ? sessions.verify(token) : undefined
      return session ? sessionView(session.key, session.expires_at) : { signed_in: false }
    },
  )

  app.post<{ Body: Static<typeof SignInBody> }>(
    '/session',
    {
      config: { scope: 'public' },
      schema: {
        tags: ['dashboard'],
        summary: 'Sign in to the dashboard with an API key (read or admin scope); sets an httpOnly session cookie',
        security: [],
        body: SignInBody,
        response: { 200: SessionSchema, 401: problem, 403: problem },
      },
    },
    async (request, reply) => {
      const key = keys.verify(request.body.key)
      if (!key) throw new SluiceError('SLUICE_UNAUTHORIZED', 'that API key is unknown or revoked')
      if (!hasScope(key, 'read'))
        throw new SluiceError('SLUICE_FORBIDDEN', `the dashboard needs a key with the read or admin scope; this one has ${key.scopes.join(', ')}`)
      keys.touch(key)
      const { token, expires_at } = sessions.open(key)
      reply.header('set-cookie', sessionCookie(request, token, SESSION_TTL_MS / 1000))
      return sessionView(key, expires_at)
    },
  )

  app.delete(
    '/session',
    {
      config: { scope: 'public' },
      schema: { tags: ['dashboard'], summary: 'Sign out: ends the session and clears its cookie', security: [], response: { 200: SessionSchema } },
    },
    async (request, reply) => {
      const token = sessionToken(request)
      if (token) sessions.close(token)
      reply.header('set-cookie', sessionCookie(request, '', 0))
      return { signed_in: false }
    },
  )

  app.get(
    '/events',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['dashboard'],
        summary: 'Server-sent events: hello (history), tick (per-second counts), stats, record (sampled), alert, schema. See docs/dashboard.md.',
      },
    },
    (request, reply) => {
      reply.hijack()
      const res = reply.raw
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        // Proxies such as nginx would otherwise hold events back in their buffers.
        'x-accel-buffering': 'no',
      })
      const send = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
      res.write('retry: 2000\n\n')
      send('hello', { objects: registry.objects(), history: feed.history() })
      const stopListening = feed.listen((event) => send(event.type, event))
      const recheck = setInterval(() => {
        try {
          authenticate(request, keys, sessions)
        } catch {
          send('signed_out', {})
          res.end()
        }
      }, EVENT_STREAM_RECHECK_MS).unref()
      openStreams.add(reply)
      res.on('close', () => {
        clearInterval(recheck)
        stopListening()
        openStreams.delete(reply)
      })
    },
  )

  app.get(
    '/stats/pipeline',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['dashboard'],
        summary: "Every JetStream stream's size and every consumer's lag: what the Overview shows as pipeline health",
        response: { 200: PipelineSchema, 503: problem },
      },
    },
    async () => {
      const result: Static<typeof PipelineSchema> = { streams: [], consumers: [] }
      for (const { name, subjects } of Object.values(STREAMS)) {
        const info = await jsm.streams.info(name).catch(() => undefined)
        const state = info?.state
        result.streams.push({
          name,
          subjects: [...subjects],
          present: info !== undefined,
          messages: state?.messages ?? 0,
          bytes: state?.bytes ?? 0,
          first_seq: state?.first_seq ?? 0,
          last_seq: state?.last_seq ?? 0,
        })
        if (!info) continue
        for await (const c of jsm.consumers.list(name)) {
          const lastActive = c.delivered.last_active as unknown
          result.consumers.push({
            stream: name,
            name: c.name,
            role: roleOfConsumer(c.name),
            pending: c.num_pending,
            ack_pending: c.num_ack_pending,
            redelivered: c.num_redelivered,
            waiting: c.num_waiting,
            last_active: typeof lastActive === 'string' ? lastActive : null,
          })
        }
      }
      return result
    },
  )

  app.get(
    '/keys',
    {
      config: { scope: 'admin' },
      schema: { tags: ['access'], summary: 'Every API key (never the secrets)', response: { 200: Type.Object({ keys: Type.Array(KeyInfoSchema) }) } },
    },
    async () => ({ keys: keys.list() }),
  )

  app.post<{ Body: Static<typeof CreateKeyBody> }>(
    '/keys',
    {
      config: { scope: 'admin' },
      schema: {
        tags: ['access'],
        summary: 'Create an API key; the answer is the only time its secret is shown',
        body: CreateKeyBody,
        response: { 201: Type.Object({ secret: Type.String(), key: KeyInfoSchema }), 400: problem },
      },
    },
    async (request, reply) => {
      const { key, info } = keys.create({ ...request.body, actor: request.apiKey?.id ?? 'unknown' })
      return reply.code(201).send({ secret: key, key: info })
    },
  )

  app.delete<{ Params: Static<typeof KeyParams> }>(
    '/keys/:id',
    {
      config: { scope: 'admin' },
      schema: {
        tags: ['access'],
        summary: 'Revoke an API key: refused at once, and the dashboard sessions opened with it end',
        params: KeyParams,
        response: { 200: KeyInfoSchema, 404: problem },
      },
    },
    async (request) => {
      const { id } = request.params
      keys.revoke(id, request.apiKey?.id ?? 'unknown')
      const key = keys.list().find((k) => k.id === id)
      if (!key) throw new SluiceError('SLUICE_KEY_NOT_FOUND', `there is no API key ${id}`)
      return key
    },
  )
}

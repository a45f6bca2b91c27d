import swagger from '@fastify/swagger'
import { type Static, Type } from '@sinclair/typebox'
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify'
import { type ParseError, parse as parseTolerant, printParseErrorCode } from 'jsonc-parser'
import type { DecisionWatch } from '../../rules/index.ts'
import type { ApiKeyStore, BatchJobStore, SchemaRegistry, SchemaVersion, SftpUserStore, UploadLinkStore } from '../../storage/index.ts'
import type { SluiceConfig } from '../config.ts'
import { isSluiceError, SluiceError } from '../errors.ts'
import type { AcceptOutcome, RecordIngestor } from '../ingest.ts'
import type { Logger } from '../logger.ts'
import { type Metrics, metricsText } from '../metrics.ts'
import type { QueryClient } from '../query.ts'
import { SUBJECTS } from '../streams.ts'
import { installAuth } from './auth.ts'
import { registerBatchRoutes } from './batch-routes.ts'
import { type DashboardDeps, registerDashboardRoutes } from './dashboard-routes.ts'
import { installProblemHandlers } from './problem.ts'
import { ObjectParams, problem } from './route-schemas.ts'
import { type RuleApi, registerRuleRoutes, SyncDecisionSchema } from './rule-routes.ts'
import { registerSchemaRoutes } from './schema-routes.ts'
import { registerSftpUserRoutes } from './sftp-user-routes.ts'
import { registerUploadLinkRoutes } from './upload-link-routes.ts'

/** What readiness reports: each check with whether it passes. */
export interface ReadinessReport {
  ready: boolean
  checks: Record<string, { ok: boolean; detail?: string | number }>
}

export interface IngressDeps {
  config: SluiceConfig
  log: Logger
  registry: SchemaRegistry
  keys: ApiKeyStore
  jobs: BatchJobStore
  links: UploadLinkStore
  sftpUsers: SftpUserStore
  rules: RuleApi
  dashboard: DashboardDeps
  ingestor: RecordIngestor
  queries: QueryClient
  /** Announces a schema version this process made, to every process. */
  publishSchemaChange: (version: SchemaVersion) => Promise<void>
  metrics: Metrics
  readiness: () => Promise<ReadinessReport>
}

const AcceptedSchema = Type.Object({
  record_id: Type.String(),
  object: Type.String(),
  stream_seq: Type.Integer(),
  schema_version: Type.Integer(),
  duplicate: Type.Boolean({ description: 'true when this was a retry of a record already stored; record_id is the original one' }),
  schema_changed: Type.Boolean({ description: 'true when update_schema made a new schema version for this record' }),
  schema_changes: Type.Optional(Type.Array(Type.Unknown(), { description: 'what changed, when schema_changed' })),
  decision: Type.Optional(SyncDecisionSchema),
})
const IngestQuery = Type.Object({
  update_schema: Type.Optional(Type.Boolean({ description: 'apply the automatic schema evolution rules (also a top-level body field)' })),
  decision: Type.Optional(Type.Literal('sync', { description: 'wait for the rule stage and answer with its decision (pending after rules.syncTimeoutMs)' })),
})
const RecordsQuery = Type.Object(
  {
    limit: Type.Integer({ minimum: 1, maximum: 1000, default: 50 }),
    cursor: Type.Optional(Type.String({ pattern: '^[0-9]+$', description: 'next_cursor of the previous page' })),
    view: Type.Union([Type.Literal('current'), Type.Literal('history')], {
      default: 'current',
      description: 'current: the latest version of each record id; history: every version ever stored',
    }),
  },
  { additionalProperties: Type.String(), description: 'Any other parameter is an equality filter on a field: ?country=DE' },
)
const RecordViewSchema = Type.Object({
  record_id: Type.String(),
  seq: Type.Integer(),
  received_at: Type.String(),
  stored_at: Type.String(),
  source: Type.String(),
  schema_version: Type.Integer(),
  job_id: Type.Union([Type.String(), Type.Null()], { description: 'the batch job that carried the record' }),
  data: Type.Record(Type.String(), Type.Unknown()),
})
const ObjectStatsSchema = Type.Object({
  object: Type.String(),
  total: Type.Integer(),
  rate_per_second: Type.Number(),
  last_received_at: Type.Union([Type.String(), Type.Null()]),
  freshness_ms: Type.Union([Type.Number(), Type.Null()]),
})
const ReadinessSchema = Type.Object({
  ready: Type.Boolean(),
  checks: Type.Record(Type.String(), Type.Object({ ok: Type.Boolean(), detail: Type.Optional(Type.Union([Type.String(), Type.Number()])) })),
})

/** Where JSON.parse failed, for the error answer: V8 on Node 20 no longer says, so a tolerant parser finds it. */
function jsonErrorPosition(body: string): { offset: number; line: number; column: number; what: string } {
  const errors: ParseError[] = []
  parseTolerant(body, errors, { disallowComments: true, allowTrailingComma: false, allowEmptyContent: false })
  const offset = errors[0]?.offset ?? 0
  const before = body.slice(0, offset)
  const line = before.split('\n').length
  return { offset, line, column: offset - before.lastIndexOf('\n'), what: errors[0] ? printParseErrorCode(errors[0].error) : 'InvalidJSON' }
}

function parseJson(body: string): unknown {
  try {
    return JSON.parse(body)
  } catch (cause) {
    const at = jsonErrorPosition(body)
    const message = `${at.what} at line ${at.line}, column ${at.column} (byte ${at.offset})`
    throw new SluiceError('SLUICE_INVALID_JSON', `the body is not valid JSON: ${message}`, { cause, errors: [{ pointer: '', message }] })
  }
}

/** Builds the HTTP API (not listening): tests inject() into it, `sluice serve` listens on it. */
export async function buildIngressApp(deps: IngressDeps): Promise<FastifyInstance> {
  const { config, registry, ingestor, queries, metrics } = deps
  const app = Fastify({
    loggerInstance: deps.log.child({ role: 'ingress' }) as FastifyBaseLogger,
    bodyLimit: config.http.bodyLimit,
    // Per-request log lines would cost more than the request at thousands per second;
    // /metrics counts requests, and errors are logged by the problem handler.
    logController: new LogController({ disableRequestLogging: true }),
    // fastify's default drops fields a schema does not name; a field the server does not know is the caller's
    // mistake (a typo in a scope, say) and gets a 400 naming it.
    ajv: { customOptions: { removeAdditional: false } },
  })
  await app.register(swagger, {
    openapi: {
      info: { title: 'Sluice API', version: '1', description: 'Real-time ingestion for fraud and transaction monitoring' },
      components: { securitySchemes: { apiKey: { type: 'http', scheme: 'bearer' } } },
      security: [{ apiKey: [] }],
    },
  })
  installProblemHandlers(app)
  installAuth(app, deps.keys, deps.dashboard.sessions)
  // One JSON parser that names the position of a syntax error; other content types get 415.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, parseJson(body as string))
    } catch (err) {
      done(err as Error, undefined)
    }
  })

  app.get(
    '/healthz',
    { config: { scope: 'public' }, schema: { tags: ['ops'], security: [], response: { 200: Type.Object({ status: Type.Literal('ok') }) } } },
    async () => ({ status: 'ok' as const }),
  )

  app.get(
    '/readyz',
    { config: { scope: 'public' }, schema: { tags: ['ops'], security: [], response: { 200: ReadinessSchema, 503: ReadinessSchema } } },
    async (_req, reply) => {
      const report = await deps.readiness()
      return reply.code(report.ready ? 200 : 503).send(report)
    },
  )

  app.get('/metrics', { config: { scope: 'read' }, schema: { tags: ['ops'] } }, async (_req, reply) => {
    return reply.type(metrics.registry.contentType).send(await metricsText(metrics))
  })

  app.get('/openapi.json', { config: { scope: 'read' }, schema: { tags: ['ops'], hide: true } }, async () => app.swagger())

  app.post<{ Params: Static<typeof ObjectParams>; Querystring: Static<typeof IngestQuery>; Headers: { 'idempotency-key'?: string } }>(
    '/:object',
    {
      config: { scope: 'ingest' },
      schema: {
        tags: ['ingest'],
        summary: 'Ingest one record of an object type (transaction, account, activity, ...)',
        params: ObjectParams,
        querystring: IngestQuery,
        headers: Type.Object({ 'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 256 })) }),
        body: Type.Unknown({ description: 'One record; it must match the schema on file for the object' }),
        response: { 202: AcceptedSchema, 400: problem, 401: problem, 403: problem, 404: problem, 413: problem, 415: problem, 503: problem },
      },
    },
    async (request, reply) => {
      const started = process.hrtime.bigint()
      const { object } = request.params
      let record = request.body
      let updateSchema = request.query.update_schema === true
      // The flag may also come as a top-level body field; it is never part of the record.
      if (record && typeof record === 'object' && !Array.isArray(record) && 'update_schema' in record) {
        const { update_schema, ...rest } = record as Record<string, unknown>
        if (typeof update_schema !== 'boolean') {
          throw new SluiceError('SLUICE_BAD_REQUEST', 'update_schema must be true or false', {
            errors: [{ pointer: '/update_schema', message: 'expected a boolean' }],
          })
        }
        updateSchema ||= update_schema
        record = rest
      }
      let outcome: AcceptOutcome
      let watch: DecisionWatch | undefined
      try {
        outcome = await ingestor.accept(object, record, {
          source: 'api',
          actor: request.apiKey?.id ?? 'unknown',
          idempotencyKey: request.headers['idempotency-key'],
          updateSchema,
          beforePublish: request.query.decision === 'sync' ? (recordId) => (watch = deps.rules.watchDecision(object, recordId)) : undefined,
        })
      } catch (err) {
        watch?.cancel()
        if (isSluiceError(err) && err.code === 'SLUICE_STREAM_UNAVAILABLE') metrics.ingestRecords.inc({ object, outcome: 'unavailable' })
        throw err
      }
      // A duplicate was decided on for the first POST, under that record id: GET /decisions/:record_id has it.
      if (outcome.status === 'rejected' || outcome.duplicate) watch?.cancel()
      if (outcome.status === 'rejected') {
        metrics.ingestRecords.inc({ object, outcome: 'rejected' })
        const fields = outcome.errors.map((e) => e.pointer.slice(1) || '(record)').join(', ')
        const detail =
          outcome.code === 'SLUICE_SCHEMA_INCOMPATIBLE'
            ? `update_schema cannot make the ${object} schema (version ${outcome.schema_version}) accept this record; a manual schema update is needed for: ${fields}`
            : `the ${object} record does not match schema version ${outcome.schema_version}; fields at fault: ${fields}`
        throw new SluiceError(outcome.code, detail, { errors: outcome.errors })
      }
      metrics.ingestRecords.inc({ object, outcome: outcome.duplicate ? 'duplicate' : 'accepted' })
      metrics.ingestLatency.observe({ object }, Number(process.hrtime.bigint() - started) / 1e9)
      const { status, ...accepted } = outcome
      const decision =
        request.query.decision !== 'sync' ? undefined : watch && !outcome.duplicate ? await deps.rules.syncDecision(watch) : ({ status: 'pending' } as const)
      return reply.code(202).send({ ...accepted, object, schema_changed: outcome.schema_changes !== undefined, ...(decision && { decision }) })
    },
  )

  app.get<{ Params: Static<typeof ObjectParams>; Querystring: Static<typeof RecordsQuery> }>(
    '/records/:object',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['query'],
        summary: 'Stored records of an object, newest first',
        params: ObjectParams,
        querystring: RecordsQuery,
        response: {
          200: Type.Object({ object: Type.String(), records: Type.Array(RecordViewSchema), next_cursor: Type.Optional(Type.String()) }),
          400: problem,
          404: problem,
          503: problem,
        },
      },
    },
    async (request) => {
      const { object } = request.params
      ingestor.validatorFor(object)
      const { limit, cursor, view, ...filters } = request.query
      return queries.request(SUBJECTS.queryRecords, {
        object,
        limit,
        view,
        before: cursor === undefined ? undefined : Number(cursor),
        filters: filters as Record<string, string>,
      })
    },
  )

  app.get(
    '/stats',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['query'],
        summary: 'Record counts, ingest rate and freshness per object',
        response: { 200: Type.Object({ objects: Type.Array(ObjectStatsSchema) }), 503: problem },
      },
    },
    async () => ({ objects: await queries.request(SUBJECTS.queryStats, { objects: registry.objects() }) }),
  )

  registerSchemaRoutes(app, deps)
  registerBatchRoutes(app, deps)
  registerUploadLinkRoutes(app, deps)
  registerSftpUserRoutes(app, deps)
  registerRuleRoutes(app, deps)
  registerDashboardRoutes(app, deps)
  return app
}

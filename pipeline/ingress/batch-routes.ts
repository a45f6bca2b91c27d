import { join } from 'node:path'
import { Readable } from 'node:stream'
import { type Static, Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyReply } from 'fastify'
import { type BatchJob, BatchJobStore, FINAL_STATES, JOB_STATES } from '../../storage/index.ts'
import { createJobForPayload, payloadFormatOf, storePayload } from '../batch/upload.ts'
import { SluiceError } from '../errors.ts'
import { errorReportCsv } from '../files/index.ts'
import type { IngressDeps } from './app.ts'
import { problem } from './route-schemas.ts'

const FIRST_ERRORS = 10

const RowErrorSchema = Type.Object({
  row: Type.Integer(),
  record_key: Type.Union([Type.String(), Type.Null()]),
  pointer: Type.String(),
  message: Type.String(),
})
const JobStatusSchema = Type.Object({
  job_id: Type.String(),
  object: Type.Union([Type.String(), Type.Null()]),
  state: Type.Union(JOB_STATES.map((s) => Type.Literal(s))),
  source: Type.String(),
  file_name: Type.Union([Type.String(), Type.Null()]),
  format: Type.String(),
  compressed: Type.Boolean(),
  update_schema: Type.Boolean(),
  evaluate_rules: Type.Boolean(),
  payload_bytes: Type.Integer(),
  counts: Type.Object({
    total: Type.Union([Type.Integer(), Type.Null()], { description: 'records in the payload, known once validated' }),
    processed: Type.Integer(),
    accepted: Type.Integer(),
    rejected: Type.Integer(),
    stored: Type.Integer({ description: 'accepted records queryable in analytics' }),
    evaluated: Type.Integer({ description: 'records evaluated by the rule stage' }),
  }),
  progress: Type.Object({ percent: Type.Number(), stored_percent: Type.Number() }),
  timestamps: Type.Record(Type.String(), Type.Union([Type.String(), Type.Null()])),
  timings_ms: Type.Record(Type.String(), Type.Union([Type.Number(), Type.Null()])),
  error: Type.Union([Type.String(), Type.Null()]),
  first_errors: Type.Array(RowErrorSchema),
  status_url: Type.String(),
  errors_url: Type.String(),
})
const JobParams = Type.Object({ job_id: Type.String({ pattern: '^job_[A-Za-z0-9_-]+$' }) })
const UploadQuery = Type.Object({
  object: Type.Optional(Type.String({ description: 'required for NDJSON and CSV; JSON bodies may say it themselves' })),
  update_schema: Type.Boolean({ default: false }),
  evaluate_rules: Type.Boolean({ default: true, description: 'false for historical backfill: no alerts are raised' }),
  file_name: Type.Optional(Type.String({ maxLength: 255 })),
})
const ListQuery = Type.Object({
  job_id: Type.Optional(Type.String()),
  state: Type.Optional(Type.Union(JOB_STATES.map((s) => Type.Literal(s)))),
  object: Type.Optional(Type.String()),
  limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
})

const ms = (from: string | null, to: string | null) => (from && to ? Date.parse(to) - Date.parse(from) : null)

/** A job as `/batch-status` shows it. */
export function jobStatus(job: BatchJob, jobs: BatchJobStore): Static<typeof JobStatusSchema> {
  const processed = job.accepted + job.rejected
  const end = job.finished_at ?? new Date().toISOString()
  return {
    job_id: job.id,
    object: job.object,
    state: job.state,
    source: job.source,
    file_name: job.file_name,
    format: job.format,
    compressed: job.compressed,
    update_schema: job.update_schema,
    evaluate_rules: job.evaluate_rules,
    payload_bytes: job.payload_bytes,
    counts: { total: job.total, processed, accepted: job.accepted, rejected: job.rejected, stored: job.stored, evaluated: job.evaluated },
    progress: {
      percent: job.state === 'completed' || job.state === 'completed_with_errors' ? 100 : job.total ? Math.floor((processed / job.total) * 1000) / 10 : 0,
      stored_percent: job.accepted ? Math.floor((Math.min(job.stored, job.accepted) / job.accepted) * 1000) / 10 : 0,
    },
    timestamps: {
      created_at: job.created_at,
      queued_at: job.queued_at,
      validating_at: job.validating_at,
      processing_at: job.processing_at,
      finished_at: job.finished_at,
    },
    timings_ms: {
      queued: ms(job.queued_at, job.validating_at ?? (job.finished_at || null)),
      validating: ms(job.validating_at, job.processing_at ?? job.finished_at),
      processing: ms(job.processing_at, job.processing_at ? end : null),
      total: ms(job.created_at, end),
    },
    error: job.error,
    first_errors: jobs.firstErrors(job.id, FIRST_ERRORS),
    status_url: `/batch-status/${job.id}`,
    errors_url: `/batch-status/${job.id}/errors`,
  }
}

export function registerBatchRoutes(app: FastifyInstance, deps: IngressDeps): void {
  const { jobs, config, registry } = deps

  function jobOr404(id: string): BatchJob {
    const job = jobs.get(id)
    if (!job) throw new SluiceError('SLUICE_JOB_NOT_FOUND', `there is no batch job ${id}`)
    return job
  }

  // Uploads are streamed to disk, never parsed here: their own scope takes every body as a raw stream.
  app.register(async (uploads) => {
    uploads.removeAllContentTypeParsers()
    uploads.addContentTypeParser('*', (_request, payload, done) => done(null, payload))
    uploads.post<{ Querystring: Static<typeof UploadQuery>; Headers: { 'idempotency-key'?: string; 'content-encoding'?: string } }>(
      '/batch',
      {
        config: { scope: 'ingest' },
        schema: {
          tags: ['batch'],
          summary: 'Upload many records (JSON, NDJSON or CSV, optionally gzipped) as a batch job',
          querystring: UploadQuery,
          headers: Type.Object({
            'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
            'content-encoding': Type.Optional(Type.String()),
          }),
          response: {
            202: Type.Object({ job_id: Type.String(), status_url: Type.String(), state: Type.String(), existing: Type.Boolean() }),
            400: problem,
            404: problem,
            409: problem,
            413: problem,
            415: problem,
          },
        },
      },
      async (request, reply) => {
        const format = payloadFormatOf(request.headers['content-type'])
        if (!format) throw new SluiceError('SLUICE_UNSUPPORTED_MEDIA_TYPE', 'send application/json, application/x-ndjson or text/csv')
        const encoding = (request.headers['content-encoding'] ?? 'identity').toLowerCase()
        if (encoding !== 'gzip' && encoding !== 'identity')
          throw new SluiceError('SLUICE_UNSUPPORTED_MEDIA_TYPE', `Content-Encoding ${encoding} is not supported; use gzip or none`)
        const { object, update_schema, evaluate_rules, file_name } = request.query
        if (!object && format !== 'json') {
          throw new SluiceError('SLUICE_BAD_REQUEST', `a ${format} upload needs ?object=`, { errors: [{ pointer: '/query/object', message: 'required' }] })
        }
        if (object && !registry.current(object))
          throw new SluiceError('SLUICE_UNKNOWN_OBJECT', `there is no object type ${object}; known: ${registry.objects().join(', ')}`)
        const declared = Number(request.headers['content-length'] ?? 0)
        if (declared > config.batch.maxBytes)
          throw new SluiceError('SLUICE_PAYLOAD_TOO_LARGE', `the upload is larger than the limit of ${config.batch.maxBytes} bytes`)
        const id = BatchJobStore.newId()
        const payload = await storePayload(request.body as Readable, { dir: join(config.dataDir, 'batches'), jobId: id, maxBytes: config.batch.maxBytes })
        const { job, existing } = await createJobForPayload(jobs, payload, {
          id,
          object: object ?? null,
          format,
          compressed: encoding === 'gzip',
          source: 'api',
          file_name,
          idempotency_key: request.headers['idempotency-key'],
          update_schema,
          evaluate_rules,
          created_by: request.apiKey?.id ?? 'unknown',
        })
        return reply.code(202).send({ job_id: job.id, status_url: `/batch-status/${job.id}`, state: job.state, existing })
      },
    )
  })

  app.get<{ Querystring: Static<typeof ListQuery> }>(
    '/batch-status',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['batch'],
        summary: 'One job (?job_id=) or the list of jobs, newest first, filtered by state and object',
        querystring: ListQuery,
        response: { 200: Type.Union([JobStatusSchema, Type.Object({ jobs: Type.Array(JobStatusSchema) })]), 404: problem },
      },
    },
    async (request) => {
      const { job_id, state, object, limit } = request.query
      if (job_id) return jobStatus(jobOr404(job_id), jobs)
      return { jobs: jobs.list({ state, object, limit }).map((j) => jobStatus(j, jobs)) }
    },
  )

  app.get<{ Params: Static<typeof JobParams> }>(
    '/batch-status/:job_id',
    { config: { scope: 'read' }, schema: { tags: ['batch'], params: JobParams, response: { 200: JobStatusSchema, 404: problem } } },
    async (request) => jobStatus(jobOr404(request.params.job_id), jobs),
  )

  app.get<{ Params: Static<typeof JobParams> }>(
    '/batch-status/:job_id/errors',
    {
      config: { scope: 'read' },
      schema: { tags: ['batch'], summary: 'Every rejected row: NDJSON, or CSV with Accept: text/csv', params: JobParams, response: { 404: problem } },
    },
    async (request, reply: FastifyReply) => {
      const job = jobOr404(request.params.job_id)
      const rows = jobs.iterateErrors(job.id)
      const asCsv = (request.headers.accept ?? '').includes('text/csv')
      reply.header('content-disposition', `attachment; filename="${job.id}-errors.${asCsv ? 'csv' : 'ndjson'}"`)
      if (asCsv) return reply.type('text/csv; charset=utf-8').send(errorReportCsv(rows))
      const lines = (function* () {
        for (const row of rows) yield `${JSON.stringify(row)}\n`
      })()
      return reply.type('application/x-ndjson').send(Readable.from(lines))
    },
  )

  app.delete<{ Params: Static<typeof JobParams> }>(
    '/batch-status/:job_id',
    {
      config: { scope: 'ingest' },
      schema: {
        tags: ['batch'],
        summary: 'Cancel a job that has not finished',
        params: JobParams,
        response: { 202: JobStatusSchema, 404: problem, 409: problem },
      },
    },
    async (request, reply) => {
      const job = jobOr404(request.params.job_id)
      if (FINAL_STATES.has(job.state)) throw new SluiceError('SLUICE_JOB_FINISHED', `job ${job.id} is already ${job.state}`)
      const after = jobs.requestCancel(job.id, request.apiKey?.id ?? 'unknown') as BatchJob
      return reply.code(202).send(jobStatus(after, jobs))
    },
  )
}

import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { type Static, Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { type BatchJob, BatchJobStore, JOB_STATES, type LinkState, linkState, type UploadLink } from '../../storage/index.ts'
import { createJobForPayload, payloadFormatOfFileName, storePayload } from '../batch/upload.ts'
import { ERROR_CODES, type ErrorCode, isSluiceError, SluiceError } from '../errors.ts'
import { createUploadLink, errorReportCsv, uploadLinkUrl } from '../files/index.ts'
import type { IngressDeps } from './app.ts'
import { jobStatus } from './batch-routes.ts'
import { problem } from './route-schemas.ts'
import { pageHeaders, refusedPage, uploadPage } from './upload-page.ts'

const LinkSchema = Type.Object({
  id: Type.String(),
  object: Type.String(),
  expires_at: Type.String(),
  max_uploads: Type.Union([Type.Integer(), Type.Null()]),
  uploads: Type.Integer(),
  created_by: Type.String(),
  created_at: Type.String(),
  revoked_at: Type.Union([Type.String(), Type.Null()]),
  state: Type.Union(['active', 'expired', 'revoked', 'used_up'].map((s) => Type.Literal(s))),
})
const CreatedLinkSchema = Type.Composite([
  LinkSchema,
  Type.Object({ token: Type.String({ description: 'shown only now; stored as a hash' }), url: Type.String({ description: 'the upload page' }) }),
])
const CreateLinkBody = Type.Object(
  {
    object: Type.String({ description: 'the object every file uploaded through the link holds' }),
    expires: Type.String({ default: '24h', description: 'lifetime: minutes, hours or days (30m, 24h, 7d), at most 90d' }),
    max_uploads: Type.Optional(Type.Integer({ minimum: 1, description: 'uploads the link takes; default: any number until it expires' })),
  },
  { additionalProperties: false },
)
const LinkParams = Type.Object({ id: Type.String({ pattern: '^link_[0-9a-f]{16}$' }) })
const TokenParams = Type.Object({ token: Type.String({ maxLength: 200 }) })
const TokenJobParams = Type.Object({ token: Type.String({ maxLength: 200 }), job_id: Type.String({ pattern: '^job_[A-Za-z0-9_-]+$' }) })
const LinkUploadQuery = Type.Object({ file_name: Type.String({ minLength: 1, maxLength: 255, description: 'its extension gives the format' }) })
/** A job as the link's holder sees it: its progress and result, nothing of the server's internals. */
const LinkJobSchema = Type.Object({
  job_id: Type.String(),
  object: Type.Union([Type.String(), Type.Null()]),
  file_name: Type.Union([Type.String(), Type.Null()]),
  state: Type.Union(JOB_STATES.map((s) => Type.Literal(s))),
  counts: Type.Object({
    total: Type.Union([Type.Integer(), Type.Null()]),
    processed: Type.Integer(),
    accepted: Type.Integer(),
    rejected: Type.Integer(),
    stored: Type.Integer(),
  }),
  progress: Type.Object({ percent: Type.Number() }),
  error: Type.Union([Type.String(), Type.Null()]),
  first_errors: Type.Array(
    Type.Object({ row: Type.Integer(), record_key: Type.Union([Type.String(), Type.Null()]), pointer: Type.String(), message: Type.String() }),
  ),
  errors_url: Type.String(),
})

const REFUSALS: Record<Exclude<LinkState, 'active'> | 'invalid', { code: ErrorCode; message: (link?: UploadLink) => string }> = {
  invalid: { code: 'SLUICE_LINK_INVALID', message: () => 'This upload link is not valid: it may be incomplete or mistyped.' },
  expired: { code: 'SLUICE_LINK_EXPIRED', message: (link) => `This upload link expired on ${link?.expires_at.slice(0, 16).replace('T', ' ')} UTC.` },
  revoked: { code: 'SLUICE_LINK_REVOKED', message: () => 'This upload link has been revoked.' },
  used_up: { code: 'SLUICE_LINK_USED_UP', message: (link) => `This upload link has been used up: it took the ${link?.max_uploads} uploads it allowed.` },
}

function refusal(reason: keyof typeof REFUSALS, link?: UploadLink): SluiceError {
  return new SluiceError(REFUSALS[reason].code, REFUSALS[reason].message(link))
}

const linkView = (link: UploadLink) => ({ ...link, state: linkState(link) })

/**
 * Upload links: admins create, list and revoke them; whoever holds one opens `/upload/<token>`, a page that
 * uploads one file at a time into a batch job of the link's object and follows it. The `/upload/` routes need
 * no API key (`public`): they check the token themselves, before any byte is stored.
 */
export function registerUploadLinkRoutes(app: FastifyInstance, deps: IngressDeps): void {
  const { links, jobs, registry, config } = deps

  /** The link of a token that takes uploads now; otherwise a 403 naming why, audited when the link is genuine. */
  function usableLink(token: string, request: FastifyRequest): UploadLink {
    const link = links.authenticate(token)
    if (!link) {
      request.log.info({ ip: request.ip }, 'upload link token refused: not valid')
      throw refusal('invalid')
    }
    const state = linkState(link)
    if (state === 'active') return link
    links.recordUse(link, 'link.refused', { reason: state, ip: request.ip })
    throw refusal(state, link)
  }

  /** The job a genuine, unrevoked link made: its holder may follow it after the link expired or was used up. */
  function linkJob(token: string, jobId: string): BatchJob {
    const link = links.authenticate(token)
    if (!link) throw refusal('invalid')
    if (link.revoked_at) throw refusal('revoked', link)
    const job = jobs.get(jobId)
    if (!job || job.created_by !== `link:${link.id}`) throw new SluiceError('SLUICE_JOB_NOT_FOUND', `this link made no job ${jobId}`)
    return job
  }

  /** Streams one file into a batch job of the link's object; the link's upload is given back if that fails. */
  async function takeUpload(
    request: FastifyRequest<{ Params: Static<typeof TokenParams>; Querystring: Static<typeof LinkUploadQuery> }>,
    reply: FastifyReply,
  ): Promise<FastifyReply> {
    const { token } = request.params
    const link = usableLink(token, request)
    const { file_name } = request.query
    const format = payloadFormatOfFileName(file_name)
    if (!format) throw new SluiceError('SLUICE_UNSUPPORTED_MEDIA_TYPE', `${file_name}: upload a .csv, .ndjson, .jsonl or .json file, optionally .gz`)
    if (Number(request.headers['content-length'] ?? 0) > config.batch.maxBytes)
      throw new SluiceError('SLUICE_PAYLOAD_TOO_LARGE', `the upload is larger than the limit of ${config.batch.maxBytes} bytes`)
    // Taken before the body is read, so concurrent uploads cannot pass max_uploads; given back if the upload fails.
    if (!links.reserveUpload(link.id)) {
      const state = linkState(links.get(link.id) as UploadLink)
      throw refusal(state === 'active' ? 'used_up' : state, link)
    }
    const id = BatchJobStore.newId()
    let job: BatchJob
    try {
      const payload = await storePayload(request.body as Readable, { dir: join(config.dataDir, 'batches'), jobId: id, maxBytes: config.batch.maxBytes })
      ;({ job } = await createJobForPayload(jobs, payload, {
        id,
        object: link.object,
        ...format,
        source: 'upload_link',
        file_name,
        update_schema: false,
        evaluate_rules: true,
        created_by: `link:${link.id}`,
      }))
    } catch (err) {
      links.releaseUpload(link.id)
      throw err
    }
    links.recordUse(link, 'link.upload', { job_id: job.id, file_name, bytes: job.payload_bytes, ip: request.ip })
    return reply.code(202).send({ job_id: job.id, status_url: `/upload/${token}/jobs/${job.id}` })
  }

  app.post<{ Body: Static<typeof CreateLinkBody> }>(
    '/upload-links',
    {
      config: { scope: 'admin' },
      schema: {
        tags: ['files'],
        summary: 'Create an upload link: a signed, expiring URL that takes files of one object without an API key',
        body: CreateLinkBody,
        response: { 201: CreatedLinkSchema, 400: problem, 404: problem },
      },
    },
    async (request, reply) => {
      const { object, expires, max_uploads } = request.body
      const { token, link } = createUploadLink(links, registry, { object, expires, maxUploads: max_uploads, actor: request.apiKey?.id ?? 'unknown' })
      const base = config.files.publicUrl ?? `${request.protocol}://${request.host}`
      return reply.code(201).send({ ...linkView(link), token, url: uploadLinkUrl(base, token) })
    },
  )

  app.get(
    '/upload-links',
    {
      config: { scope: 'admin' },
      schema: {
        tags: ['files'],
        summary: 'Every upload link, newest first (never their tokens)',
        response: { 200: Type.Object({ links: Type.Array(LinkSchema) }) },
      },
    },
    async () => ({ links: links.list().map(linkView) }),
  )

  app.delete<{ Params: Static<typeof LinkParams> }>(
    '/upload-links/:id',
    {
      config: { scope: 'admin' },
      schema: { tags: ['files'], summary: 'Revoke an upload link at once', params: LinkParams, response: { 200: LinkSchema, 404: problem } },
    },
    async (request) => {
      const { id } = request.params
      if (!links.get(id)) throw new SluiceError('SLUICE_LINK_NOT_FOUND', `there is no upload link ${id}`)
      links.revoke(id, request.apiKey?.id ?? 'unknown')
      return linkView(links.get(id) as UploadLink)
    },
  )

  app.get<{ Params: Static<typeof TokenParams> }>(
    '/upload/:token',
    { config: { scope: 'public' }, schema: { tags: ['files'], summary: 'The upload page of a link (HTML)', security: [], params: TokenParams } },
    async (request, reply) => {
      const nonce = randomBytes(16).toString('base64')
      reply.headers(pageHeaders(nonce))
      try {
        const link = usableLink(request.params.token, request)
        const uploadsLeft = link.max_uploads === null ? null : link.max_uploads - link.uploads
        return uploadPage(nonce, { object: link.object, expiresAt: link.expires_at, uploadsLeft, maxBytes: config.batch.maxBytes })
      } catch (err) {
        if (!isSluiceError(err)) throw err
        return reply.code(err.status).send(refusedPage(nonce, ERROR_CODES[err.code].title, err.message))
      }
    },
  )

  // The file is streamed to disk, never parsed here: this scope takes every body as a raw stream.
  app.register(async (uploads) => {
    uploads.removeAllContentTypeParsers()
    uploads.addContentTypeParser('*', (_request, payload, done) => done(null, payload))
    uploads.post<{ Params: Static<typeof TokenParams>; Querystring: Static<typeof LinkUploadQuery> }>(
      '/upload/:token',
      {
        config: { scope: 'public' },
        schema: {
          tags: ['files'],
          summary: "Upload one file through a link; it becomes a batch job of the link's object",
          security: [],
          params: TokenParams,
          querystring: LinkUploadQuery,
          response: { 202: Type.Object({ job_id: Type.String(), status_url: Type.String() }), 400: problem, 403: problem, 413: problem, 415: problem },
        },
      },
      async (request, reply) => {
        try {
          return await takeUpload(request, reply)
        } catch (err) {
          // Refused before the body was read to its end: the client may still be sending, so the connection cannot be reused.
          reply.header('connection', 'close')
          throw err
        }
      },
    )
  })

  app.get<{ Params: Static<typeof TokenJobParams> }>(
    '/upload/:token/jobs/:job_id',
    {
      config: { scope: 'public' },
      schema: {
        tags: ['files'],
        summary: 'Progress and result of a job uploaded through this link',
        security: [],
        params: TokenJobParams,
        response: { 200: LinkJobSchema, 403: problem, 404: problem },
      },
    },
    async (request) => {
      const { token, job_id } = request.params
      return { ...jobStatus(linkJob(token, job_id), jobs), errors_url: `/upload/${token}/jobs/${job_id}/errors` }
    },
  )

  app.get<{ Params: Static<typeof TokenJobParams> }>(
    '/upload/:token/jobs/:job_id/errors',
    {
      config: { scope: 'public' },
      schema: { tags: ['files'], summary: "The job's rejected rows as CSV", security: [], params: TokenJobParams, response: { 403: problem, 404: problem } },
    },
    async (request, reply) => {
      const job = linkJob(request.params.token, request.params.job_id)
      reply.header('content-disposition', `attachment; filename="${(job.file_name ?? job.id).replace(/[^\w.-]/g, '_')}.errors.csv"`)
      return reply.type('text/csv; charset=utf-8').send(errorReportCsv(jobs.iterateErrors(job.id)))
    },
  )
}

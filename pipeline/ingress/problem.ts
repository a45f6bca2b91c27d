import { Type } from '@sinclair/typebox'
import type { FastifyError, FastifyInstance } from 'fastify'
import { ERROR_CODES, type ErrorCode, type FieldError, isSluiceError, SluiceError } from '../errors.ts'

/** RFC 9457 problem details, as every error answer carries them. */
export const ProblemSchema = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
    code: Type.String(),
    errors: Type.Optional(
      Type.Array(
        Type.Object({
          pointer: Type.String(),
          message: Type.String(),
          expected: Type.Optional(Type.String()),
          received: Type.Optional(Type.String()),
        }),
      ),
    ),
  },
  { $id: 'Problem' },
)

export function problemBody(code: ErrorCode, detail: string, errors?: FieldError[]) {
  const { status, title } = ERROR_CODES[code]
  return { type: `urn:sluice:error:${code}`, title, status, detail, code, ...(errors && { errors }) }
}

/** Maps fastify's own errors (body parsing, limits, route validation) to Sluice's codes. */
function fromFastifyError(err: FastifyError): SluiceError {
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new SluiceError('SLUICE_PAYLOAD_TOO_LARGE', err.message, { cause: err })
  if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
    return new SluiceError('SLUICE_UNSUPPORTED_MEDIA_TYPE', `${err.message}; send application/json`, { cause: err })
  if (err.validation) {
    const where = err.validationContext ?? 'request'
    const errors = err.validation.map((v) => ({
      pointer: `/${where}${v.instancePath}${v.params?.missingProperty ? `/${v.params.missingProperty}` : v.params?.additionalProperty ? `/${v.params.additionalProperty}` : ''}`,
      message: v.message ?? 'invalid',
    }))
    return new SluiceError('SLUICE_BAD_REQUEST', err.message, { cause: err, errors })
  }
  if (err.statusCode && err.statusCode < 500) return new SluiceError('SLUICE_BAD_REQUEST', err.message, { cause: err })
  return new SluiceError('SLUICE_INTERNAL', 'internal error; see the server log', { cause: err })
}

/** Every error answer is problem+json with a stable code; 5xx are logged with their cause, 4xx are not noise. */
export function installProblemHandlers(app: FastifyInstance): void {
  app.addSchema(ProblemSchema)
  app.setErrorHandler((err: FastifyError, request, reply) => {
    const e = isSluiceError(err) ? err : fromFastifyError(err)
    // 503 is an expected state (NATS or the sink away) and says so in its message; other 5xx are bugs.
    if (e.status === 503) request.log.warn({ code: e.code }, e.message)
    else if (e.status >= 500) request.log.error({ err: e.cause ?? e, code: e.code }, e.message)
    for (const [k, v] of Object.entries(e.headers ?? {})) reply.header(k, v)
    reply
      .code(e.status)
      .type('application/problem+json')
      .send(problemBody(e.code, e.message, e.errors))
  })
  app.setNotFoundHandler((request, reply) => {
    reply
      .code(404)
      .type('application/problem+json')
      .send(problemBody('SLUICE_NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`))
  })
}

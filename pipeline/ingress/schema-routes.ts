import { type Static, Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { type ObjectSchemaDoc, schemaDocErrors } from '../../storage/index.ts'
import { SluiceError } from '../errors.ts'
import { SUBJECTS } from '../streams.ts'
import { recordTypeOf } from '../validation.ts'
import type { IngressDeps } from './app.ts'
import { ObjectParams, problem, SchemaVersionSchema } from './route-schemas.ts'

/** Object names that would shadow a route or a future one; `POST /<object>` must stay unambiguous. */
export const RESERVED_OBJECT_NAMES = new Set([
  'alerts',
  'api',
  'assets',
  'batch',
  'batch_status',
  'decisions',
  'docs',
  'events',
  'healthz',
  'jobs',
  'keys',
  'links',
  'login',
  'logout',
  'metrics',
  'openapi',
  'readyz',
  'records',
  'rules',
  'schema',
  'schemas',
  'session',
  'sftp',
  'stats',
  'ui',
  'upload',
  'upload_links',
  'uploads',
  'web',
])

/** `update_schema` is the evolution flag when it stands at the top of a record, so no field may take that name. */
const RESERVED_FIELD_NAMES = new Set(['update_schema'])

const VersionParams = Type.Object({ object: ObjectParams.properties.object, n: Type.Integer({ minimum: 1 }) })

export function registerSchemaRoutes(app: FastifyInstance, deps: IngressDeps): void {
  const { registry, queries } = deps

  function versionOf(object: string) {
    const current = registry.current(object)
    if (!current) throw new SluiceError('SLUICE_UNKNOWN_OBJECT', `there is no object type ${object}; known: ${registry.objects().join(', ')}`)
    return current
  }

  app.get(
    '/schema',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['schema'],
        summary: 'Every object type and its current schema',
        response: { 200: Type.Object({ objects: Type.Array(SchemaVersionSchema) }) },
      },
    },
    async () => ({ objects: registry.objects().map((o) => versionOf(o)) }),
  )

  app.get<{ Params: Static<typeof ObjectParams> }>(
    '/schema/:object',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['schema'],
        summary: "The object's current schema, and the JSON Schema its records are validated with",
        params: ObjectParams,
        response: { 200: Type.Intersect([SchemaVersionSchema, Type.Object({ record_json_schema: Type.Unknown() })]), 404: problem },
      },
    },
    async (request) => {
      const current = versionOf(request.params.object)
      return { ...current, record_json_schema: JSON.parse(JSON.stringify(recordTypeOf(current.schema))) }
    },
  )

  app.get<{ Params: Static<typeof ObjectParams> }>(
    '/schema/:object/versions',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['schema'],
        summary: 'Every version, oldest first, with who, when, why and the diff',
        params: ObjectParams,
        response: { 200: Type.Object({ versions: Type.Array(SchemaVersionSchema) }), 404: problem },
      },
    },
    async (request) => {
      versionOf(request.params.object)
      return { versions: registry.versions(request.params.object) }
    },
  )

  app.get<{ Params: Static<typeof VersionParams> }>(
    '/schema/:object/versions/:n',
    { config: { scope: 'read' }, schema: { tags: ['schema'], params: VersionParams, response: { 200: SchemaVersionSchema, 404: problem } } },
    async (request) => {
      const { object, n } = request.params
      versionOf(object)
      const version = registry.version(object, n)
      if (!version) throw new SluiceError('SLUICE_NOT_FOUND', `${object} has no schema version ${n}; the current one is ${versionOf(object).version}`)
      return version
    },
  )

  app.put<{ Params: Static<typeof ObjectParams> }>(
    '/schema/:object',
    {
      config: { scope: 'admin' },
      schema: {
        tags: ['schema'],
        summary: 'Replace the schema (a new version), or create a new object type',
        params: ObjectParams,
        body: Type.Unknown({ description: 'an object schema document; `object` may be left out' }),
        response: {
          200: Type.Intersect([SchemaVersionSchema, Type.Object({ created: Type.Boolean() })]),
          201: Type.Intersect([SchemaVersionSchema, Type.Object({ created: Type.Boolean() })]),
          400: problem,
          409: problem,
          503: problem,
        },
      },
    },
    async (request, reply) => {
      const { object } = request.params
      if (RESERVED_OBJECT_NAMES.has(object))
        throw new SluiceError('SLUICE_RESERVED_NAME', `${object} is reserved; choose another object name`, {
          errors: [{ pointer: '/object', message: 'reserved name' }],
        })
      const body = request.body
      if (!body || typeof body !== 'object' || Array.isArray(body))
        throw new SluiceError('SLUICE_INVALID_SCHEMA', 'the body must be a schema document (a JSON object)', {
          errors: [{ pointer: '', message: 'expected an object' }],
        })
      const doc = { object, ...(body as object) } as ObjectSchemaDoc
      const problems = schemaDocErrors(doc)
      if (doc.object !== object) problems.push({ pointer: '/object', message: `the document is for ${doc.object}, the URL for ${object}` })
      for (const name of Object.keys(doc.fields ?? {}))
        if (RESERVED_FIELD_NAMES.has(name)) problems.push({ pointer: `/fields/${name}`, message: `${name} is reserved` })
      if (problems.length > 0)
        throw new SluiceError(
          'SLUICE_INVALID_SCHEMA',
          `the schema document is invalid: ${problems.map((p) => `${p.pointer || '/'} ${p.message}`).join('; ')}`,
          { errors: problems },
        )
      const existed = registry.refresh(object) !== undefined
      if (existed) {
        // Stored values must fit the new column types; history is never rewritten to make them fit.
        const conflicts = await queries.request(SUBJECTS.querySchemaConflicts, { schema: doc })
        if (conflicts.length > 0) {
          throw new SluiceError(
            'SLUICE_SCHEMA_CONFLICT',
            `stored ${object} records cannot satisfy the new schema: ${conflicts.map((c) => c.message).join('; ')}`,
            {
              errors: conflicts.map((c) => ({ pointer: `/fields/${c.field}`, message: c.message })),
            },
          )
        }
      }
      const { version, created } = registry.update(object, () => doc, { created_by: request.apiKey?.id ?? 'unknown', reason: 'manual' })
      if (created) await deps.publishSchemaChange(version)
      return reply.code(existed ? 200 : 201).send({ ...version, created })
    },
  )
}

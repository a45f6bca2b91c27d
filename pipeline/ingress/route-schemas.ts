import { Type } from '@sinclair/typebox'
import { FIELD_NAME_PATTERN, ObjectSchemaDocSchema } from '../../storage/index.ts'

/** Reference to the problem+json schema registered by installProblemHandlers. */
export const problem = { $ref: 'Problem#' }

export const ObjectParams = Type.Object({ object: Type.String({ pattern: FIELD_NAME_PATTERN }) })

export const SchemaVersionSchema = Type.Object({
  object: Type.String(),
  version: Type.Integer(),
  schema: ObjectSchemaDocSchema,
  created_at: Type.String(),
  created_by: Type.String({ description: 'API key id, or system' }),
  reason: Type.Union([Type.Literal('default'), Type.Literal('manual'), Type.Literal('auto')]),
  trigger_record_id: Type.Optional(Type.Union([Type.String(), Type.Null()], { description: 'for auto: the record that made the change' })),
  diff: Type.Array(Type.Record(Type.String(), Type.Unknown()), { description: 'changes from the previous version' }),
})

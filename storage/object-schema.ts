import { type Static, Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'

/** Value types a field can have; each maps to one DuckDB column type. */
export const FIELD_TYPES = ['string', 'integer', 'number', 'boolean', 'timestamp', 'json'] as const
export type FieldType = (typeof FIELD_TYPES)[number]

/** Field names double as DuckDB column names; a leading underscore is reserved for Sluice's metadata columns. */
export const FIELD_NAME_PATTERN = '^[a-z][a-z0-9_]{0,62}$'

export const FieldSpecSchema = Type.Object(
  {
    type: Type.Union(FIELD_TYPES.map((t) => Type.Literal(t))),
    /** A nullable field may be null or absent. */
    nullable: Type.Optional(Type.Boolean()),
    description: Type.Optional(Type.String()),
    enum: Type.Optional(Type.Array(Type.String(), { minItems: 1 })),
    pattern: Type.Optional(Type.String()),
    maxLength: Type.Optional(Type.Integer({ minimum: 1 })),
    minimum: Type.Optional(Type.Number()),
    maximum: Type.Optional(Type.Number()),
  },
  { additionalProperties: false },
)
export type FieldSpec = Static<typeof FieldSpecSchema>

/** The schema on file for one object type: what `POST /<object>` accepts. */
export const ObjectSchemaDocSchema = Type.Object(
  {
    object: Type.String({ pattern: FIELD_NAME_PATTERN }),
    description: Type.Optional(Type.String()),
    /** The field that identifies a record of this object (a later version of the same id is an update). */
    id_field: Type.String({ pattern: FIELD_NAME_PATTERN }),
    /** The field holding the record's own event time, when it has one. */
    time_field: Type.Optional(Type.String({ pattern: FIELD_NAME_PATTERN })),
    fields: Type.Record(Type.String({ pattern: FIELD_NAME_PATTERN }), FieldSpecSchema, { minProperties: 1 }),
  },
  { additionalProperties: false },
)
export type ObjectSchemaDoc = Static<typeof ObjectSchemaDocSchema>

/** One difference between two versions of a schema; the diff stored with every version. */
export type SchemaChange =
  | { op: 'add_field'; field: string; spec: FieldSpec }
  | { op: 'remove_field'; field: string; spec: FieldSpec }
  | { op: 'make_nullable'; field: string }
  | { op: 'make_required'; field: string }
  | { op: 'change_type'; field: string; from: FieldType; to: FieldType }
  | { op: 'change_constraints'; field: string; from: FieldSpec; to: FieldSpec }
  | { op: 'change_meta'; what: 'id_field' | 'time_field' | 'description'; from?: string; to?: string }

/** One stored version of an object's schema. */
export interface SchemaVersion {
  object: string
  version: number
  schema: ObjectSchemaDoc
  created_at: string
  /** API key id, or `system` for the defaults loaded on first start. */
  created_by: string
  /** `default`: loaded on first start; `manual`: PUT /schema; `auto`: update_schema on a record. */
  reason: 'default' | 'manual' | 'auto'
  /** For `auto`: the record whose ingestion made the change. */
  trigger_record_id?: string | null
  /** What changed from the previous version. */
  diff: SchemaChange[]
}

const CONSTRAINT_KEYS = ['enum', 'pattern', 'maxLength', 'minimum', 'maximum'] as const

/** What changed from `before` to `after` (before undefined: a new object, every field added). */
export function diffSchemas(before: ObjectSchemaDoc | undefined, after: ObjectSchemaDoc): SchemaChange[] {
  const changes: SchemaChange[] = []
  const old = before?.fields ?? {}
  for (const what of ['id_field', 'time_field', 'description'] as const) {
    if (before && before[what] !== after[what]) changes.push({ op: 'change_meta', what, from: before[what], to: after[what] })
  }
  for (const [field, spec] of Object.entries(after.fields)) {
    const prev = old[field]
    if (!prev) {
      changes.push({ op: 'add_field', field, spec })
      continue
    }
    if (prev.type !== spec.type) changes.push({ op: 'change_type', field, from: prev.type, to: spec.type })
    if (!prev.nullable && spec.nullable) changes.push({ op: 'make_nullable', field })
    if (prev.nullable && !spec.nullable) changes.push({ op: 'make_required', field })
    if (CONSTRAINT_KEYS.some((k) => JSON.stringify(prev[k]) !== JSON.stringify(spec[k])))
      changes.push({ op: 'change_constraints', field, from: prev, to: spec })
  }
  for (const [field, spec] of Object.entries(old)) if (!(field in after.fields)) changes.push({ op: 'remove_field', field, spec })
  return changes
}

/** Every problem with a schema document, as JSON pointers into it; empty when it is valid. */
export function schemaDocErrors(doc: unknown): { pointer: string; message: string }[] {
  const errors = [...Value.Errors(ObjectSchemaDocSchema, doc)].map((e) => ({ pointer: e.path, message: e.message }))
  if (errors.length > 0) return errors
  const schema = doc as ObjectSchemaDoc
  if (!schema.fields[schema.id_field]) errors.push({ pointer: '/id_field', message: `id_field ${schema.id_field} is not one of the fields` })
  if (schema.time_field && schema.fields[schema.time_field]?.type !== 'timestamp') {
    errors.push({ pointer: '/time_field', message: `time_field ${schema.time_field} must be a field of type timestamp` })
  }
  for (const [name, spec] of Object.entries(schema.fields)) {
    if (spec.pattern) {
      try {
        new RegExp(spec.pattern)
      } catch (e) {
        errors.push({ pointer: `/fields/${name}/pattern`, message: (e as Error).message })
      }
    }
    if ((spec.enum || spec.pattern || spec.maxLength) && spec.type !== 'string') {
      errors.push({ pointer: `/fields/${name}`, message: 'enum, pattern and maxLength apply to string fields only' })
    }
  }
  return errors
}

const DUCKDB_TYPES: Record<FieldType, string> = {
  string: 'VARCHAR',
  integer: 'BIGINT',
  number: 'DOUBLE',
  boolean: 'BOOLEAN',
  timestamp: 'TIMESTAMP',
  json: 'VARCHAR',
}

export function duckdbType(type: FieldType): string {
  return DUCKDB_TYPES[type]
}

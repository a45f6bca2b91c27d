import { type Static, Type } from '@sinclair/typebox'

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

/** One stored version of an object's schema. */
export interface SchemaVersion {
  object: string
  version: number
  schema: ObjectSchemaDoc
  created_at: string
  /** API key id, or `system` for the defaults loaded on first start. */
  created_by: string
  reason: 'default' | 'manual' | 'auto'
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

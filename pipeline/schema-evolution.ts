import { diffSchemas, FIELD_NAME_PATTERN, type FieldSpec, type FieldType, type ObjectSchemaDoc, type SchemaChange } from '../storage/index.ts'

import type { FieldError } from './errors.ts'
import { describeExpected, isIsoTimestamp, RecordValidator } from './validation.ts'

const FIELD_NAME_RE = new RegExp(FIELD_NAME_PATTERN)

/** The type a new field gets from its first value. A null says nothing: such a field starts as a nullable string. */
export function inferFieldType(value: unknown): FieldType {
  if (typeof value === 'boolean') return 'boolean'
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number'
  if (typeof value === 'string') return isIsoTimestamp(value) ? 'timestamp' : 'string'
  if (value !== null && typeof value === 'object') return 'json'
  return 'string'
}

/** The outcome of evolving a schema to fit a record: a value, never an exception. */
export type Evolution =
  | { kind: 'unchanged' }
  | { kind: 'changed'; schema: ObjectSchemaDoc; changes: SchemaChange[] }
  | { kind: 'incompatible'; errors: FieldError[] }

/**
 * The `update_schema` rules: a field the record lacks (or sends as null) becomes nullable; a field the schema
 * lacks is added, nullable, typed from its value; integer -> number is widened. Anything else that does not
 * fit (another type, a value outside the field's constraints) is incompatible and needs a manual update.
 */
export function evolveSchema(schema: ObjectSchemaDoc, record: unknown): Evolution {
  if (typeof record !== 'object' || record === null || Array.isArray(record)) {
    return {
      kind: 'incompatible',
      errors: [{ pointer: '', message: 'a record must be a JSON object', expected: 'object', received: Array.isArray(record) ? 'array' : typeof record }],
    }
  }
  const values = record as Record<string, unknown>
  const fields: Record<string, FieldSpec> = {}
  const errors: FieldError[] = []
  for (const [field, spec] of Object.entries(schema.fields)) {
    const value = values[field]
    if (value === undefined || value === null) {
      fields[field] = spec.nullable ? spec : { ...spec, nullable: true }
      continue
    }
    if (spec.type === 'integer' && typeof value === 'number' && !Number.isInteger(value)) {
      fields[field] = { ...spec, type: 'number' }
      continue
    }
    fields[field] = spec
  }
  for (const [field, value] of Object.entries(values)) {
    if (field in schema.fields) continue
    if (!FIELD_NAME_RE.test(field)) {
      errors.push({
        pointer: `/${field}`,
        message: `${field} cannot become a field: names are lower-case letters, digits and _, starting with a letter`,
        received: field,
      })
      continue
    }
    fields[field] = { type: inferFieldType(value), nullable: true }
  }
  const next: ObjectSchemaDoc = { ...schema, fields }
  // Whatever still fails against the widened schema is a change no automatic rule may make.
  const check = new RecordValidator({ object: schema.object, version: 0, schema: next }).validate(record)
  if (!check.ok) {
    for (const e of check.errors) {
      const field = e.pointer.slice(1)
      const spec = next.fields[field]
      errors.push({
        ...e,
        message: `${field}: the value does not fit ${spec ? describeExpected(spec) : 'the schema'}, and update_schema only adds fields, makes fields nullable and widens integer to number; change the schema manually (PUT /schema/${schema.object})`,
      })
    }
  }
  if (errors.length > 0) return { kind: 'incompatible', errors }
  const changes = diffSchemas(schema, next)
  return changes.length === 0 ? { kind: 'unchanged' } : { kind: 'changed', schema: next, changes }
}

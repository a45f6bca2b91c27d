import { FormatRegistry, type TSchema, Type } from '@sinclair/typebox'
import { type TypeCheck, TypeCompiler } from '@sinclair/typebox/compiler'
import type { FieldSpec, ObjectSchemaDoc, SchemaVersion } from '../storage/index.ts'
import type { FieldError } from './errors.ts'

// ISO 8601 date-time with a zone designator (Z or ±hh:mm), as fintechs send it; a bare date is not an instant.
const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/i
export const isIsoTimestamp = (v: string) => ISO_DATE_TIME.test(v) && !Number.isNaN(Date.parse(v))
FormatRegistry.Set('date-time', isIsoTimestamp)

/** Builds the TypeBox type of one field from its spec. */
function fieldType(spec: FieldSpec): TSchema {
  let t: TSchema
  switch (spec.type) {
    case 'string':
      t = spec.enum
        ? Type.Union(spec.enum.map((v) => Type.Literal(v)))
        : Type.String({ ...(spec.pattern && { pattern: spec.pattern }), ...(spec.maxLength && { maxLength: spec.maxLength }) })
      break
    case 'integer':
    case 'number': {
      const bounds = { ...(spec.minimum !== undefined && { minimum: spec.minimum }), ...(spec.maximum !== undefined && { maximum: spec.maximum }) }
      t = spec.type === 'integer' ? Type.Integer(bounds) : Type.Number(bounds)
      break
    }
    case 'boolean':
      t = Type.Boolean()
      break
    case 'timestamp':
      t = Type.String({ format: 'date-time' })
      break
    case 'json':
      t = Type.Unknown()
      break
  }
  return spec.nullable ? Type.Optional(Type.Union([t, Type.Null()])) : t
}

/** The TypeBox schema of a record of this object: exactly its fields, nothing more. */
export function recordTypeOf(schema: ObjectSchemaDoc): TSchema {
  const props: Record<string, TSchema> = {}
  for (const [name, spec] of Object.entries(schema.fields)) props[name] = fieldType(spec)
  return Type.Object(props, { additionalProperties: false })
}

/** What a field expects, in words a sender understands. */
export function describeExpected(spec: FieldSpec): string {
  let what: string = spec.type === 'timestamp' ? 'ISO 8601 timestamp with time zone' : spec.type === 'json' ? 'any JSON value' : spec.type
  if (spec.enum) what = `one of ${spec.enum.join(', ')}`
  if (spec.pattern) what += ` matching ${spec.pattern}`
  if (spec.maxLength) what += ` of at most ${spec.maxLength} characters`
  if (spec.minimum !== undefined) what += ` >= ${spec.minimum}`
  if (spec.maximum !== undefined) what += ` <= ${spec.maximum}`
  if (spec.nullable) what += ', or null'
  return what
}

function describeReceived(value: unknown): string {
  if (value === undefined) return 'nothing'
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'array'
  if (typeof value === 'object') return 'object'
  const text = JSON.stringify(value)
  return `${typeof value} ${text.length > 64 ? `${text.slice(0, 61)}...` : text}`
}

/** The outcome of validating one record: a value, never an exception. */
export type ValidationResult = { ok: true } | { ok: false; errors: FieldError[] }

/** A schema version compiled once; validating a record costs one generated function call. */
export class RecordValidator {
  readonly object: string
  readonly version: number
  readonly schema: ObjectSchemaDoc
  readonly #check: TypeCheck<TSchema>

  constructor(version: Pick<SchemaVersion, 'object' | 'version' | 'schema'>) {
    this.object = version.object
    this.version = version.version
    this.schema = version.schema
    this.#check = TypeCompiler.Compile(recordTypeOf(version.schema))
  }

  /** Every offending field, one error per field, in the record's order. */
  validate(record: unknown): ValidationResult {
    if (this.#check.Check(record)) return { ok: true }
    if (typeof record !== 'object' || record === null || Array.isArray(record)) {
      return {
        ok: false,
        errors: [{ pointer: '', message: `expected a JSON object (a ${this.object} record)`, expected: 'object', received: describeReceived(record) }],
      }
    }
    const byPointer = new Map<string, FieldError>()
    for (const e of this.#check.Errors(record)) {
      if (byPointer.has(e.path)) continue
      const field = e.path.split('/')[1] ?? ''
      const spec = this.schema.fields[field]
      const value = (record as Record<string, unknown>)[field]
      if (!spec) {
        byPointer.set(e.path, {
          pointer: e.path,
          message: `unknown field ${field}: not in the ${this.object} schema (version ${this.version})`,
          expected: 'no such field',
          received: describeReceived(value),
        })
      } else if (value === undefined) {
        byPointer.set(e.path, { pointer: e.path, message: `required field ${field} is missing`, expected: describeExpected(spec), received: 'nothing' })
      } else {
        byPointer.set(e.path, {
          pointer: e.path,
          message: `${field}: expected ${describeExpected(spec)}`,
          expected: describeExpected(spec),
          received: describeReceived(value),
        })
      }
    }
    return { ok: false, errors: [...byPointer.values()] }
  }
}

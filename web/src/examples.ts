import type { FieldSpec, ObjectSchemaDoc } from './types.ts'

/** A value for an example record: what the field's constraints accept, where that can be guessed. */
function exampleValue(name: string, spec: FieldSpec): unknown {
  if (spec.enum) return spec.enum[0]
  switch (spec.type) {
    case 'integer':
      return Math.max(spec.minimum ?? 1, 1)
    case 'number':
      return Math.max(spec.minimum ?? 0, 12.5)
    case 'boolean':
      return false
    case 'timestamp':
      return new Date().toISOString().replace(/\.\d+Z$/, 'Z')
    case 'json':
      return {}
  }
  if (spec.pattern) {
    const pattern = new RegExp(spec.pattern)
    return ['DE', 'EUR', '5411', `${name}-1`].find((candidate) => pattern.test(candidate)) ?? `${name}-1`
  }
  return `${name}-1`
}

/** A curl command that sends one example record of the object: what an empty page suggests. */
export function exampleCommand(schema: ObjectSchemaDoc): string {
  const record = Object.fromEntries(
    Object.entries(schema.fields)
      .filter(([, spec]) => !spec.nullable)
      .map(([name, spec]) => [name, exampleValue(name, spec)]),
  )
  return `curl -s -X POST ${location.origin}/${schema.object} -H "Authorization: Bearer $KEY" \\
  -H 'Content-Type: application/json' -d '${JSON.stringify(record, null, 2)}'`
}

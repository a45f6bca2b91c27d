import { type ASTNode, Environment } from '@marcbachmann/cel-js'
import type { FieldType, ObjectSchemaDoc } from '../storage/index.ts'

/**
 * CEL, through @marcbachmann/cel-js (chosen by measurement, docs/rules.md). Everything that knows the library
 * is in this file.
 *
 * Expressions are type-checked when saved, against the record's schema, so a misspelt field or an int/double
 * mix-up is refused with its position; they are evaluated with every variable dynamic, which gives the same
 * answers on valid records and skips converting each record into typed values on the hot path.
 */

/** The variables an expression sees (docs/rules.md). */
export interface ExpressionContext {
  record: Record<string, unknown>
  account: Record<string, unknown>
  activity: Record<string, Record<string, unknown>>
  features: Record<string, number>
}

export type CompiledExpression = (context: ExpressionContext) => unknown

/** Why an expression was refused, and where: offset (0-based) and line and column (1-based) in its text. */
export interface ExpressionProblem {
  message: string
  offset: number
  line: number
  column: number
}

/** What an expression may refer to, for the save-time check. */
export interface ExpressionScope {
  record: ObjectSchemaDoc
  /** The account object's schema, when there is one. */
  account?: ObjectSchemaDoc
  /** Names of the features declared for the record's object. */
  features: string[]
}

const evaluator = new Environment({ unlistedVariablesAreDyn: true })

/**
 * JSON gives every number as a double, so integer and number fields are `double` in CEL; a nullable field is
 * `dyn` so it may be compared with null; a timestamp is its ISO text (`timestamp(record.created_at)` makes it a
 * CEL timestamp).
 */
const CEL_TYPES: Record<FieldType, string> = { string: 'string', integer: 'double', number: 'double', boolean: 'bool', timestamp: 'string', json: 'dyn' }

function celSchema(schema: ObjectSchemaDoc): Record<string, string> {
  return Object.fromEntries(Object.entries(schema.fields).map(([name, spec]) => [name, spec.nullable ? 'dyn' : CEL_TYPES[spec.type]]))
}

function checkerFor(scope: ExpressionScope): Environment {
  const env = new Environment()
    .registerVariable({ name: 'record', schema: celSchema(scope.record) })
    .registerVariable('activity', 'map<string, map<string, dyn>>')
  if (scope.account) env.registerVariable({ name: 'account', schema: celSchema(scope.account) })
  else env.registerVariable('account', 'map<string, dyn>')
  return env.registerVariable({ name: 'features', schema: Object.fromEntries(scope.features.map((name) => [name, 'double'])) })
}

function problemAt(source: string, message: string, offset: number): ExpressionProblem {
  const before = source.slice(0, offset)
  const line = before.split('\n').length
  return { message, offset, line, column: offset - before.lastIndexOf('\n') }
}

function problemOf(source: string, err: unknown): ExpressionProblem {
  const e = err as { summary?: string; message: string; range?: { start: number } }
  return problemAt(source, e.summary ?? e.message, e.range?.start ?? 0)
}

/** The feature names an expression reads (`features.x`, `features["x"]`), found in its syntax tree. */
function featureReads(node: ASTNode, found = new Set<string>()): Set<string> {
  if (node.op === '.' || node.op === '.?') {
    const [target, name] = node.args
    if (target.op === 'id' && target.args === 'features') found.add(name)
  }
  if (node.op === '[]' || node.op === '[?]') {
    const [target, key] = node.args
    if (target.op === 'id' && target.args === 'features' && key.op === 'value' && typeof key.args === 'string') found.add(key.args)
  }
  const children: unknown[] = Array.isArray(node.args) ? node.args.flat(2) : [node.args]
  for (const child of children) if (child && typeof child === 'object' && 'op' in child) featureReads(child as ASTNode, found)
  return found
}

export type CompileResult = { ok: true; evaluate: CompiledExpression; features: string[] } | { ok: false; problem: ExpressionProblem }

/**
 * Parses `source`; with a `scope`, also type-checks it and requires a bool (what saving a rule does). Rules
 * already on file are compiled without a scope: a schema changed since must not stop the stage, and what no
 * longer fits becomes an `error` outcome at run time.
 */
export function compileExpression(source: string, scope?: ExpressionScope): CompileResult {
  let parsed: ReturnType<Environment['parse']>
  try {
    parsed = evaluator.parse(source)
  } catch (err) {
    return { ok: false, problem: problemOf(source, err) }
  }
  if (scope) {
    const checked = checkerFor(scope).check(source)
    if (!checked.valid) return { ok: false, problem: problemOf(source, checked.error) }
    if (checked.type !== 'bool' && checked.type !== 'dyn') {
      return { ok: false, problem: problemAt(source, `a rule's expression must be a bool; this one is a ${checked.type}`, 0) }
    }
  }
  return { ok: true, evaluate: parsed as CompiledExpression, features: [...featureReads(parsed.ast)] }
}

/** The message of an error an expression raised at run time. */
export function runtimeErrorMessage(err: unknown): string {
  const e = err as { summary?: string; message?: string }
  return e?.summary ?? e?.message ?? String(err)
}

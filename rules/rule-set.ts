import { Value } from '@sinclair/typebox/value'
import type { FieldError } from '../pipeline/errors.ts'
import {
  DEFAULT_THRESHOLDS,
  type ObjectSchemaDoc,
  type RuleDefinition,
  type RuleSetDoc,
  RuleSetDocSchema,
  type RuleSetVersion,
  type Thresholds,
  withRuleDefaults,
} from '../storage/index.ts'
import { type CompiledExpression, compileExpression, type ExpressionScope } from './expressions.ts'
import { type FeatureDefinition, windowMs } from './features.ts'
import { ACCOUNT_OBJECT } from './lookups.ts'

/** One rule ready to run: its definition, its version, and its compiled expression. */
export interface CompiledRule extends Omit<RuleDefinition, 'features' | 'when' | 'description'> {
  version: number
  evaluate: CompiledExpression
  /** The features it declares or its expression reads: reported, with their values, with its hits. */
  reads: string[]
}

/** The schema on file of an object, or undefined for an unknown object. */
export type SchemaLookup = (object: string) => ObjectSchemaDoc | undefined

/** A rule set ready to evaluate: rules per object in evaluation order, features per object, thresholds. */
export class CompiledRuleSet {
  readonly version: number
  readonly #thresholds: Record<string, Thresholds>
  readonly #rules: Map<string, CompiledRule[]>
  readonly #features: Map<string, FeatureDefinition[]>

  constructor(
    version: number,
    thresholds: Record<string, Thresholds>,
    rules: CompiledRule[],
    features: FeatureDefinition[],
    featureObjects: Map<string, string[]>,
  ) {
    this.version = version
    this.#thresholds = thresholds
    this.#rules = new Map()
    for (const rule of [...rules].sort((a, b) => a.order - b.order || a.id.localeCompare(b.id))) {
      if (!rule.enabled) continue
      this.#rules.set(rule.object, [...(this.#rules.get(rule.object) ?? []), rule])
    }
    const byName = new Map(features.map((f) => [f.name, f]))
    this.#features = new Map([...featureObjects].map(([object, names]) => [object, names.map((n) => byName.get(n) as FeatureDefinition)]))
  }

  /** Enabled rules of `object`, in order. */
  rulesFor(object: string): readonly CompiledRule[] {
    return this.#rules.get(object) ?? []
  }

  /** Features computed for records of `object`: those its rules declare. */
  featuresFor(object: string): readonly FeatureDefinition[] {
    return this.#features.get(object) ?? []
  }

  /** Every feature of the set, once each. */
  allFeatures(): FeatureDefinition[] {
    const seen = new Map<string, FeatureDefinition>()
    for (const list of this.#features.values()) for (const f of list) seen.set(f.name, f)
    return [...seen.values()]
  }

  thresholdsFor(object: string): Thresholds {
    return this.#thresholds[object] ?? DEFAULT_THRESHOLDS
  }
}

type Rule = RuleDefinition & { version?: number }

/**
 * Compiles a rule set. With `schemaOf`, checks everything a save must (objects, fields, features, expressions
 * type-checked against the schemas) and returns every problem as a JSON pointer into the document; without,
 * it only compiles (rules already on file).
 */
function compile(
  version: number,
  doc: { thresholds: Record<string, Thresholds>; rules: Rule[] },
  check?: { schemaOf: SchemaLookup; maxWindowMs: number },
): { ok: true; ruleSet: CompiledRuleSet } | { ok: false; errors: FieldError[] } {
  const errors: FieldError[] = []
  const seenIds = new Map<string, number>()
  const features = new Map<string, { def: FeatureDefinition; json: string; at: string }>()
  const featureObjects = new Map<string, string[]>()
  doc.rules.forEach((rule, i) => {
    const at = `/rules/${i}`
    const first = seenIds.get(rule.id)
    if (first !== undefined) errors.push({ pointer: `${at}/id`, message: `rule id ${rule.id} is also the id of rule ${first}` })
    seenIds.set(rule.id, i)
    const ruleSchema = check?.schemaOf(rule.object)
    if (check && !ruleSchema) errors.push({ pointer: `${at}/object`, message: `there is no object type ${rule.object}` })
    for (const [name, spec] of Object.entries(rule.features)) {
      const def: FeatureDefinition = { ...spec, name, object: spec.object ?? rule.object, windowMs: windowMs(spec.window) }
      const json = JSON.stringify({ ...spec, object: def.object })
      const known = features.get(name)
      if (known && known.json !== json) {
        errors.push({ pointer: `${at}/features/${name}`, message: `feature ${name} is declared differently at ${known.at}; one name, one definition` })
      } else if (!known) features.set(name, { def, json, at: `${at}/features/${name}` })
      const names = featureObjects.get(rule.object) ?? []
      if (!names.includes(name)) featureObjects.set(rule.object, [...names, name])
      if (check && ruleSchema) errors.push(...featureErrors(def, ruleSchema, check, `${at}/features/${name}`))
    }
  })
  if (check) {
    for (const [object, t] of Object.entries(doc.thresholds)) {
      if (t.review > t.block) errors.push({ pointer: `/thresholds/${object}`, message: `review (${t.review}) must not be above block (${t.block})` })
    }
  }
  const compiled: CompiledRule[] = []
  doc.rules.forEach((rule, i) => {
    const ruleSchema = check?.schemaOf(rule.object)
    if (check && !ruleSchema) return
    const scope: ExpressionScope | undefined = ruleSchema && {
      record: ruleSchema,
      account: check?.schemaOf(ACCOUNT_OBJECT),
      features: featureObjects.get(rule.object) ?? [],
    }
    const result = compileExpression(rule.when, scope)
    if (!result.ok) {
      const { message, line, column } = result.problem
      errors.push({ pointer: `/rules/${i}/when`, message: `line ${line}, column ${column}: ${message}`, received: rule.when })
      return
    }
    const { features: declared, when: _when, description: _description, ...definition } = rule
    const reads = [...new Set([...Object.keys(declared), ...result.features])]
    compiled.push({ ...definition, version: rule.version ?? 0, evaluate: result.evaluate, reads })
  })
  if (errors.length > 0) return { ok: false, errors }
  const defs = [...features.values()].map((f) => f.def)
  return { ok: true, ruleSet: new CompiledRuleSet(version, doc.thresholds, compiled, defs, featureObjects) }
}

function featureErrors(f: FeatureDefinition, ruleSchema: ObjectSchemaDoc, check: { schemaOf: SchemaLookup; maxWindowMs: number }, at: string): FieldError[] {
  const errors: FieldError[] = []
  const source = check.schemaOf(f.object)
  if (!source) return [{ pointer: `${at}/object`, message: `there is no object type ${f.object}` }]
  if (!(f.group_by in source.fields)) errors.push({ pointer: `${at}/group_by`, message: `${f.object} has no field ${f.group_by}` })
  if (!(f.group_by in ruleSchema.fields)) errors.push({ pointer: `${at}/group_by`, message: `${ruleSchema.object} has no field ${f.group_by} to group by` })
  if (f.field !== undefined && !(f.field in source.fields)) errors.push({ pointer: `${at}/field`, message: `${f.object} has no field ${f.field}` })
  if (f.field === undefined && f.aggregate !== 'count') errors.push({ pointer: `${at}/field`, message: `${f.aggregate} needs a field` })
  if (f.windowMs > check.maxWindowMs) {
    errors.push({
      pointer: `${at}/window`,
      message: `window ${f.window} is longer than the record stream keeps records (${check.maxWindowMs / 86_400_000} days)`,
    })
  }
  return errors
}

/**
 * Checks a rule set document as PUT /rules and `sluice rules apply` receive it: its shape, then everything
 * `compile` checks. Returns the document with defaults filled, or every problem found.
 */
export function validateRuleSet(
  input: unknown,
  schemaOf: SchemaLookup,
  maxWindowMs: number,
): { ok: true; doc: RuleSetDoc; ruleSet: CompiledRuleSet } | { ok: false; errors: FieldError[] } {
  const doc = withRuleDefaults(input)
  const shapeErrors = [...Value.Errors(RuleSetDocSchema, doc)].map((e) => ({ pointer: e.path, message: e.message }))
  if (shapeErrors.length > 0) return { ok: false, errors: shapeErrors }
  const result = compile(0, doc as RuleSetDoc, { schemaOf, maxWindowMs })
  return result.ok ? { ok: true, doc: doc as RuleSetDoc, ruleSet: result.ruleSet } : result
}

/** The rule set on file, compiled. It was checked when saved, so a failure here is a bug, not a user's mistake. */
export function compileStoredRuleSet(stored: RuleSetVersion): CompiledRuleSet {
  const result = compile(stored.version, stored)
  if (!result.ok)
    throw new Error(`the rule set on file (version ${stored.version}) does not compile: ${result.errors.map((e) => `${e.pointer} ${e.message}`).join('; ')}`)
  return result.ruleSet
}

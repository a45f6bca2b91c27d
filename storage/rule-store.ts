import { type Static, Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { FIELD_NAME_PATTERN } from './object-schema.ts'
import { recordAudit, type StateDb } from './state-db.ts'

/** A rule id is one NATS subject token (`alerts.<object>.<rule_id>`): no dots, spaces or wildcards. */
export const RULE_ID_PATTERN = '^[a-z0-9][a-z0-9_-]{0,63}$'
/** A sliding window: a count and a unit, `90s`, `10m`, `24h`, `30d`. */
export const WINDOW_PATTERN = '^[1-9][0-9]{0,5}(s|m|h|d)$'
export const SEVERITIES = ['low', 'medium', 'high', 'critical'] as const
export const FEATURE_AGGREGATES = ['count', 'sum', 'avg', 'min', 'max', 'distinct_count'] as const

const literals = <T extends string>(values: readonly T[], opts: object = {}) =>
  Type.Union(
    values.map((v) => Type.Literal(v)),
    opts,
  )

/** A velocity feature: an aggregate of one field over a sliding window of records grouped by a key. */
export const FeatureSpecSchema = Type.Object(
  {
    aggregate: literals(FEATURE_AGGREGATES),
    /** The field aggregated; count without a field counts records. */
    field: Type.Optional(Type.String({ pattern: FIELD_NAME_PATTERN })),
    window: Type.String({ pattern: WINDOW_PATTERN }),
    /** The grouping key: a field of both the aggregated records and the evaluated record (account_id, device_id, ...). */
    group_by: Type.String({ pattern: FIELD_NAME_PATTERN }),
    /** The object whose records are aggregated. Default: the rule's object. */
    object: Type.Optional(Type.String({ pattern: FIELD_NAME_PATTERN })),
    /** Leave the evaluated record itself out of the window (an average it should be compared with). Default false. */
    exclude_current: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
)
export type FeatureSpec = Static<typeof FeatureSpecSchema>

export const RuleDefinitionSchema = Type.Object(
  {
    id: Type.String({ pattern: RULE_ID_PATTERN }),
    name: Type.String({ minLength: 1, maxLength: 200 }),
    description: Type.Optional(Type.String({ maxLength: 2000 })),
    object: Type.String({ pattern: FIELD_NAME_PATTERN }),
    /** Rules of one object are evaluated in this order (then by id). */
    order: Type.Integer(),
    /** A CEL expression over record, account, activity and features; the rule matches when it is true. */
    when: Type.String({ minLength: 1, maxLength: 10_000 }),
    /** Added to the record's total score when a live rule matches. */
    score: Type.Number({ default: 0 }),
    severity: literals(SEVERITIES, { default: 'medium' }),
    tags: Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { default: [], maxItems: 32 }),
    /** A match ends evaluation of this record (allow-lists). */
    stop: Type.Boolean({ default: false }),
    /** `shadow`: hits are recorded but add no score and raise no alert. */
    mode: literals(['live', 'shadow'] as const, { default: 'live' }),
    enabled: Type.Boolean({ default: true }),
    /** Velocity features this rule declares, by name; expressions read them as `features.<name>`. */
    features: Type.Record(Type.String({ pattern: FIELD_NAME_PATTERN }), FeatureSpecSchema, { default: {} }),
  },
  { additionalProperties: false },
)
export type RuleDefinition = Static<typeof RuleDefinitionSchema>

/** Total score to decision: `block` at or above `block`, `review` at or above `review`, else `approve`. */
export const ThresholdsSchema = Type.Object({ review: Type.Number(), block: Type.Number() }, { additionalProperties: false })
export type Thresholds = Static<typeof ThresholdsSchema>
export const DEFAULT_THRESHOLDS: Thresholds = Object.freeze({ review: 50, block: 100 })

/** What PUT /rules and `sluice rules apply` take: the whole rule set, and thresholds per object. */
export const RuleSetDocSchema = Type.Object(
  {
    thresholds: Type.Record(Type.String({ pattern: FIELD_NAME_PATTERN }), ThresholdsSchema, { default: {} }),
    rules: Type.Array(RuleDefinitionSchema, { maxItems: 1000 }),
  },
  { additionalProperties: false },
)
export type RuleSetDoc = Static<typeof RuleSetDocSchema>

/** What GET /rules adds to a rule set document; a document read that way may be saved back as it is. */
const RULE_SET_METADATA = ['version', 'created_at', 'created_by', 'changes'] as const
const RULE_METADATA = ['version', 'updated_at', 'updated_by'] as const

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value)

/**
 * A copy of the document without what GET /rules adds (versions, who and when) and with its defaults filled,
 * so rules compare equal whether or not a default was spelt out.
 */
export function withRuleDefaults(doc: unknown): unknown {
  const copy = Value.Clone(doc)
  if (isObject(copy)) {
    for (const key of RULE_SET_METADATA) delete copy[key]
    if (Array.isArray(copy.rules)) for (const rule of copy.rules) if (isObject(rule)) for (const key of RULE_METADATA) delete rule[key]
  }
  return Value.Default(RuleSetDocSchema, copy)
}

/** One rule as stored: its definition, and which version of it this is, made when and by whom. */
export interface StoredRule extends RuleDefinition {
  version: number
  updated_at: string
  updated_by: string
}

export interface RuleSetVersion {
  /** 0 before any rule set was saved. */
  version: number
  created_at: string | null
  created_by: string | null
  thresholds: Record<string, Thresholds>
  /** The live rule set's rules, by object then order. */
  rules: StoredRule[]
}

export interface RuleChange {
  rule_id: string
  change: 'added' | 'changed' | 'removed'
  /** The rule's new version. */
  version: number
}

interface RuleRow {
  rule_id: string
  version: number
  removed: number
  name: string
  description: string | null
  object: string
  ord: number
  when_expr: string
  score: number
  severity: RuleDefinition['severity']
  tags_json: string
  stop: number
  mode: RuleDefinition['mode']
  enabled: number
  features_json: string
  created_at: string
  created_by: string
}

function toRule(row: RuleRow): StoredRule {
  return {
    id: row.rule_id,
    name: row.name,
    ...(row.description !== null && { description: row.description }),
    object: row.object,
    order: row.ord,
    when: row.when_expr,
    score: row.score,
    severity: row.severity,
    tags: JSON.parse(row.tags_json),
    stop: row.stop === 1,
    mode: row.mode,
    enabled: row.enabled === 1,
    features: JSON.parse(row.features_json),
    version: row.version,
    updated_at: row.created_at,
    updated_by: row.created_by,
  }
}

/** Whether two rules have the same definition (versions and key order aside). */
function sameDefinition(a: RuleDefinition, b: RuleDefinition): boolean {
  const definition = ({ id, name, description, object, order, when, score, severity, tags, stop, mode, enabled, features }: RuleDefinition) => ({
    id,
    name,
    description,
    object,
    order,
    when,
    score,
    severity,
    tags,
    stop,
    mode,
    enabled,
    features,
  })
  return Value.Equal(definition(a), definition(b))
}

const RULE_COLUMNS = `rv.*, rs.created_at, rs.created_by FROM rule_versions rv JOIN rule_sets rs ON rs.version = rv.rule_set_version`

/**
 * Every version of every rule, in SQLite. Saving a rule set makes a new rule set version when anything
 * changed: a new version of each added, changed or removed rule, and the thresholds. Expressions are checked
 * by the caller (rules/), which knows CEL; this store only keeps what it is given, in one transaction.
 */
export class RuleStore {
  readonly #db: StateDb

  constructor(db: StateDb) {
    this.#db = db
  }

  /** The live rule set's version: cheap, for noticing another process's change. */
  currentVersion(): number {
    return (this.#db.prepare('SELECT coalesce(max(version), 0) AS v FROM rule_sets').get() as { v: number }).v
  }

  current(): RuleSetVersion {
    const set = this.#db.prepare('SELECT * FROM rule_sets ORDER BY version DESC LIMIT 1').get() as
      | { version: number; created_at: string; created_by: string; thresholds_json: string }
      | undefined
    if (!set) return { version: 0, created_at: null, created_by: null, thresholds: {}, rules: [] }
    const rows = this.#db
      .prepare(
        `SELECT ${RULE_COLUMNS}
         WHERE rv.version = (SELECT max(version) FROM rule_versions latest WHERE latest.rule_id = rv.rule_id) AND rv.removed = 0
         ORDER BY rv.object, rv.ord, rv.rule_id`,
      )
      .all() as RuleRow[]
    return {
      version: set.version,
      created_at: set.created_at,
      created_by: set.created_by,
      thresholds: JSON.parse(set.thresholds_json),
      rules: rows.map(toRule),
    }
  }

  /** Every version of one rule, oldest first; a version that removed the rule is marked `removed`. */
  history(ruleId: string): (StoredRule & { removed: boolean })[] {
    const rows = this.#db.prepare(`SELECT ${RULE_COLUMNS} WHERE rv.rule_id = ? ORDER BY rv.version`).all(ruleId) as RuleRow[]
    return rows.map((row) => ({ ...toRule(row), removed: row.removed === 1 }))
  }

  /**
   * Makes `doc` (validated, defaults filled) the live rule set, inside a write transaction. With
   * `expectedVersion`, only when the live version still is that one (0: only when none was ever saved);
   * `applied` says whether it was. No change at all makes no new version.
   */
  apply(
    doc: RuleSetDoc,
    meta: { created_by: string; reason: 'default' | 'manual'; expectedVersion?: number },
  ): { ruleSet: RuleSetVersion; changes: RuleChange[]; applied: boolean } {
    const result = this.#db
      .transaction(() => {
        const before = this.current()
        if (meta.expectedVersion !== undefined && before.version !== meta.expectedVersion) return { changes: [], applied: false }
        const previous = new Map(before.rules.map((r) => [r.id, r]))
        const latestVersion = this.#db.prepare('SELECT coalesce(max(version), 0) AS v FROM rule_versions WHERE rule_id = ?')
        const changes: RuleChange[] = []
        const writes: { rule: RuleDefinition; removed: boolean; version: number }[] = []
        for (const rule of doc.rules) {
          const old = previous.get(rule.id)
          if (old && sameDefinition(old, rule)) continue
          const version = (latestVersion.get(rule.id) as { v: number }).v + 1
          changes.push({ rule_id: rule.id, change: old ? 'changed' : 'added', version })
          writes.push({ rule, removed: false, version })
        }
        const kept = new Set(doc.rules.map((r) => r.id))
        for (const old of before.rules) {
          if (kept.has(old.id)) continue
          changes.push({ rule_id: old.id, change: 'removed', version: old.version + 1 })
          writes.push({ rule: old, removed: true, version: old.version + 1 })
        }
        const thresholdsChanged = !Value.Equal(before.thresholds, doc.thresholds)
        if (changes.length === 0 && !thresholdsChanged && before.version > 0) return { changes, applied: true }
        const version = before.version + 1
        const now = new Date().toISOString()
        this.#db
          .prepare('INSERT INTO rule_sets (version, created_at, created_by, reason, thresholds_json) VALUES (?, ?, ?, ?, ?)')
          .run(version, now, meta.created_by, meta.reason, JSON.stringify(doc.thresholds))
        const insert = this.#db.prepare(
          `INSERT INTO rule_versions (rule_id, version, rule_set_version, removed, name, description, object, ord, when_expr, score, severity, tags_json, stop, mode, enabled, features_json)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        for (const { rule, removed, version: ruleVersion } of writes) {
          insert.run(
            rule.id,
            ruleVersion,
            version,
            removed ? 1 : 0,
            rule.name,
            rule.description ?? null,
            rule.object,
            rule.order,
            rule.when,
            rule.score,
            rule.severity,
            JSON.stringify(rule.tags),
            rule.stop ? 1 : 0,
            rule.mode,
            rule.enabled ? 1 : 0,
            JSON.stringify(rule.features),
          )
        }
        recordAudit(this.#db, { actor: meta.created_by, action: 'rules.new_version', target: `rule_set:${version}`, detail: { reason: meta.reason, changes } })
        return { changes, applied: true }
      })
      .immediate()
    return { ruleSet: this.current(), ...result }
  }
}

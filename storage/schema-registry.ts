import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { diffSchemas, type ObjectSchemaDoc, type SchemaVersion, schemaDocErrors } from './object-schema.ts'
import { recordAudit, type StateDb } from './state-db.ts'

interface SchemaRow {
  object: string
  version: number
  schema_json: string
  created_at: string
  created_by: string
  reason: SchemaVersion['reason']
  trigger_record_id: string | null
  diff_json: string
}

function toVersion(row: SchemaRow): SchemaVersion {
  const { schema_json, diff_json, ...rest } = row
  return { ...rest, schema: JSON.parse(schema_json), diff: JSON.parse(diff_json) }
}

export interface SchemaChangeMeta {
  created_by: string
  reason: SchemaVersion['reason']
  trigger_record_id?: string
}

/** Every version of every object's schema, in SQLite. The current version is the highest number. */
export class SchemaRegistry {
  readonly #db: StateDb
  readonly #current = new Map<string, SchemaVersion>()

  constructor(db: StateDb) {
    this.#db = db
  }

  #latest(object: string): SchemaVersion | undefined {
    const row = this.#db.prepare('SELECT * FROM schema_versions WHERE object = ? ORDER BY version DESC LIMIT 1').get(object) as SchemaRow | undefined
    return row && toVersion(row)
  }

  /** The current schema of `object` (cached until forget()), or undefined when no such object type exists. */
  current(object: string): SchemaVersion | undefined {
    const cached = this.#current.get(object)
    if (cached) return cached
    const version = this.#latest(object)
    if (version) this.#current.set(object, version)
    return version
  }

  /** Re-reads the current version, for when another process may have changed it. */
  refresh(object: string): SchemaVersion | undefined {
    this.#current.delete(object)
    return this.current(object)
  }

  version(object: string, version: number): SchemaVersion | undefined {
    const row = this.#db.prepare('SELECT * FROM schema_versions WHERE object = ? AND version = ?').get(object, version) as SchemaRow | undefined
    return row && toVersion(row)
  }

  versions(object: string): SchemaVersion[] {
    return (this.#db.prepare('SELECT * FROM schema_versions WHERE object = ? ORDER BY version').all(object) as SchemaRow[]).map(toVersion)
  }

  objects(): string[] {
    return (this.#db.prepare('SELECT DISTINCT object FROM schema_versions ORDER BY object').all() as { object: string }[]).map((r) => r.object)
  }

  /**
   * Runs `compute` on the latest stored version inside a write transaction (BEGIN IMMEDIATE), so concurrent
   * writers, in this process or another one sharing the file, take turns and each sees the last one's result.
   * `compute` returns the next schema, or undefined for no change; a schema equal to the current one is no change.
   */
  update(
    object: string,
    compute: (current: SchemaVersion | undefined) => ObjectSchemaDoc | undefined,
    meta: SchemaChangeMeta,
  ): { version: SchemaVersion; created: boolean } {
    const result = this.#db
      .transaction(() => {
        const current = this.#latest(object)
        const next = compute(current)
        if (!next) return current && { version: current, created: false }
        const problems = schemaDocErrors(next)
        if (problems.length > 0) throw new Error(`invalid schema for ${object}: ${problems.map((p) => `${p.pointer} ${p.message}`).join('; ')}`)
        const diff = diffSchemas(current?.schema, next)
        if (current && diff.length === 0) return { version: current, created: false }
        const row: SchemaRow = {
          object,
          version: (current?.version ?? 0) + 1,
          schema_json: JSON.stringify(next),
          created_at: new Date().toISOString(),
          created_by: meta.created_by,
          reason: meta.reason,
          trigger_record_id: meta.trigger_record_id ?? null,
          diff_json: JSON.stringify(diff),
        }
        this.#db
          .prepare(
            `INSERT INTO schema_versions (object, version, schema_json, created_at, created_by, reason, trigger_record_id, diff_json)
             VALUES (@object, @version, @schema_json, @created_at, @created_by, @reason, @trigger_record_id, @diff_json)`,
          )
          .run(row)
        recordAudit(this.#db, {
          actor: meta.created_by,
          action: 'schema.new_version',
          target: object,
          detail: { version: row.version, reason: meta.reason, trigger_record_id: row.trigger_record_id, diff },
        })
        return { version: toVersion(row), created: true }
      })
      .immediate()
    if (!result) throw new Error(`no schema for ${object}`)
    this.#current.set(object, result.version)
    return result
  }

  /** Loads each `*.json` schema in `dir` whose object has no version yet (first start). */
  loadDefaults(dir: string): SchemaVersion[] {
    const added: SchemaVersion[] = []
    for (const file of readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .sort()) {
      const schema = JSON.parse(readFileSync(join(dir, file), 'utf8')) as ObjectSchemaDoc
      const { version, created } = this.update(schema.object, (current) => (current ? undefined : schema), { created_by: 'system', reason: 'default' })
      if (created) added.push(version)
    }
    return added
  }
}

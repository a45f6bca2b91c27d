import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Value } from '@sinclair/typebox/value'
import { type ObjectSchemaDoc, ObjectSchemaDocSchema, type SchemaVersion } from './object-schema.ts'
import { recordAudit, type StateDb } from './state-db.ts'

interface SchemaRow {
  object: string
  version: number
  schema_json: string
  created_at: string
  created_by: string
  reason: SchemaVersion['reason']
}

function toVersion(row: SchemaRow): SchemaVersion {
  return { ...row, schema: JSON.parse(row.schema_json) as ObjectSchemaDoc, schema_json: undefined } as unknown as SchemaVersion
}

/** Every version of every object's schema, in SQLite. The current version is the highest number. */
export class SchemaRegistry {
  readonly #db: StateDb
  readonly #current = new Map<string, SchemaVersion>()

  constructor(db: StateDb) {
    this.#db = db
  }

  /** The current schema of `object`, or undefined when no such object type exists. */
  current(object: string): SchemaVersion | undefined {
    const cached = this.#current.get(object)
    if (cached) return cached
    const row = this.#db.prepare('SELECT * FROM schema_versions WHERE object = ? ORDER BY version DESC LIMIT 1').get(object) as SchemaRow | undefined
    if (!row) return undefined
    const version = toVersion(row)
    this.#current.set(object, version)
    return version
  }

  version(object: string, version: number): SchemaVersion | undefined {
    const row = this.#db.prepare('SELECT * FROM schema_versions WHERE object = ? AND version = ?').get(object, version) as SchemaRow | undefined
    return row && toVersion(row)
  }

  objects(): string[] {
    return (this.#db.prepare('SELECT DISTINCT object FROM schema_versions ORDER BY object').all() as { object: string }[]).map((r) => r.object)
  }

  /** Drops cached current versions so the next read sees what another process wrote. */
  forget(object?: string): void {
    if (object) this.#current.delete(object)
    else this.#current.clear()
  }

  /** Stores `schema` as the next version of its object. */
  add(schema: ObjectSchemaDoc, meta: { created_by: string; reason: SchemaVersion['reason'] }): SchemaVersion {
    const errors = [...Value.Errors(ObjectSchemaDocSchema, schema)]
    if (errors.length > 0) throw new Error(`invalid schema for ${schema.object}: ${errors.map((e) => `${e.path} ${e.message}`).join('; ')}`)
    const stored = this.#db.transaction(() => {
      const last = this.#db.prepare('SELECT MAX(version) AS v FROM schema_versions WHERE object = ?').get(schema.object) as { v: number | null }
      const row: SchemaRow = {
        object: schema.object,
        version: (last.v ?? 0) + 1,
        schema_json: JSON.stringify(schema),
        created_at: new Date().toISOString(),
        created_by: meta.created_by,
        reason: meta.reason,
      }
      this.#db
        .prepare(
          'INSERT INTO schema_versions (object, version, schema_json, created_at, created_by, reason) VALUES (@object, @version, @schema_json, @created_at, @created_by, @reason)',
        )
        .run(row)
      recordAudit(this.#db, {
        actor: meta.created_by,
        action: 'schema.create_version',
        target: schema.object,
        detail: { version: row.version, reason: meta.reason },
      })
      return toVersion(row)
    })()
    this.#current.set(schema.object, stored)
    return stored
  }

  /** Loads each `*.json` schema in `dir` whose object has no version yet (first start). */
  loadDefaults(dir: string): SchemaVersion[] {
    const added: SchemaVersion[] = []
    for (const file of readdirSync(dir)
      .filter((f) => f.endsWith('.json'))
      .sort()) {
      const schema = JSON.parse(readFileSync(join(dir, file), 'utf8')) as ObjectSchemaDoc
      if (!this.current(schema.object)) added.push(this.add(schema, { created_by: 'system', reason: 'default' }))
    }
    return added
  }
}

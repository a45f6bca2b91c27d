import { mkdirSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Database from 'better-sqlite3'

export type StateDb = Database.Database

const MIGRATIONS_DIR = fileURLToPath(new URL('./migrations', import.meta.url))

/**
 * Applies the SQL files in storage/migrations in name order, each once, in its own transaction. Named files
 * (rather than a numbered list in code) let each part of Sluice bring its own tables without touching the others.
 */
function migrate(db: Database.Database): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)')
  const applied = new Set((db.prepare('SELECT name FROM schema_migrations').all() as { name: string }[]).map((r) => r.name))
  for (const name of readdirSync(MIGRATIONS_DIR)
    .filter((f) => f.endsWith('.sql'))
    .sort()) {
    if (applied.has(name)) continue
    const sql = readFileSync(join(MIGRATIONS_DIR, name), 'utf8')
    db.transaction(() => {
      db.exec(sql)
      db.prepare('INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)').run(name, new Date().toISOString())
    })()
  }
}

/**
 * Opens (creating and migrating) the SQLite file holding schemas, keys, jobs, rules and the audit log.
 * WAL mode lets several Sluice processes on one host share it.
 */
export function openStateDb(path: string): StateDb {
  mkdirSync(dirname(path), { recursive: true })
  const db = new Database(path)
  db.pragma('journal_mode = WAL')
  db.pragma('busy_timeout = 5000')
  db.pragma('foreign_keys = ON')
  migrate(db)
  return db
}

/** Appends to the audit log: who did what to which thing. */
export function recordAudit(db: StateDb, entry: { actor: string; action: string; target?: string; detail?: unknown }): void {
  db.prepare('INSERT INTO audit_log (at, actor, action, target, detail_json) VALUES (?, ?, ?, ?, ?)').run(
    new Date().toISOString(),
    entry.actor,
    entry.action,
    entry.target ?? null,
    entry.detail === undefined ? null : JSON.stringify(entry.detail),
  )
}

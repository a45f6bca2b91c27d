import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import Database from 'better-sqlite3'

export type StateDb = Database.Database

/** Schema migrations of the state database, applied in order; PRAGMA user_version counts how many ran. */
const MIGRATIONS: string[] = [
  `CREATE TABLE schema_versions (
     object TEXT NOT NULL,
     version INTEGER NOT NULL,
     schema_json TEXT NOT NULL,
     created_at TEXT NOT NULL,
     created_by TEXT NOT NULL,
     reason TEXT NOT NULL,
     trigger_record_id TEXT,
     diff_json TEXT NOT NULL,
     PRIMARY KEY (object, version)
   );
   CREATE TABLE api_keys (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     key_hash TEXT NOT NULL UNIQUE,
     scopes TEXT NOT NULL,
     created_at TEXT NOT NULL,
     revoked_at TEXT,
     last_used_at TEXT
   );
   CREATE TABLE audit_log (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     at TEXT NOT NULL,
     actor TEXT NOT NULL,
     action TEXT NOT NULL,
     target TEXT,
     detail_json TEXT
   );`,
]

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
  const applied = db.pragma('user_version', { simple: true }) as number
  for (let i = applied; i < MIGRATIONS.length; i++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[i])
      db.pragma(`user_version = ${i + 1}`)
    })()
  }
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
